"""The training recipe as library calls (no command line), the Trainer's objective interface,
the pretraining's sample order, and the argument groups the commands share."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from mask2former import Mask2FormerForUniversalSegmentation
from mask2former.commands.common import (
    add_loading_arguments,
    add_model_arguments,
    add_output_arguments,
    add_training_data_arguments,
)
from mask2former.data import ShapesConfig, ShapesDataset
from mask2former.processing.image_processor import Mask2FormerImageProcessor
from mask2former.training import (
    DataSettings,
    ModelSettings,
    RandomBatchSampler,
    StepLoss,
    TrainConfig,
    Trainer,
    TrainSamples,
    TrainSettings,
    train,
    training_samples,
)
from mask2former.training.checkpointing import latest_checkpoint, load_training_state

from .test_training import tiny_config


def test_train_from_python_writes_a_checkpoint_and_the_final_model(tmp_path, capsys):
    config = tmp_path / "tiny.json"
    config.write_text(tiny_config().to_json_string())
    out = tmp_path / "run"
    settings = TrainSettings(
        run=TrainConfig(output_dir=str(out), max_steps=2, batch_size=2, checkpoint_every=1,
                        log_every=1, progress=False),
        data=DataSettings(num_train=4, image_size=64, crop=64, eval_images=0),
        model=ModelSettings(model_config=str(config), num_queries=5),
    )  # fmt: skip
    result = train(settings)
    assert result.final == str(out / "final")
    records = [json.loads(line) for line in (out / "log.jsonl").open()]
    assert [r["step"] for r in records] == [1, 2] and result.last == records[-1]
    assert {"loss", "loss_mask", "loss_dice", "loss_cross_entropy", "grad_norm"} <= set(result.last)
    checkpoint = latest_checkpoint(str(out))
    assert checkpoint.endswith("step-0000002")
    state = load_training_state(checkpoint)
    assert state["step"] == 2 and state["settings"]["max_steps"] == 2
    saved = Mask2FormerForUniversalSegmentation.from_pretrained(checkpoint)
    final = Mask2FormerForUniversalSegmentation.from_pretrained(result.final)
    assert saved.config.num_queries == 5 and saved.config.task == "panoptic"
    for (name, a), b in zip(saved.state_dict().items(), final.state_dict().values()):
        assert torch.equal(a, b), name
    # The saved preprocessor normalises as the training samples were normalised.
    processor = json.loads((out / "final" / "preprocessor_config.json").read_text())
    assert processor["image_mean"] == [0.485, 0.456, 0.406]
    assert processor["image_std"] == [0.229, 0.224, 0.225]
    assert processor["size"] == {"shortest_edge": 64, "longest_edge": 256}
    assert capsys.readouterr().out == ""  # the command prints; the library call does not


def test_the_progress_bar_stays_off_redirected_output(tmp_path, capsys):
    """progress=True shows a bar on a terminal only: a log file or pipe gets clean lines."""
    config = tmp_path / "tiny.json"
    config.write_text(tiny_config().to_json_string())
    settings = TrainSettings(
        run=TrainConfig(output_dir=str(tmp_path / "run"), max_steps=2, batch_size=2,
                        log_every=1, progress=True),
        data=DataSettings(num_train=4, image_size=64, crop=64, eval_images=0),
        model=ModelSettings(model_config=str(config), num_queries=5),
    )  # fmt: skip
    train(settings)
    captured = capsys.readouterr()  # not a terminal
    assert "step/s" not in captured.err and "train:" not in captured.err


def test_training_samples_take_the_processors_normalisation():
    dataset = ShapesDataset(1, seed=0, config=ShapesConfig(64, 64))
    processor = Mask2FormerImageProcessor(image_mean=[0.5, 0.5, 0.5], image_std=[0.25] * 3)
    samples = training_samples(dataset, None, processor, seed=0)
    image = torch.from_numpy(dataset[0]["image"]).permute(2, 0, 1).float()
    expected = (image - 0.5 * 255) / (0.25 * 255)
    torch.testing.assert_close(samples[(0, 0)]["pixel_values"], expected)
    # The defaults are the processor's defaults.
    default = TrainSamples(dataset, None)
    plain = training_samples(dataset, None, Mask2FormerImageProcessor(), seed=0)
    assert torch.equal(default[(0, 0)]["pixel_values"], plain[(0, 0)]["pixel_values"])


def test_min_scale_above_max_scale_is_refused_after_the_folder_check(tmp_path):
    settings = TrainSettings(
        run=TrainConfig(output_dir=str(tmp_path / "r"), progress=False),
        data=DataSettings(min_scale=2.0, max_scale=1.0),
    )
    with pytest.raises(ValueError, match="--min-scale 2.0 is above --max-scale 1.0"):
        train(settings)
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("")
    settings.run.output_dir = str(tmp_path / "used")
    with pytest.raises(FileExistsError, match="is not empty"):
        train(settings)


class _Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(3))


class _MeanPixel:
    """A toy objective: the weight's product with each image's channel means; no loss for
    batches whose first image is odd-numbered (counted, without an update)."""

    def __init__(self):
        self.calls = 0

    def loss(self, model, batch):
        self.calls += 1
        if batch["pixel_values"][0, 0, 0, 0] > 0:
            return None
        means = batch["pixel_values"].mean((2, 3))  # (B, 3)
        return StepLoss((means @ model.weight).pow(2).mean(), {"probe": 1.0})


class _Items:
    def __len__(self):
        return 8

    def __getitem__(self, key):
        epoch, index = key
        value = 1.0 if index % 2 else -1.0
        return {
            "pixel_values": torch.full((3, 4, 4), value * (index + 1)),
            "mask_labels": torch.zeros(0, 4, 4),
            "class_labels": torch.zeros(0, dtype=torch.long),
        }


def test_the_trainer_minimises_any_objective(tmp_path):
    class NoCheckpoints(Trainer):
        writes_checkpoints = False

    objective = _MeanPixel()
    config = TrainConfig(output_dir=str(tmp_path), max_steps=6, batch_size=1, lr=0.1,
                         log_every=3, progress=False, clip_norm=0.0)  # fmt: skip
    trainer = NoCheckpoints(_Linear(), _Items(), config, objective=objective,
                            make_optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=0.1))  # fmt: skip
    last = trainer.fit()
    assert objective.calls == 6 and trainer.step == 6
    assert not torch.equal(trainer.model.weight, torch.ones(3))  # some batches had a loss
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").open()]
    assert [r["step"] for r in records] == [3, 6] and last == records[-1]
    assert all(r["probe"] == 1.0 for r in records if "probe" in r)
    assert not list(tmp_path.glob("step-*"))


def test_random_batches_are_the_pretraining_draws_and_resume():
    """Batch b holds the b-th draw of one generator seeded with the seed, with the epoch of
    the samples drawn before it; starting at a batch gives the same batches from there."""
    sampler = RandomBatchSampler(10, 4, seed=7)
    batches = iter(sampler)
    rng = np.random.default_rng(7)
    for b in range(6):
        expected = [(b * 4 // 10, int(i)) for i in rng.integers(10, size=4)]
        assert next(batches) == expected
    later = iter(RandomBatchSampler(10, 4, seed=7, start_batch=3))
    again = iter(RandomBatchSampler(10, 4, seed=7))
    for _ in range(3):
        next(again)
    assert [next(later) for _ in range(3)] == [next(again) for _ in range(3)]


def test_shared_argument_groups():
    parser = argparse.ArgumentParser()
    add_output_arguments(parser, out_help="o", overwrite_help="w", resume_help="r")
    add_training_data_arguments(parser, num_train=7, cache_help="c", scales=True)
    add_loading_arguments(parser, batch_size=3, workers=True)
    args = parser.parse_args(["--out", "x", "--resume", "--task", "semantic"])
    assert (args.out, args.resume, args.overwrite, args.task) == ("x", True, False, "semantic")
    assert (args.num_train, args.min_scale, args.max_scale) == (7, 0.1, 2.0)
    assert (args.batch_size, args.workers) == (3, 0)
    with pytest.raises(SystemExit):
        parser.parse_args(["--out", "x", "--resume", "--overwrite"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--out", "x", "--batch-size", "0"])

    viewer = argparse.ArgumentParser()
    add_model_arguments(viewer, dtype_default=None)
    add_output_arguments(viewer, out_help="o", overwrite_help="w", default="out")
    args = viewer.parse_args([])
    assert (args.model, args.device, args.dtype, args.out, args.overwrite) == (
        "shapes", "cpu", None, "out", False,
    )  # fmt: skip
    with pytest.raises(SystemExit):
        viewer.parse_args(["--dtype", "int8"])
