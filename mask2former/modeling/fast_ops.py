"""Small helpers shared by the model's fast paths."""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .chunked_mlp import chunked_mlp_activation, chunked_mlp_training
from .exporting import is_exporting

__all__ = [
    "CHUNK_BYTES",
    "autocast_dtype",
    "fused_bfloat16_linears",
    "inference_chunks",
    "affine_into",
    "linear_into",
    "token_mlp",
]

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
    residual: Optional[torch.Tensor] = None,
    into_residual: bool = False,
) -> torch.Tensor:
    """``second(act(first(x)))``, plus ``residual`` when given, for x (..., C) -> (..., C_out).

    ``into_residual``: without autograd, the sum is written into ``residual`` itself and
    returned. Each output row depends only on the same row of x and of the residual, so this
    also holds when the residual is x: every chunk reads its rows before it overwrites them.

    Without autograd and with a large hidden layer, rows go through in chunks written into one
    output buffer: the same arithmetic per row (every op is row-wise), a fraction of the memory.
    In bfloat16 on a CPU with oneDNN, bias, activation and residual ride along with the matrix
    products (see ``fused_bfloat16_linears``).
    """
    rows = x.numel() // x.shape[-1]
    flat = x.reshape(rows, x.shape[-1])
    skip = None if residual is None else residual.reshape(rows, second.out_features)
    in_place = into_residual and skip is not None and not torch.is_grad_enabled()
    in_place = in_place and residual.is_contiguous()  # skip must be a view of it
    fused = chunked_mlp_activation(act) if fused_bfloat16_linears(x) else None
    if fused is not None and skip is not None:
        out = _fused_mlp(flat, first, fused, second, skip, skip if in_place else None)
        return out.view(*x.shape[:-1], second.out_features)
    step = inference_chunks(rows, first.out_features * x.element_size())
    if step is None:
        training = _training_chunks(x, rows, first, act)
        if training is not None:
            y = chunked_mlp_training(flat, first, training[0], second, training[1])
            y = y.view(*x.shape[:-1], second.out_features)
        else:
            y = second(act(first(x)))
        if in_place:
            return residual.add_(y)
        return y if residual is None else residual + y
    act = _in_place(act)
    if in_place:
        for start in range(0, rows, step):
            rows_now = slice(start, start + step)
            skip[rows_now].add_(second(act(first(flat[rows_now]))))
        return residual
    out = flat.new_empty(rows, second.out_features)
    for start in range(0, rows, step):
        part = act(first(flat[start : start + step]))
        linear_into(part, second, out[start : start + step])
    if skip is not None:
        out.add_(skip)
    return out.view(*x.shape[:-1], second.out_features)


def _training_chunks(x: torch.Tensor, rows: int, first: nn.Linear, act) -> Optional[tuple]:
    """(activation, rows per chunk) when a training step on the CPU should use the chunked
    MLP of ``chunked_mlp`` (a hidden layer of more than 2 * CHUNK_BYTES in float32 or float64,
    no autocast), else None."""
    activation = chunked_mlp_activation(act)
    row_bytes = first.out_features * x.element_size()
    if (
        activation is None
        or not torch.is_grad_enabled()
        or is_exporting()
        or x.device.type != "cpu"
        or x.dtype not in (torch.float32, torch.float64)
        or autocast_dtype("cpu") is not None
        or rows * row_bytes <= 2 * CHUNK_BYTES
    ):
        return None
    return activation, max(1, CHUNK_BYTES // row_bytes)


def autocast_dtype(device_type: str) -> Optional[torch.dtype]:
    """The autocast dtype in effect for ``device_type``, None without autocast."""
    try:
        enabled = torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: one query per device kind
        cpu = device_type == "cpu"
        enabled = torch.is_autocast_cpu_enabled() if cpu else torch.is_autocast_enabled()
        if enabled:
            return torch.get_autocast_cpu_dtype() if cpu else torch.get_autocast_gpu_dtype()
        return None
    return torch.get_autocast_dtype(device_type) if enabled else None


def fused_bfloat16_linears(x: torch.Tensor) -> bool:
    """Whether inference on x goes through oneDNN's linear with fused post-ops.

    In bfloat16 the matrix products are so fast (AMX) that the passes around them (the bias
    copied into the output first, the activation, the residual add) cost as much again; oneDNN
    applies them while the product's tile is in registers. Measured at 2 threads: the pixel
    decoder's feed-forward block 14.7 -> 7.6 ms, Swin's 11.4 -> 9.0 ms at stage 1. In float32
    the same fusion measured no faster, so float32 keeps the plain products (and their exact
    results).
    """
    return (
        x.dtype == torch.bfloat16
        and x.device.type == "cpu"
        and _ONEDNN_LINEAR is not None
        and not torch.is_grad_enabled()
        and not is_exporting()
    )


def _fused_mlp(
    flat: torch.Tensor,
    first: nn.Linear,
    activation: Tuple[str, str],
    second: nn.Linear,
    skip: torch.Tensor,
    out: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """skip + second(act(first(flat))) for flat (N, C) with oneDNN post-ops, in row chunks,
    written into ``out`` when given (which may be skip itself)."""
    attr, algorithm = activation
    rows = flat.shape[0]
    step = inference_chunks(rows, first.out_features * flat.element_size()) or rows
    if out is None and step < rows:
        out = flat.new_empty(rows, second.out_features)
    for start in range(0, rows, step):
        part = slice(start, start + step)
        hidden = _ONEDNN_LINEAR(flat[part], first.weight, first.bias, attr, [], algorithm)
        y = _ONEDNN_LINEAR.binary(hidden, skip[part], second.weight, second.bias, "add")
        if out is None:
            return y
        out[part] = y
    return out


def _onednn_linear():
    """torch's oneDNN linear with post-ops (the one torch.compile uses on CPUs), if built in."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._linear_pointwise
    except (AttributeError, RuntimeError):
        return None


def _native_bfloat16() -> bool:
    """A CPU with bfloat16 instructions (AVX512-BF16 or AMX); elsewhere oneDNN emulates them."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


_ONEDNN_LINEAR = _onednn_linear() if _native_bfloat16() else None


def linear_into(x: torch.Tensor, layer: nn.Linear, out: torch.Tensor) -> torch.Tensor:
    """``out[...] = layer(x)`` for x (N, C_in) and a contiguous out (N, C_out), written in
    place by the matrix product itself (no temporary and no copy)."""
    return affine_into(x, layer.weight, layer.bias, out)


def affine_into(
    x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], out: torch.Tensor
) -> torch.Tensor:
    """``out[...] = x @ weight.T + bias`` for x (N, C_in), weight (C_out, C_in) and out
    (N, C_out), written by the matrix product itself."""
    if bias is None:
        return torch.mm(x, weight.t(), out=out)
    return torch.addmm(bias, x, weight.t(), out=out)


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
