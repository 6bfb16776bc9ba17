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
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..files import append_text
from .data import collate
from .optim import lr_factor
from .trainer import TrainingDiverged

__all__ = [
    "MaskPooledClassifier",
    "PretrainConfig",
    "held_out_accuracy",
    "mask_pooled_features",
    "pretrain_backbone",
]


def mask_pooled_features(features: Sequence[torch.Tensor], masks: torch.Tensor) -> torch.Tensor:
    """Average of each feature map inside each mask, concatenated over the maps.

    Args:
        features: one image's maps, each (C_i, h_i, w_i).
        masks: (N, H, W) float or bool masks at the input resolution.

    Returns:
        (N, sum C_i). Each mask is reduced to a map's grid by area and widened by one cell, so
        an object smaller than a stride-32 cell still pools the cells its outline touches.
    """
    masks = masks.float()
    pooled = []
    for f in features:
        weight = F.adaptive_avg_pool2d(masks[None], f.shape[-2:])[0]
        weight = F.max_pool2d(weight[None], 3, 1, 1)[0]
        weight = weight / weight.sum((1, 2), keepdim=True).clamp_min(1e-6)
        pooled.append(torch.einsum("nhw,chw->nc", weight, f))
    return torch.cat(pooled, 1)


class MaskPooledClassifier(nn.Module):
    """A backbone and a linear head over its mask-pooled stage features.

    Args:
        backbone: maps (B, 3, H, W) to a sequence of (B, C_i, h_i, w_i) maps and lists the C_i
            in ``channels`` (the Swin and ResNet backbones of this package).
        num_labels: classes of the masks.
    """

    def __init__(self, backbone: nn.Module, num_labels: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(sum(backbone.channels), num_labels)

    def forward(self, pixel_values: torch.Tensor, masks: List[torch.Tensor]) -> torch.Tensor:
        """(B, 3, H, W) images and B (N_b, H, W) masks -> (sum N_b, num_labels) logits."""
        features = self.backbone(pixel_values)
        pooled = [
            mask_pooled_features([f[i] for f in features], m) for i, m in enumerate(masks) if len(m)
        ]
        if not pooled:
            return pixel_values.new_zeros(0, self.head.out_features)
        return self.head(torch.cat(pooled))


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


LOG_FILE = "pretrain_log.jsonl"


def _diverged(what: str, step: int) -> TrainingDiverged:
    return TrainingDiverged(
        f"pretraining {what} at step {step}; stopped before saving anything. Lower the "
        "learning rate (--lr)."
    )


def _update(model: nn.Module, optimizer, logits, labels, config: PretrainConfig, step: int):
    """One optimiser step on the cross-entropy of ``logits``; returns the loss. A NaN or
    infinite loss or gradient norm stops with :class:`TrainingDiverged` before the update."""
    loss = F.cross_entropy(logits, labels)
    if not torch.isfinite(loss):
        raise _diverged(f"loss is {float(loss)}", step)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    norm = float(nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm or math.inf))
    if not math.isfinite(norm):
        raise _diverged(f"gradient norm is {norm}", step)
    optimizer.step()
    return float(loss.detach())


@torch.no_grad()
def held_out_accuracy(
    model: MaskPooledClassifier,
    batches: Iterable[Dict[str, Any]],
    thing_labels: Optional[Sequence[int]] = None,
) -> Dict[str, float]:
    """Share of held-out masks whose label is predicted: ``accuracy`` over all masks and, with
    ``thing_labels``, ``thing_accuracy`` over the masks of those labels (one pass)."""
    was_training = model.training
    model.eval()
    preds, targets = [], []
    for batch in batches:
        targets.append(torch.cat(batch["class_labels"]))
        pixels, masks = _on_device(batch, _device_of(model))
        preds.append(model(pixels, masks).argmax(1).cpu())
    model.train(was_training)
    hits = (torch.cat(preds) == torch.cat(targets)).float()
    out = {"accuracy": float(hits.mean()) if len(hits) else float("nan")}
    if thing_labels:
        keep = torch.isin(torch.cat(targets), torch.as_tensor(list(thing_labels)))
        out["thing_accuracy"] = float(hits[keep].mean()) if keep.any() else float("nan")
    return out


def _device_of(model: nn.Module) -> Optional[torch.device]:
    param = next(model.parameters(), None)
    return None if param is None else param.device


def _on_device(batch: Dict[str, Any], device: Optional[torch.device]):
    """A batch's images and masks on ``device`` (None: where they are)."""
    pixels, masks = batch["pixel_values"], batch["mask_labels"]
    if device is None or pixels is None:
        return pixels, masks
    return pixels.to(device), [m.to(device) for m in masks]


def pretrain_backbone(
    model: MaskPooledClassifier,
    train_data: Sequence[Dict[str, torch.Tensor]],
    config: PretrainConfig,
    held_out: Optional[List[Dict[str, Any]]] = None,
    thing_labels: Optional[Sequence[int]] = None,
    log: Optional[Callable[[Dict[str, Any]], None]] = None,
) -> Dict[str, Any]:
    """Train ``model`` (backbone and head) to classify every ground-truth mask.

    Args:
        train_data: items of a :class:`~mask2former.training.TrainSamples` (indexed by
            ``(epoch, index)``); batches draw indices at random from ``config.seed``.
        held_out: collated batches scored every ``eval_every`` steps and at the end.
        thing_labels: labels whose accuracy is reported on its own (the hard part).
        log: called with each log record; by default records go to
            ``output_dir/pretrain_log.jsonl``.

    Returns:
        The last record (step, loss, and held-out accuracies when ``held_out`` is given).
    """
    os.makedirs(config.output_dir, exist_ok=True)
    if log is None:
        path = os.path.join(config.output_dir, LOG_FILE)

        def log(record: Dict[str, Any]) -> None:
            append_text(path, json.dumps(record) + "\n")

    device = torch.device(config.device)
    model.to(device)

    rng = np.random.default_rng(config.seed)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    progress = None
    if config.progress:
        from tqdm import tqdm

        progress = tqdm(total=config.steps, desc="pretrain", unit="step")
    model.train()
    losses: List[float] = []
    start = time.perf_counter()
    last: Dict[str, Any] = {}
    n = len(train_data)
    try:
        for step in range(1, config.steps + 1):
            epoch = (step - 1) * config.batch_size // n
            idx = rng.integers(n, size=config.batch_size)
            batch = collate([train_data[(epoch, int(i))] for i in idx])
            pixels, masks = _on_device(batch, device)
            for group in optimizer.param_groups:
                group["lr"] = config.lr * lr_factor(
                    step - 1, config.steps, schedule=config.schedule
                )
            logits = model(pixels, masks)
            # A batch whose crops all miss every mask has nothing to learn from (and its mean
            # loss would be NaN): it is skipped, the step still counts.
            if len(logits):
                labels = torch.cat(batch["class_labels"]).to(logits.device)
                losses.append(_update(model, optimizer, logits, labels, config, step))
            if progress is not None:
                progress.update(1)
                if losses:
                    progress.set_postfix(loss=f"{losses[-1]:.3f}")
            if step % config.log_every == 0 or step == config.steps:
                last = {
                    "step": step,
                    "loss": float(np.mean(losses)) if losses else None,
                    "seconds": round(time.perf_counter() - start, 1),
                    "lr": optimizer.param_groups[0]["lr"],
                }
                losses = []
                if held_out and (step % config.eval_every == 0 or step == config.steps):
                    last.update(held_out_accuracy(model, held_out, thing_labels))
                log(last)
    finally:
        if progress is not None:
            progress.close()
    return last
