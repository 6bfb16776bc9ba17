"""Gradient (activation) checkpointing of the repeated blocks: Swin and ResNet stages, the
deformable encoder's layers and the masked-attention decoder's layers.

A module that supports it has ``gradient_checkpointing`` (off by default);
``model.gradient_checkpointing_enable()`` turns it on and hands every such module the function
that runs a block (``torch.utils.checkpoint.checkpoint`` with the caller's options). In training
mode with gradients on, a checkpointed block keeps only its inputs and runs again in the
backward pass; the random state is restored for the rerun (``preserve_rng_state``), so dropout
and stochastic depth give the same outputs and gradients as without checkpointing.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Optional

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["run_block", "set_gradient_checkpointing"]


def run_block(owner: nn.Module, block: Callable, *args: Any) -> Any:
    """``block(*args)``, checkpointed when ``owner`` has checkpointing on, is training and
    gradients are being recorded (checkpointing saves nothing otherwise)."""
    if getattr(owner, "gradient_checkpointing", False) and owner.training:
        if torch.is_grad_enabled():
            return owner._gradient_checkpointing_func(block, *args)
    return block(*args)


def set_gradient_checkpointing(
    model: nn.Module, enable: bool, options: Optional[Dict[str, Any]] = None
) -> None:
    """Turn checkpointing on or off in every module of ``model`` that supports it.

    ``options`` go to ``torch.utils.checkpoint.checkpoint``; ``use_reentrant`` defaults to
    False (the variant PyTorch recommends, which also takes the blocks' non-tensor arguments).
    """
    options = {"use_reentrant": False, **(options or {})}
    func = functools.partial(checkpoint, **options)
    found = False
    for module in model.modules():
        if hasattr(module, "gradient_checkpointing"):
            module.gradient_checkpointing = enable
            module._gradient_checkpointing_func = func
            found = True
    if not found:
        raise ValueError(f"{type(model).__name__} has no module that supports checkpointing")
