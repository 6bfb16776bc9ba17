"""Small helpers shared by the model's fast paths."""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .exporting import is_exporting

__all__ = ["CHUNK_BYTES", "inference_chunks", "linear_into", "token_mlp"]

# Hidden activations above this size are computed in row chunks during inference. Fresh
# allocations this large come straight from mmap and pay a page fault per 4 KiB page on first
# touch (measured: a fresh 73 MB buffer costs 3-4x the time of writing it), while chunks of this
# size are recycled by the allocator.
CHUNK_BYTES = 8 * 2**20


def token_mlp(
    x: torch.Tensor,
    first: nn.Linear,
    act: Callable[[torch.Tensor], torch.Tensor],
    second: nn.Linear,
) -> torch.Tensor:
    """``second(act(first(x)))`` for x (..., C) -> (..., C_out).

    Without autograd and with a large hidden layer, rows go through in chunks written into one
    output buffer: the same arithmetic per row (every op is row-wise), a fraction of the memory.
    """
    rows = x.numel() // x.shape[-1]
    step = inference_chunks(rows, first.out_features * x.element_size())
    if step is None:
        return second(act(first(x)))
    flat = x.reshape(rows, x.shape[-1])
    out = flat.new_empty(rows, second.out_features)
    act = _in_place(act)
    for start in range(0, rows, step):
        part = act(first(flat[start : start + step]))
        linear_into(part, second, out[start : start + step])
    return out.view(*x.shape[:-1], second.out_features)


def linear_into(x: torch.Tensor, layer: nn.Linear, out: torch.Tensor) -> torch.Tensor:
    """``out[...] = layer(x)`` for x (N, C_in) and a contiguous out (N, C_out), written in
    place by the matrix product itself (no temporary and no copy)."""
    if layer.bias is None:
        return torch.mm(x, layer.weight.t(), out=out)
    return torch.addmm(layer.bias, x, layer.weight.t(), out=out)


def inference_chunks(total: int, row_bytes: int) -> Optional[int]:
    """Rows per chunk when an inference computation over ``total`` rows of ``row_bytes`` bytes
    of temporaries is better done in pieces (None: in one go; also with autograd or when
    exporting, whose graphs must not depend on the size)."""
    if is_exporting() or torch.is_grad_enabled() or total * row_bytes <= 2 * CHUNK_BYTES:
        return None
    return max(1, CHUNK_BYTES // row_bytes)


def _in_place(
    act: Callable[[torch.Tensor], torch.Tensor],
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The in-place form of the common activation modules (the same values, one buffer fewer);
    anything else as it is."""
    if isinstance(act, nn.GELU):
        return lambda y: torch.ops.aten.gelu_(y, approximate=act.approximate)
    if isinstance(act, (nn.ReLU, nn.SiLU)):
        kind = F.relu if isinstance(act, nn.ReLU) else F.silu
        return lambda y: kind(y, inplace=True)
    return act
