"""The original recipe's optimiser and learning-rate schedules.

AdamW; the backbone's learning rate is ``backbone_multiplier`` x the base rate; no weight decay
on normalisation layers, embeddings (queries, level embeddings) or Swin's relative-position
tables; a linear warm-up followed by step decay (COCO) or polynomial decay (ADE20K, Cityscapes).
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import torch
from torch import nn

__all__ = ["build_optimizer", "build_scheduler", "lr_factor"]

_NO_DECAY_NAMES = (
    "relative_position_bias_table",
    "level_embed",
    "queries_embedder",
    "queries_features",
)


def _param_groups(
    model: nn.Module, lr: float, weight_decay: float, backbone_multiplier: float
) -> List[Dict]:
    norm_params = set()
    for module in model.modules():
        if isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d, nn.Embedding)):
            norm_params.update(id(p) for p in module.parameters(recurse=False))
    groups: Dict[tuple, List[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        in_backbone = ".pixel_level_module.encoder." in f".{name}"
        no_decay = id(param) in norm_params or any(n in name for n in _NO_DECAY_NAMES)
        key = (in_backbone, no_decay)
        groups.setdefault(key, []).append(param)
    out = []
    for (in_backbone, no_decay), params in sorted(groups.items()):
        out.append(
            {
                "params": params,
                "lr": lr * (backbone_multiplier if in_backbone else 1.0),
                "weight_decay": 0.0 if no_decay else weight_decay,
                "name": f"{'backbone' if in_backbone else 'head'}{'_no_decay' if no_decay else ''}",
            }
        )
    return out


def build_optimizer(
    model: nn.Module,
    lr: float = 1e-4,
    weight_decay: float = 0.05,
    backbone_multiplier: float = 0.1,
) -> torch.optim.AdamW:
    return torch.optim.AdamW(_param_groups(model, lr, weight_decay, backbone_multiplier), lr=lr)


def lr_factor(
    step: int,
    max_steps: int,
    warmup_steps: int = 0,
    schedule: str = "step",
    milestones: Sequence[float] = (0.89, 0.96),
    gamma: float = 0.1,
    power: float = 0.9,
    warmup_factor: float = 1.0,
) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based).

    ``schedule``: "step" (x``gamma`` at each milestone, given as fractions of ``max_steps``),
    "poly" ((1 - step / max_steps) ** power) or "constant". The warm-up ramps linearly from
    ``warmup_factor`` to 1 over ``warmup_steps`` (detectron2's default factor is 1.0, i.e. none).
    """
    if schedule == "step":
        factor = gamma ** sum(step >= int(m * max_steps) for m in milestones)
    elif schedule == "poly":
        factor = max(0.0, 1.0 - step / max(1, max_steps)) ** power
    elif schedule == "constant":
        factor = 1.0
    else:
        raise ValueError(f"unknown schedule {schedule!r}: use step, poly or constant")
    if step < warmup_steps:
        alpha = step / warmup_steps
        factor *= warmup_factor * (1 - alpha) + alpha
    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, max_steps: int, **kwargs
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR (its state is just the step count, so it resumes exactly)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, max_steps, **kwargs)
    )
