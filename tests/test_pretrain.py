"""Backbone pretraining by mask-pooled classification: pooling, the loop, the command."""

from __future__ import annotations

import json

import pytest
import torch

from mask2former import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, ResNetConfig
from mask2former.cli import main
from mask2former.data import LargeScaleJitter, ShapesConfig, ShapesDataset
from mask2former.training import TrainSamples
from mask2former.training.data import collate
from mask2former.training.pretrain import (
    MaskPooledClassifier,
    PretrainConfig,
    held_out_accuracy,
    mask_pooled_features,
    pretrain_backbone,
)

from .test_training import tiny_config


def tiny_resnet_config() -> Mask2FormerConfig:
    config = tiny_config()
    config.backbone_config = ResNetConfig(
        embedding_size=16,
        hidden_sizes=[16, 32, 64, 128],
        depths=[1, 1, 1, 1],
        layer_type="basic",
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    return config


def test_pooling_by_hand():
    # A 4x4 map of 0..15 and a 16x16 mask over the top-left 4x4 pixels: the mask covers cell
    # (0, 0), widened by one cell it covers (0, 0), (0, 1), (1, 0), (1, 1): (0 + 1 + 4 + 5) / 4.
    feature = torch.arange(16.0).view(1, 4, 4)
    masks = torch.zeros(2, 16, 16)
    masks[0, :4, :4] = 1
    masks[1] = 1  # everything: the mean of the map
    pooled = mask_pooled_features([feature, 2 * feature], masks)
    assert pooled.shape == (2, 2)
    torch.testing.assert_close(pooled[0], torch.tensor([2.5, 5.0]))
    torch.testing.assert_close(pooled[1], torch.tensor([7.5, 15.0]))
    # An empty mask pools nothing instead of dividing by zero.
    assert torch.equal(mask_pooled_features([feature], torch.zeros(1, 16, 16)), torch.zeros(1, 1))


def test_classifier_logits_follow_the_masks():
    torch.manual_seed(0)
    backbone = Mask2FormerForUniversalSegmentation(tiny_resnet_config()).model
    backbone = backbone.pixel_level_module.encoder
    model = MaskPooledClassifier(backbone, num_labels=8)
    masks = [torch.ones(3, 64, 64), torch.zeros(0, 64, 64), torch.ones(1, 64, 64)]
    assert model(torch.randn(3, 3, 64, 64), masks).shape == (4, 8)
    assert model(torch.randn(1, 3, 64, 64), [torch.zeros(0, 64, 64)]).shape == (0, 8)


def test_pretraining_learns_and_logs(tmp_path):
    torch.manual_seed(0)
    model = Mask2FormerForUniversalSegmentation(tiny_resnet_config())
    backbone = model.model.pixel_level_module.encoder
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    data = TrainSamples(
        ShapesDataset(16, seed=3, config=ShapesConfig(64, 64)), LargeScaleJitter(64, 1.0, 1.0)
    )
    held_out = [collate([data[(0, i)] for i in range(4)])]
    classifier = MaskPooledClassifier(backbone, num_labels=8)
    config = PretrainConfig(
        output_dir=str(tmp_path), steps=30, batch_size=4, log_every=10, eval_every=30,
        schedule="poly", progress=False,
    )  # fmt: skip
    last = pretrain_backbone(classifier, data, config, held_out, thing_labels=range(5))
    records = [json.loads(line) for line in (tmp_path / "pretrain_log.jsonl").open()]
    assert [r["step"] for r in records] == [10, 20, 30]
    # Polynomial decay (power 0.9) from 1e-3 towards zero; a record shows its last step's rate.
    expected = [1e-3 * (1 - (s - 1) / 30) ** 0.9 for s in (10, 20, 30)]
    assert [r["lr"] for r in records] == pytest.approx(expected)
    assert last == records[-1] and 0.0 <= last["thing_accuracy"] <= last["accuracy"] + 1
    assert records[-1]["loss"] < records[0]["loss"]  # 16 images: it fits them
    after = backbone.state_dict()
    assert not torch.equal(before["embedder.embedder.convolution.weight"],
                           after["embedder.embedder.convolution.weight"])  # fmt: skip
    # The backbone was trained in place: it is the Mask2Former's own.
    assert model.model.pixel_level_module.encoder is classifier.backbone


def test_batches_without_masks_are_skipped(tmp_path):
    class EmptyCrops:
        """Every crop missed every object: images with no masks."""

        def __len__(self):
            return 8

        def __getitem__(self, key):
            return {
                "pixel_values": torch.randn(3, 64, 64),
                "mask_labels": torch.zeros(0, 64, 64),
                "class_labels": torch.zeros(0, dtype=torch.long),
            }

    torch.manual_seed(0)
    backbone = Mask2FormerForUniversalSegmentation(
        tiny_resnet_config()
    ).model.pixel_level_module.encoder
    classifier = MaskPooledClassifier(backbone, num_labels=8)
    before = {k: v.detach().clone() for k, v in classifier.named_parameters()}
    config = PretrainConfig(
        output_dir=str(tmp_path), steps=4, batch_size=2, log_every=2, progress=False
    )
    last = pretrain_backbone(classifier, EmptyCrops(), config)
    assert last["step"] == 4 and last["loss"] is None
    assert all(torch.equal(before[k], p) for k, p in classifier.named_parameters())


def test_pretrain_command_then_train_init(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(tiny_resnet_config().to_json_string())
    pretrained = tmp_path / "pretrained"
    code = main(
        ["pretrain-backbone", "--out", str(pretrained), "--model-config", str(config),
         "--num-train", "6", "--image-size", "64", "--crop", "64", "--steps", "3",
         "--batch-size", "2", "--eval-images", "2", "--no-progress"]
    )  # fmt: skip
    assert code == 0
    saved = json.loads((pretrained / "config.json").read_text())
    assert saved["backbone_config"]["model_type"] == "resnet"
    assert saved["stuff_label_ids"] == [5, 6, 7]
    code = main(
        ["train", "--init", str(pretrained), "--out", str(tmp_path / "run"), "--steps", "1",
         "--batch-size", "2", "--num-train", "4", "--image-size", "64", "--crop", "64",
         "--eval-images", "0", "--no-progress"]
    )  # fmt: skip
    assert code == 0
    ours = Mask2FormerForUniversalSegmentation.from_pretrained(pretrained).state_dict()
    tuned = Mask2FormerForUniversalSegmentation.from_pretrained(tmp_path / "run" / "final")
    key = "model.pixel_level_module.encoder.embedder.embedder.convolution.weight"
    assert ours[key].shape == tuned.state_dict()[key].shape


def test_pretrain_command_is_reproducible(tmp_path):
    """The same command twice gives the same weights, cached or not (the built-in model's
    recipe relies on it: its two stages may be run, and timed, apart)."""
    config = tmp_path / "config.json"
    config.write_text(tiny_resnet_config().to_json_string())
    states = []
    for name, extra in (("a", []), ("b", ["--cache"])):
        code = main(
            ["pretrain-backbone", "--out", str(tmp_path / name), "--model-config", str(config),
             "--num-train", "6", "--image-size", "64", "--crop", "64", "--steps", "4",
             "--batch-size", "2", "--eval-images", "2", "--eval-every", "2", "--no-progress",
             *extra]
        )  # fmt: skip
        assert code == 0
        states.append(Mask2FormerForUniversalSegmentation.from_pretrained(tmp_path / name))
    a, b = (m.state_dict() for m in states)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_pretrain_command_rejects_unknown_preset(tmp_path, capsys):
    code = main(["pretrain-backbone", "--out", str(tmp_path), "--model-config", "nope"])
    err = capsys.readouterr().err
    assert code != 0 and "nope" in err and "Traceback" not in err


def test_held_out_accuracy_by_hand():
    # Fixed predictions 0, 1, 6, 7 for labels 0, 2, 6, 5: all 2/4, things (0-4) 1/2.
    class Fixed(torch.nn.Module):
        def forward(self, pixel_values, masks):
            return torch.nn.functional.one_hot(torch.tensor([0, 1, 6, 7]), 8).float()

    batch = {"pixel_values": None, "mask_labels": None, "class_labels": [torch.tensor([0, 2]),
             torch.tensor([6, 5])]}  # fmt: skip
    model = Fixed().train()
    assert held_out_accuracy(model, [batch], range(5)) == {"accuracy": 0.5, "thing_accuracy": 0.5}
    assert held_out_accuracy(model, [batch]) == {"accuracy": 0.5}
    assert model.training  # put back in the mode it was in
