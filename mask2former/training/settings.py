"""The settings of a training run (:class:`TrainConfig`) and which of them a resumed run must
keep (:data:`RESUME_FIXED`, :func:`check_resume_settings`)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

__all__ = [
    "AMP_DTYPES",
    "RESUME_FIXED",
    "TrainConfig",
    "check_resume_settings",
    "resume_conflicts",
]

#: The autocast dtype of each ``TrainConfig.amp`` setting (None: no autocast).
AMP_DTYPES = {"none": None, "float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class TrainConfig:
    """Settings of a training run (the defaults are the original recipe's where it has one)."""

    output_dir: str = "runs/train"
    max_steps: int = 1000
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.05
    backbone_multiplier: float = 0.1
    clip_norm: float = 0.01
    schedule: str = "step"
    milestones: Sequence[float] = field(default_factory=lambda: [0.89, 0.96])
    poly_power: float = 0.9
    warmup_steps: int = 0
    warmup_factor: float = 1.0
    amp: str = "none"
    seed: int = 0
    num_workers: int = 0
    log_every: int = 20
    eval_every: int = 0
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    device: str = "cpu"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.amp not in AMP_DTYPES:
            raise ValueError(f"amp must be one of {sorted(AMP_DTYPES)}, got {self.amp!r}")
        if self.schedule not in ("step", "poly", "constant"):
            raise ValueError(f"schedule must be step, poly or constant, got {self.schedule!r}")
        for name in ("max_steps", "batch_size", "grad_accum", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("num_workers", "eval_every", "checkpoint_every", "warmup_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a number above 0, got {self.lr}")
        for name in ("weight_decay", "backbone_multiplier", "clip_norm", "warmup_factor"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a number >= 0, got {value}")


# Settings a resumed run must share with its checkpoint: they shape the optimisation (the
# optimiser and scheduler states hold the old values, so a new one would be silently ignored or
# half applied) or the sample order. ``max_steps`` may grow (to train longer): the schedule is
# then recomputed over the new length from the resumed step on.
RESUME_FIXED = (
    "max_steps",
    "batch_size",
    "grad_accum",
    "lr",
    "weight_decay",
    "backbone_multiplier",
    "clip_norm",
    "schedule",
    "milestones",
    "poly_power",
    "warmup_steps",
    "warmup_factor",
    "amp",
    "seed",
)


def check_resume_settings(
    state: Dict[str, Any],
    config: TrainConfig,
    checkpoint: str,
    world_size: Optional[int] = None,
    names: Optional[Dict[str, str]] = None,
) -> None:
    """Refuse to continue a training ``state`` with ``config`` when a setting of
    :data:`RESUME_FIXED` differs, the state is past ``max_steps`` or, with ``world_size``, it
    was trained by another number of processes.

    ``names``: how the messages call the settings (a command's options, e.g. "--lr"); the
    default is the field, as ``lr=0.001``.

    Raises:
        ValueError: naming the setting and both values.
    """

    def shown(name: str, value: Any) -> str:
        return str(value) if names and name in names else repr(value)

    def setting(name: str, value: Any) -> str:
        if names and name in names:
            return f"{names[name]} {value}"
        return f"{name}={value!r}"

    step = state["step"]
    if step > config.max_steps:
        raise ValueError(
            f"{checkpoint} is at step {step}, past {setting('max_steps', config.max_steps)}"
        )
    conflicts = resume_conflicts(state["settings"], config)
    if conflicts:
        name, saved, given = conflicts[0]
        label = (names or {}).get(name, name)
        hint = f" ({label} may only grow)" if name == "max_steps" else ""
        raise ValueError(
            f"{checkpoint} was trained with {setting(name, saved)}, not {shown(name, given)}"
            f"{hint}; a resumed run keeps the settings that shape its optimisation"
        )
    saved_world = state.get("world_size", 1)
    if world_size is not None and saved_world != world_size:
        raise ValueError(
            f"{checkpoint} was trained by {saved_world} process(es), this run has "
            f"{world_size}: the batch and the sample order would change"
        )


def resume_conflicts(saved: Dict[str, Any], config: TrainConfig) -> List[Tuple[str, Any, Any]]:
    """``(field, checkpoint's value, config's value)`` for each setting of ``config`` that may
    not differ from the checkpoint's ``saved`` settings (``max_steps`` may grow)."""
    current = json.loads(json.dumps(asdict(config)))  # tuples as lists, like the saved JSON
    conflicts = []
    for name in RESUME_FIXED:
        if name not in saved or saved[name] == current[name]:
            continue
        if name == "max_steps" and isinstance(saved[name], int) and current[name] > saved[name]:
            continue
        conflicts.append((name, saved[name], current[name]))
    return conflicts
