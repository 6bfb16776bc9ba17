"""TensorBoard event files: the same scalars as the JSON log, prediction pictures at each
evaluation, no duplicated steps after a resume, and training without TensorBoard."""

from __future__ import annotations

import builtins
import json

import pytest
import torch

# tensorboard is in the test extra: without it these tests fail rather than skip.
from tensorboard.backend.event_processing.event_accumulator import (  # noqa: E402
    EventAccumulator,
)

from mask2former import Mask2FormerForUniversalSegmentation
from mask2former.data import LargeScaleJitter, ShapesConfig, ShapesDataset
from mask2former.training import (
    DataSettings,
    ModelSettings,
    TrainConfig,
    TrainSamples,
    TrainSettings,
    train,
)
from mask2former.training import tensorboard as tb
from mask2former.training.data import collate
from mask2former.training.pretrain import MaskPooledClassifier, PretrainConfig, pretrain_backbone

from .test_pretrain import tiny_resnet_config
from .test_training import make_trainer, tiny_config

EVAL_TAGS = {
    "PQ": "eval/panoptic/PQ",
    "PQ_th": "eval/panoptic/PQ_th",
    "PQ_st": "eval/panoptic/PQ_st",
    "AP": "eval/instance/AP",
    "mIoU": "eval/semantic/mIoU",
}


def read_events(folder) -> EventAccumulator:
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def records(path):
    return [json.loads(line) for line in path.open()]


def expected_scalars(log, section="train", metric_keys=()):
    """{tag: {step: value}} of every number of the log's records (a later record of a step
    replaces an earlier one, as a resumed run's do)."""
    expected = {}
    for record in log:
        for key, value in record.items():
            if key == "step" or isinstance(value, (str, bool)) or value is None:
                continue
            if key.startswith("eval/"):
                tag = EVAL_TAGS[key[5:]]
            elif key in metric_keys:
                tag = f"eval/{key}"
            else:
                tag = f"{section}/{key}"
            expected.setdefault(tag, {})[record["step"]] = value
    return expected


def check_scalars(events, expected):
    for tag, values in expected.items():
        written = events.Scalars(tag)
        steps = [e.step for e in written]
        assert steps == sorted(set(steps)), f"{tag}: steps {steps} repeat"  # no duplicates
        assert steps == sorted(values), tag
        for event in written:
            assert event.value == pytest.approx(values[event.step], rel=1e-6), tag


def test_train_writes_the_log_and_pictures_as_events(tmp_path):
    config = tmp_path / "tiny.json"
    config.write_text(tiny_config().to_json_string())
    out = tmp_path / "run"
    settings = TrainSettings(
        run=TrainConfig(output_dir=str(out), max_steps=4, batch_size=2, checkpoint_every=4,
                        log_every=1, eval_every=2, progress=False),
        data=DataSettings(num_train=4, image_size=64, crop=64, eval_images=3),
        model=ModelSettings(model_config=str(config), num_queries=5),
    )  # fmt: skip
    train(settings)
    log = records(out / "log.jsonl")
    assert [r["step"] for r in log] == [1, 2, 2, 3, 4, 4]  # eval records at 2 and at the end
    # Final and auxiliary apart: the final terms and the auxiliary predictions' share add up
    # to the total (a mean of per-step values, so to rounding).
    step = log[0]
    parts = ("loss_mask", "loss_dice", "loss_cross_entropy", "loss_aux")
    assert sum(step[k] for k in parts) == pytest.approx(step["loss"], rel=1e-4)
    assert step["loss_aux"] > 0
    events = read_events(out / "tensorboard")
    expected = expected_scalars(log)
    assert set(EVAL_TAGS.values()) <= set(expected)
    assert "train/loss_aux" in expected
    check_scalars(events, expected)
    tags = set(events.Tags()["scalars"])
    # Images per second: the steps per second times the batch; a rate per parameter group.
    for speed, images in zip(
        events.Scalars("train/steps_per_s"), events.Scalars("train/images_per_s")
    ):
        assert images.value == pytest.approx(2 * speed.value, rel=1e-6)
    groups = sorted(t for t in tags if t.startswith("train/lr/group"))
    assert len(groups) >= 2 and events.Scalars(groups[0])[0].value == pytest.approx(log[0]["lr"])
    # Up to 4 pictures of the same validation images at each evaluation: steps 2 and 4.
    assert sorted(events.Tags()["images"]) == ["predictions/0", "predictions/1", "predictions/2"]
    pictures = events.Images("predictions/0")
    assert [p.step for p in pictures] == [2, 4]
    assert pictures[0].width == 64 and pictures[0].height == 64


def test_resume_writes_no_step_twice(tmp_path):
    first = make_trainer(tmp_path, max_steps=4)  # checkpoints every 2 steps
    first.fit(until=3)
    torch.manual_seed(1234)
    # From step 2: as if the first run was killed after writing step 3's records.
    second = make_trainer(tmp_path, max_steps=4)
    assert second.resume(str(tmp_path / "step-0000002")) and second.step == 2
    second.fit()
    log = records(tmp_path / "log.jsonl")
    assert [r["step"] for r in log] == [1, 2, 3, 3, 4]  # the JSON log keeps both
    events = read_events(tmp_path / "tensorboard")
    expected = expected_scalars(log)  # the resumed run's step 3
    check_scalars(events, expected)
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4]


def test_training_goes_on_without_tensorboard(tmp_path, monkeypatch, capsys):
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name == "tensorboard" or name.startswith(("tensorboard.", "torch.utils.tensorboard")):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    monkeypatch.setattr(tb, "_noted", False)
    for run in ("a", "b"):
        trainer = make_trainer(tmp_path / run, max_steps=2, checkpoint_every=0)
        assert trainer.fit()["step"] == 2
        assert [r["step"] for r in records(tmp_path / run / "log.jsonl")] == [1, 2]
        assert not (tmp_path / run / "tensorboard").exists()
    assert capsys.readouterr().err.count(tb.NOTE) == 1  # once per process, not per run


def test_pretrain_writes_its_records_as_events(tmp_path):
    torch.manual_seed(0)
    model = Mask2FormerForUniversalSegmentation(tiny_resnet_config())
    data = TrainSamples(
        ShapesDataset(8, seed=3, config=ShapesConfig(64, 64)), LargeScaleJitter(64, 1.0, 1.0)
    )
    held_out = [collate([data[(0, i)] for i in range(4)])]
    classifier = MaskPooledClassifier(model.model.pixel_level_module.encoder, num_labels=8)
    config = PretrainConfig(
        output_dir=str(tmp_path), steps=4, batch_size=2, log_every=2, eval_every=4,
        progress=False,
    )  # fmt: skip
    pretrain_backbone(classifier, data, config, held_out, thing_labels=range(5))
    log = records(tmp_path / "pretrain_log.jsonl")
    events = read_events(tmp_path / "tensorboard")
    keys = ("accuracy", "thing_accuracy")
    expected = expected_scalars(log, section="pretrain", metric_keys=keys)
    assert {"pretrain/loss", "pretrain/lr", "eval/accuracy", "eval/thing_accuracy"} <= set(expected)
    check_scalars(events, expected)


def test_metric_tags():
    assert tb.metric_tag("PQ_th") == "eval/panoptic/PQ_th"
    assert tb.metric_tag("AP50") == "eval/instance/AP50"
    assert tb.metric_tag("mIoU") == "eval/semantic/mIoU"
    assert tb.metric_tag("accuracy") == "eval/accuracy"
    log = tb.EventLog(None)  # writes nothing, asks for no pictures
    log.scalars(1, {"loss": 1.0})
    assert not log.active
