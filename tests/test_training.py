"""The trainer: a few steps, exact resume, NaN stop, optimiser groups, schedules, torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from mask2former import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig
from mask2former.data import LargeScaleJitter, ShapesConfig, ShapesDataset
from mask2former.training import (
    TrainConfig,
    Trainer,
    TrainingDiverged,
    TrainSamples,
    build_optimizer,
    lr_factor,
)
from mask2former.training.checkpointing import latest_checkpoint


def tiny_config() -> Mask2FormerConfig:
    backbone = SwinConfig(
        embed_dim=32,
        depths=[1, 1, 1, 1],
        num_heads=[1, 2, 4, 8],
        drop_path_rate=0.1,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    return Mask2FormerConfig(
        backbone_config=backbone,
        id2label={i: f"c{i}" for i in range(8)},
        feature_size=32,
        mask_feature_size=32,
        hidden_dim=32,
        num_attention_heads=4,
        encoder_layers=1,
        decoder_layers=3,
        num_queries=6,
        dim_feedforward=64,
        encoder_feedforward_dim=64,
        train_num_points=256,
    )


def make_trainer(out, max_steps=4, **overrides) -> Trainer:
    torch.manual_seed(0)
    model = Mask2FormerForUniversalSegmentation(tiny_config())
    data = TrainSamples(
        ShapesDataset(12, seed=3, config=ShapesConfig(64, 64)),
        LargeScaleJitter(64, 0.5, 1.5),
        seed=5,
    )
    cfg = dict(
        output_dir=str(out),
        max_steps=max_steps,
        batch_size=2,
        lr=1e-3,
        checkpoint_every=2,
        log_every=1,
        progress=False,
    )
    cfg.update(overrides)
    return Trainer(model, data, TrainConfig(**cfg))


def test_a_few_steps_write_logs_and_checkpoints(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=3)
    last = trainer.fit()
    assert last["step"] == 3 and np.isfinite(last["loss"])
    assert latest_checkpoint(str(tmp_path)).endswith("step-0000003")
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[0])["step"] == 1
    # A checkpoint is a complete model folder.
    loaded = Mask2FormerForUniversalSegmentation.from_pretrained(tmp_path / "step-0000003")
    for a, b in zip(loaded.state_dict().values(), trainer.model.state_dict().values()):
        assert torch.equal(a, b)


def test_resume_is_exact(tmp_path):
    straight = make_trainer(tmp_path / "a", max_steps=4, grad_accum=2)
    straight.fit()
    first = make_trainer(tmp_path / "b", max_steps=4, grad_accum=2)
    first.fit(until=2)
    assert first.step == 2
    torch.manual_seed(1234)  # the resumed process starts with other random state
    second = make_trainer(tmp_path / "b", max_steps=4, grad_accum=2)
    assert second.resume() and second.step == 2
    second.fit()
    for (name, a), b in zip(
        straight.model.state_dict().items(), second.model.state_dict().values()
    ):
        assert torch.equal(a, b), name
    opt_a = straight.optimizer.state_dict()["state"]
    opt_b = second.optimizer.state_dict()["state"]
    assert all(torch.equal(opt_a[k]["exp_avg"], opt_b[k]["exp_avg"]) for k in opt_a)


def test_nan_loss_stops_and_keeps_last_checkpoint(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=6)
    trainer.fit(until=2)
    good = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    real_forward = trainer._forward

    def nan_forward(model, batch):
        loss, terms = real_forward(model, batch)
        return loss * float("nan"), terms

    trainer._forward = nan_forward
    with pytest.raises(TrainingDiverged, match="NaN at step 3.*step-0000002"):
        trainer.fit()
    assert latest_checkpoint(str(tmp_path)).endswith("step-0000002")
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, good[k]), k  # no update was applied with the NaN gradients


def test_optimizer_groups_follow_the_recipe():
    model = Mask2FormerForUniversalSegmentation(tiny_config())
    opt = build_optimizer(model, lr=1e-4, weight_decay=0.05, backbone_multiplier=0.1)
    by_name = {g["name"]: g for g in opt.param_groups}
    assert by_name["backbone"]["lr"] == pytest.approx(1e-5)
    assert by_name["head"]["lr"] == pytest.approx(1e-4)
    assert by_name["head_no_decay"]["weight_decay"] == 0.0
    ids = {id(p): g["name"] for g in opt.param_groups for p in g["params"]}
    tm = model.model.transformer_module
    assert ids[id(tm.queries_features.weight)] == "head_no_decay"
    assert ids[id(model.model.pixel_level_module.decoder.level_embed)] == "head_no_decay"
    block = model.model.pixel_level_module.encoder.encoder.layers[0].blocks[0]
    assert ids[id(block.attention.self.relative_position_bias_table)] == "backbone_no_decay"
    assert ids[id(block.layernorm_before.weight)] == "backbone_no_decay"
    assert ids[id(block.attention.self.query.weight)] == "backbone"
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_learning_rate_schedules():
    assert lr_factor(0, 100) == 1.0
    assert lr_factor(89, 100) == pytest.approx(0.1)
    assert lr_factor(96, 100) == pytest.approx(0.01)
    assert lr_factor(50, 100, schedule="poly") == pytest.approx(0.5**0.9)
    assert lr_factor(0, 100, warmup_steps=10, warmup_factor=0.001) == pytest.approx(0.001)
    assert lr_factor(5, 100, warmup_steps=10, warmup_factor=0.0) == pytest.approx(0.5)


def test_torchrun_two_processes(tmp_path):
    config_path = tmp_path / "model.json"
    config_path.write_text(tiny_config().to_json_string())
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_port", str(29500 + os.getpid() % 1000),
        "-m", "mask2former", "train", "--out", str(tmp_path / "run"),
        "--model-config", str(config_path), "--steps", "2", "--batch-size", "1",
        "--num-train", "8", "--image-size", "64", "--crop", "64", "--eval-images", "0",
        "--checkpoint-every", "1", "--log-every", "1", "--no-progress",
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()
    assert latest_checkpoint(str(tmp_path / "run")).endswith("step-0000002")
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2]


def test_bfloat16_autocast_steps(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=2, amp="bfloat16")
    last = trainer.fit()
    assert np.isfinite(last["loss"])
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
