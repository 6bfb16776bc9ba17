"""Mask-pooled classification: a backbone's features averaged inside each ground-truth mask,
classified by a linear head (the objective of backbone pretraining, see
:mod:`mask2former.training.pretrain`)."""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .objective import Batch, StepLoss

__all__ = [
    "MaskPooledClassifier",
    "MaskPooledObjective",
    "held_out_accuracy",
    "mask_pooled_features",
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


class MaskPooledObjective:
    """The cross-entropy of every ground-truth mask's class, for a
    :class:`MaskPooledClassifier`.

    A batch whose crops all miss every mask has nothing to learn from (and its mean loss would
    be NaN): its loss is None, so the trainer counts the step without an update.
    """

    def loss(self, model: nn.Module, batch: Batch) -> Optional[StepLoss]:
        logits = model(batch["pixel_values"], batch["mask_labels"])  # (sum N_b, num_labels)
        if not len(logits):
            return None
        labels = torch.cat(batch["class_labels"]).to(logits.device)
        return StepLoss(F.cross_entropy(logits, labels))
