"""Backbone pretraining by mask-pooled classification, for training Mask2Former from scratch.

Published Mask2Former models start from an ImageNet-pretrained backbone. Without one (these
machines cannot download it), a backbone trained from scratch inside Mask2Former learns the
stuff classes but not the thing classes: a query classifies from features averaged inside its
mask, and those features only come to encode an object's shape after the backbone has learned
it, which Mask2Former's sparse, matched class loss teaches very slowly. This stage teaches it
directly: every ground-truth mask pools each backbone stage's features inside it, and a linear
head classifies the pooled vector. On the shapes data a small ResNet learns this in minutes
(see ``mask2former/weights/shapes/RECIPE.md``); Mask2Former then fine-tunes from it.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from .data import RandomBatchSampler
from .divergence import TrainingDiverged
from .log_window import LogWindow
from .mask_pooling import (
    MaskPooledClassifier,
    MaskPooledObjective,
    held_out_accuracy,
    mask_pooled_features,
)
from .settings import TrainConfig
from .trainer import Trainer

__all__ = [
    "BackbonePretrainer",
    "MaskPooledClassifier",
    "PretrainConfig",
    "held_out_accuracy",
    "mask_pooled_features",
    "pretrain_backbone",
]

LOG_FILE = "pretrain_log.jsonl"


@dataclass
class PretrainConfig:
    """Optimisation of :func:`pretrain_backbone`: AdamW, with a constant learning rate or a
    polynomial decay to zero (``schedule``, as in :func:`~mask2former.training.optim.lr_factor`)."""

    output_dir: str
    steps: int = 2500
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.05
    clip_norm: float = 1.0
    schedule: str = "constant"
    seed: int = 0
    log_every: int = 50
    eval_every: int = 500
    progress: bool = True
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a number above 0, got {self.lr}")
        for name in ("weight_decay", "clip_norm"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a number >= 0, got {value}")
        if self.schedule not in ("constant", "poly"):
            raise ValueError(f"schedule must be constant or poly, got {self.schedule!r}")

    def train_config(self) -> TrainConfig:
        """The trainer's settings of this pretraining: one batch a step, float32, no
        checkpoints (only the final model is written, by the caller)."""
        return TrainConfig(
            output_dir=self.output_dir,
            max_steps=self.steps,
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=self.weight_decay,
            clip_norm=self.clip_norm,
            schedule=self.schedule,
            seed=self.seed,
            log_every=self.log_every,
            eval_every=self.eval_every,
            checkpoint_every=0,
            device=self.device,
            progress=self.progress,
        )


class BackbonePretrainer(Trainer):
    """The :class:`~mask2former.training.Trainer` on :class:`MaskPooledObjective`, with
    pretraining's own recipe: plain AdamW over every parameter, batches drawn at random with
    replacement, no checkpoints, and its log (``pretrain_log.jsonl``: step, mean loss, seconds
    since the start, the learning rate of the record's last step, and the held-out accuracies
    every ``eval_every`` steps and at the end).

    Args:
        model: the classifier (backbone and head), trained in place.
        train_data: items indexed by ``(epoch, index)`` (a ``TrainSamples``).
        config: a :class:`PretrainConfig`.
        held_out: collated batches scored every ``eval_every`` steps and at the end.
        thing_labels: labels whose accuracy is reported on its own (the hard part).
    """

    log_name = LOG_FILE
    progress_label = "pretrain"
    writes_checkpoints = False
    metric_keys = ("accuracy", "thing_accuracy")  # tagged eval/accuracy in the event files

    def __init__(
        self,
        model: MaskPooledClassifier,
        train_data: Sequence[Dict[str, torch.Tensor]],
        config: PretrainConfig,
        held_out: Optional[List[Dict[str, Any]]] = None,
        thing_labels: Optional[Sequence[int]] = None,
    ):
        def adamw(m: nn.Module) -> torch.optim.Optimizer:
            return torch.optim.AdamW(m.parameters(), lr=config.lr, weight_decay=config.weight_decay)

        super().__init__(
            model,
            train_data,
            config.train_config(),
            objective=MaskPooledObjective(),
            make_optimizer=adamw,
        )
        self.held_out = held_out
        self.thing_labels = thing_labels
        self._started = 0.0  # when fit began: the log's "seconds" count from there

    def fit(self, until: Optional[int] = None) -> Dict[str, Any]:
        self._started = time.perf_counter()
        return super().fit(until)

    def _batch_sampler(self) -> torch.utils.data.Sampler:
        cfg = self.config
        return RandomBatchSampler(
            len(self.train_data), cfg.batch_size, seed=cfg.seed, start_batch=self.step
        )

    def _show(self, progress: Any, step_loss: Optional[float]) -> None:
        if step_loss is not None:
            progress.set_postfix(loss=f"{step_loss:.3f}")

    def _record(self, window: LogWindow) -> Dict[str, Any]:
        cfg = self.config
        record: Dict[str, Any] = {
            "step": self.step,
            "loss": float(np.mean(window.losses)) if window.losses else None,
            "seconds": round(time.perf_counter() - self._started, 1),
            "lr": window.lr,
        }
        if self.held_out and (self.step % cfg.eval_every == 0 or self.step == cfg.max_steps):
            record.update(held_out_accuracy(self.model, self.held_out, self.thing_labels))
        return record

    def _log_line(self, record: Dict[str, Any]) -> str:
        return json.dumps(record)

    def _non_finite(
        self, what: str, value: float, loss: Optional[float] = None
    ) -> TrainingDiverged:
        return TrainingDiverged(
            f"pretraining {what} is {value} at step {self.step + 1}; stopped before saving "
            "anything. Lower the learning rate (--lr)."
        )


def pretrain_backbone(
    model: MaskPooledClassifier,
    train_data: Sequence[Dict[str, torch.Tensor]],
    config: PretrainConfig,
    held_out: Optional[List[Dict[str, Any]]] = None,
    thing_labels: Optional[Sequence[int]] = None,
) -> Dict[str, Any]:
    """Train ``model`` (backbone and head) to classify every ground-truth mask, with a
    :class:`BackbonePretrainer`; its records go to ``output_dir/pretrain_log.jsonl``.

    Args:
        train_data: items of a :class:`~mask2former.training.TrainSamples` (indexed by
            ``(epoch, index)``); batches draw indices at random from ``config.seed``.
        held_out: collated batches scored every ``eval_every`` steps and at the end.
        thing_labels: labels whose accuracy is reported on its own (the hard part).

    Returns:
        The last record (step, loss, and held-out accuracies when ``held_out`` is given).

    Raises:
        TrainingDiverged: the loss or the gradient norm became NaN or infinite; the weights
            are those before that step.
    """
    os.makedirs(config.output_dir, exist_ok=True)
    trainer = BackbonePretrainer(model, train_data, config, held_out, thing_labels)
    last = trainer.fit()
    trainer.dist.close()
    return last
