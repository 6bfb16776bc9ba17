"""The shapes, train and evaluate commands end to end, and the CLI's error handling."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from mask2former import Mask2FormerForUniversalSegmentation, Mask2FormerImageProcessor
from mask2former.cli import main
from mask2former.data import CocoInstancesDataset, CocoPanopticDataset
from mask2former.data.shapes import SHAPES_CATEGORIES

from .test_predictor import make_model_dir
from .test_training import tiny_config

# The classes of the shapes data: evaluate refuses a model of other classes.
SHAPES_LABELS = {i: c["name"] for i, c in enumerate(SHAPES_CATEGORIES)}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    config = tiny_config()
    config.id2label = dict(SHAPES_LABELS)
    config.label2id = {v: k for k, v in SHAPES_LABELS.items()}
    Mask2FormerForUniversalSegmentation(config).save_pretrained(folder)
    Mask2FormerImageProcessor(size={"shortest_edge": 64, "longest_edge": 256}).save_pretrained(
        folder
    )
    return folder


def test_shapes_writes_every_format(tmp_path, capsys):
    assert (
        main(["shapes", "--out", str(tmp_path), "--num", "3", "--seed", "4", "--size", "64"]) == 0
    )
    assert "wrote 3 shapes images" in capsys.readouterr().out
    pan = CocoPanopticDataset(
        tmp_path / "images", tmp_path / "panoptic", tmp_path / "panoptic.json"
    )
    assert len(pan) == 3 and pan[0]["image"].shape == (64, 64, 3)
    assert len(CocoInstancesDataset(tmp_path / "images", tmp_path / "instances.json")) == 3
    assert len(list((tmp_path / "semantic").glob("*.png"))) == 3


def test_evaluate_on_a_folder_writes_json_and_predictions(tmp_path, model_dir, capsys):
    data = tmp_path / "data"
    main(["shapes", "--out", str(data), "--num", "2", "--size", "64"])
    out_json = tmp_path / "results.json"
    preds = tmp_path / "preds"
    code = main(
        ["evaluate", "--model", str(model_dir), "--data", str(data), "--json", str(out_json),
         "--save-predictions", str(preds), "--batch-size", "2"]
    )  # fmt: skip
    assert code == 0
    results = json.loads(out_json.read_text())["results"]
    assert set(results) == {"panoptic", "instance", "semantic"}
    assert 0 <= results["panoptic"]["PQ"] <= 100 and 0 <= results["semantic"]["mIoU"] <= 100
    assert (preds / "panoptic.json").is_file() and len(
        list((preds / "semantic").glob("*.png"))
    ) == 2
    assert "PQ" in capsys.readouterr().out


def test_evaluate_generated_split(tmp_path, model_dir):
    code = main(
        ["evaluate", "--model", str(model_dir), "--data", "shapes", "--num", "2", "--task",
         "semantic", "--json", str(tmp_path / "r.json")]
    )  # fmt: skip
    assert code == 0
    summary = json.loads((tmp_path / "r.json").read_text())
    assert summary["seed"] == 12345 and list(summary["results"]) == ["semantic"]


def test_evaluate_rejects_no_detections(model_dir, capsys):
    code = main(["evaluate", "--model", str(model_dir), "--num", "2", "--detections", "0"])
    assert code != 0
    err = capsys.readouterr().err
    assert "argument --detections: must be at least 1" in err and "Traceback" not in err


def test_evaluate_uses_the_models_threshold_unless_given(tmp_path):
    def evaluate(model, *extra):
        out = tmp_path / "r.json"
        args = ["evaluate", "--model", str(model), "--data", "shapes", "--num", "2", "--task",
                "panoptic", "--json", str(out), "--overwrite", *extra]  # fmt: skip
        assert main(args) == 0
        summary = json.loads(out.read_text())
        return summary["panoptic_threshold"], summary["results"]["panoptic"]

    plain = make_model_dir(tmp_path / "plain", id2label=SHAPES_LABELS)  # it predicts segments
    assert evaluate(plain)[0] == 0.8  # the original's test setting
    own = make_model_dir(tmp_path / "own", object_mask_threshold=0.0, id2label=SHAPES_LABELS)
    assert evaluate(own) == evaluate(own, "--threshold", "0")
    assert evaluate(own)[0] == 0.0
    # It reached the evaluator: nothing scores above 1, so no segment is predicted there.
    assert evaluate(own)[1] != evaluate(own, "--threshold", "1")[1]
    assert evaluate(own, "--threshold", "0.6") == evaluate(plain, "--threshold", "0.6")


def test_train_then_resume_from_the_command_line(tmp_path, model_dir):
    config = tmp_path / "config.json"
    config.write_text(tiny_config().to_json_string())
    base = ["train", "--out", str(tmp_path / "run"), "--model-config", str(config),
            "--batch-size", "2", "--num-train", "6", "--image-size", "64", "--crop", "64",
            "--eval-images", "2", "--checkpoint-every", "1", "--no-progress"]  # fmt: skip
    assert main(base + ["--steps", "1"]) == 0
    assert main(base + ["--steps", "2", "--resume"]) == 0
    saved = json.loads((tmp_path / "run" / "final" / "config.json").read_text())
    assert saved["task"] == "panoptic" and saved["stuff_label_ids"] == [5, 6, 7]
    assert (tmp_path / "run" / "final" / "preprocessor_config.json").is_file()


def test_train_mask_loss_flag_is_used_and_saved(tmp_path, model_dir, monkeypatch):
    """--mask-loss dense reaches the criterion (the dense targets are built) and is written into
    the trained model's config.json, so fine-tuning it again keeps the setting."""
    from mask2former.loss import criterion

    calls = []
    original = criterion.dense_targets
    monkeypatch.setattr(
        criterion, "dense_targets", lambda *a: calls.append(1) or original(*a), raising=True
    )
    out = tmp_path / "run"
    args = ["train", "--init", str(model_dir), "--out", str(out), "--mask-loss", "dense",
            "--steps", "1", "--batch-size", "2", "--num-train", "4", "--image-size", "64",
            "--crop", "64", "--eval-images", "0", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    assert calls  # the dense path ran
    saved = json.loads((out / "final" / "config.json").read_text())
    assert saved["mask_loss_sampling"] == "dense"
    again = Mask2FormerForUniversalSegmentation.from_pretrained(out / "final")
    assert again.config.mask_loss_sampling == "dense"


def test_train_changes_the_decoder_depth_and_queries_of_its_init(tmp_path, model_dir, monkeypatch):
    """--decoder-layers and --num-queries reshape the --init model (its other weights kept),
    --matcher-class-cost and --num-points reach the criterion the training uses, and all are
    written into the trained model's config.json."""
    from mask2former.loss import criterion

    built = []
    original_init = criterion.Mask2FormerLoss.__init__

    def recording_init(self, config, *args, **kwargs):
        original_init(self, config, *args, **kwargs)
        built.append((self.num_points, self.matcher.cost_class))

    monkeypatch.setattr(criterion.Mask2FormerLoss, "__init__", recording_init)
    out = tmp_path / "run"
    args = ["train", "--init", str(model_dir), "--out", str(out), "--decoder-layers", "6",
            "--num-queries", "5", "--matcher-class-cost", "2.5", "--num-points", "123",
            "--steps", "1", "--batch-size", "2", "--num-train", "4", "--image-size", "64",
            "--crop", "64", "--eval-images", "0", "--no-progress"]  # fmt: skip
    with pytest.warns(UserWarning, match="re-initialised"):
        assert main(args) == 0
    assert built and built[0] == (123, 2.5)  # the criterion of the model that trained
    assert (
        123
        != Mask2FormerForUniversalSegmentation.from_pretrained(model_dir).config.train_num_points
    )
    saved = json.loads((out / "final" / "config.json").read_text())
    assert saved["decoder_layers"] == 6 and saved["num_queries"] == 5
    assert saved["matcher_class_cost"] == 2.5 and saved["train_num_points"] == 123
    trained = Mask2FormerForUniversalSegmentation.from_pretrained(out / "final")
    assert len(trained.model.transformer_module.decoder.layers) == 5
    assert trained.model.transformer_module.queries_features.weight.shape[0] == 5
    assert trained.criterion.matcher.cost_class == 2.5


def test_user_errors_are_one_line_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mask2former", "evaluate", "--model", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "nope" in lines[0]
