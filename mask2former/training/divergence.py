"""The error that stops a run whose loss, gradients or weights became NaN or infinite."""

from __future__ import annotations

from ..checkpoint import CheckpointError
from .checkpointing import latest_checkpoint

__all__ = ["TrainingDiverged", "diverged"]


class TrainingDiverged(RuntimeError):
    """The loss, the gradients or the weights became NaN or infinite; training stopped before
    saving them, and the message names the last good checkpoint."""


def diverged(problem: str, output_dir: str) -> TrainingDiverged:
    """The error for ``problem`` (e.g. "loss is NaN at step 3") of a run that writes its
    checkpoints to ``output_dir``: it names the last good one and what to change."""
    try:
        checkpoint = latest_checkpoint(output_dir)
    except CheckpointError:
        checkpoint = None
    kept = f"the last good checkpoint is {checkpoint}" if checkpoint else "no checkpoint yet"
    return TrainingDiverged(
        f"{problem}; training stopped and {kept}. Lower the learning rate, use float32 or "
        "bfloat16 instead of float16, or check the labels."
    )
