"""The run folder of a training command: whether ``--out`` may be used (new, resumed or
started over) and whether a resumed run keeps the options it was trained with.

Kept out of :mod:`mask2former.commands` so that the commands only parse arguments; the option
names in the messages are the command line's, as these checks answer a user's command.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional

__all__ = ["output_mode", "check_resume"]


def output_mode(out: str, resume: Optional[bool], overwrite: bool, option: str = "--out") -> str:
    """How a run may use ``out``: "new" (missing or empty), "resume" or "overwrite".
    ``resume=None``: the command cannot resume (pretrain-backbone).

    Raises:
        FileExistsError: ``out`` is not empty and neither ``resume`` nor ``overwrite`` is set,
            or ``resume`` is set but ``out`` holds no checkpoint to continue.
        NotADirectoryError: ``out`` is a file.
    """
    from .checkpointing import latest_checkpoint

    if os.path.lexists(out) and not os.path.isdir(out):
        raise NotADirectoryError(f"{option} {out} is a file, not a folder")
    if not (os.path.isdir(out) and os.listdir(out)):
        return "new"
    if overwrite:
        return "overwrite"
    if resume is None:
        raise FileExistsError(
            f"{option} {out} is not empty: pass --overwrite to write into it (or choose a new "
            "folder)"
        )
    if not resume:
        raise FileExistsError(
            f"{option} {out} is not empty: pass --resume to continue its run or --overwrite to "
            "start over (or choose a new folder)"
        )
    if latest_checkpoint(out) is None:
        raise FileExistsError(
            f"--resume: {out} has no checkpoint to continue from (no 'latest'); pass "
            "--overwrite to start over there"
        )
    return "resume"


# CLI options of the TrainConfig fields a resumed run must keep.
_FLAGS = {
    "max_steps": "--steps",
    "batch_size": "--batch-size",
    "grad_accum": "--grad-accum",
    "lr": "--lr",
    "weight_decay": "--weight-decay",
    "backbone_multiplier": "--backbone-multiplier",
    "clip_norm": "--clip",
    "schedule": "--schedule",
    "warmup_steps": "--warmup",
    "warmup_factor": "--warmup-factor",
    "amp": "--amp",
    "seed": "--seed",
}


def check_resume(state: Dict[str, Any], config, checkpoint: str, command: str = "train") -> None:
    """Refuse options that differ from the checkpoint's, naming the option and both values;
    a longer --steps is allowed, with a note when it changes the learning rate."""
    from .settings import check_resume_settings

    try:
        check_resume_settings(state, config, checkpoint, names=_FLAGS)
    except ValueError as e:
        raise ValueError(
            f"--resume: {e}; resume with the same value, or start over with --overwrite"
        ) from None
    step = state["step"]
    saved_steps = state["settings"].get("max_steps", config.max_steps)
    if saved_steps != config.max_steps:
        _note_longer_schedule(config, saved_steps, step, command)


def _note_longer_schedule(config, saved_steps: int, step: int, command: str) -> None:
    """Say what a longer --steps does to the learning rate from the resumed step on."""
    from .console import note
    from .optim import lr_factor

    def factor(max_steps: int) -> float:
        return lr_factor(
            step,
            max_steps,
            warmup_steps=config.warmup_steps,
            schedule=config.schedule,
            milestones=config.milestones,
            power=config.poly_power,
            warmup_factor=config.warmup_factor,
        )

    before, after = factor(saved_steps), factor(config.max_steps)
    change = (
        "" if before == after else f"; the learning rate goes from x{before:.3g} to x{after:.3g}"
    )
    note(
        command,
        f"--steps {config.max_steps} (the run had {saved_steps}): the {config.schedule} schedule "
        f"now spans {config.max_steps} steps from step {step} on{change}",
    )
