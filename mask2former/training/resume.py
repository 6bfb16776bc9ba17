"""What a checkpoint holds besides the model, and how a run is put back from it.

:func:`run_state` is the ``training_state.pt`` of a checkpoint (optimiser, scheduler, gradient
scaler, random-number generators, the run's settings); :func:`load_weights` and
:func:`load_run_state` restore a run from a checkpoint folder, turning anything that does not
fit into a :class:`~mask2former.checkpoint.CheckpointError` naming the file.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from typing import Any, Dict

import torch
from torch import nn

from ..checkpoint import CheckpointError
from .settings import TrainConfig

__all__ = ["run_state", "load_weights", "load_run_state"]


def run_state(
    step: int,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    scaler: torch.amp.GradScaler,
    config: TrainConfig,
    world_size: int,
) -> Dict[str, Any]:
    """The training state of a checkpoint at ``step`` (what
    :func:`~mask2former.training.checkpointing.load_training_state` reads back)."""
    state = {
        "step": step,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "train_config": json.dumps(asdict(config)),
        # The batch size is per process: the run's batch is it times this.
        "world_size": world_size,
    }
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    return state


def load_weights(model: nn.Module, checkpoint: str) -> None:
    """Load the checkpoint folder's ``model.safetensors`` into ``model``.

    Raises:
        CheckpointError: a weight is NaN or infinite, or the weights do not fit the model.
    """
    from ..checkpoint import load_state_dict_file

    path = os.path.join(checkpoint, "model.safetensors")
    weights = load_state_dict_file(path)
    broken = [k for k, v in weights.items() if v.is_floating_point() and not v.isfinite().all()]
    if broken:
        raise CheckpointError(
            f"{path} holds NaN or infinite weights ({broken[0]}, ...); resume from an "
            "earlier checkpoint"
        )
    loader = getattr(model, "_load_checked", None)
    if loader is not None:  # lists every missing, unexpected or reshaped tensor
        loader(weights, checkpoint, ignore_mismatched_sizes=False)
        return
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not fit the model: {e}") from None


def load_run_state(
    state: Dict[str, Any],
    path: str,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    scaler: torch.amp.GradScaler,
) -> None:
    """Put the optimiser, scheduler, scaler and random states of ``state`` (read from
    ``path``) back. The learning rate of the next step comes from ``scheduler``'s own schedule,
    which differs from the saved one when the run was made longer.

    Raises:
        CheckpointError: the state does not fit this model's optimiser, naming ``path``.
    """
    try:
        optimizer.load_state_dict(state["optimizer"])
        _check_optimizer_shapes(optimizer)
        if not set(state["scheduler"]) <= set(scheduler.state_dict()):
            raise ValueError("the scheduler state has unknown entries")
        scheduler.load_state_dict(state["scheduler"])
        for group, base, rate in zip(
            optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas
        ):
            group["lr"] = base * rate(scheduler.last_epoch)
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
    except (ValueError, RuntimeError, KeyError, TypeError, IndexError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"{path} does not fit this model and run: {first}") from None


def _check_optimizer_shapes(optimizer: torch.optim.Optimizer) -> None:
    """A loaded optimiser state of another model has slots of other shapes than its
    parameters; torch would only fail at the first step."""
    for param, slots in optimizer.state.items():
        for name, value in slots.items():
            if isinstance(value, torch.Tensor) and value.dim() and value.shape != param.shape:
                raise ValueError(
                    f"optimiser {name} of shape {tuple(value.shape)} for a parameter of "
                    f"shape {tuple(param.shape)}"
                )
