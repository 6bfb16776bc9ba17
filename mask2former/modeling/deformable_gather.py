"""The inference form of multi-scale deformable sampling: a zero-bordered value table and
bilinear taps computed in a few in-place passes.

:func:`mask2former.modeling.deformable_attention.multi_scale_deformable_attention` gives every
sampling point four bilinear taps and sums the weighted value rows with one ``embedding_bag``.
Its tap arithmetic masks the corners that fall outside their map; that masking and its
temporaries cost several times the gather itself (about 50 ms per encoder layer at 800x1088).
Here every level's map gets a zero border (one pixel before, two after), coordinates are
clamped into the bordered map, and a corner outside the image then reads a zero row: no masks,
no clamps of indices, and every intermediate is reused in place. The result equals the masked
form up to float rounding (a few ulps of the bilinear weights). No autograd: training keeps the
masked form and its own backward.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = ["padded_value_table", "padded_deformable_sampling"]

# Zero pixels added before and after each level's rows and columns. One before: a tap left of
# (or above) the image. Two after: a point clamped to the far edge has its second tap one
# further out, and it must still land on a zero row of the same level.
BEFORE, AFTER = 1, 2


def padded_value_table(
    value: torch.Tensor, spatial_shapes: Sequence[Tuple[int, int]]
) -> Tuple[torch.Tensor, List[int]]:
    """value (B, S, heads, D) -> table (B * S_pad * heads, D) and each level's first row
    (in units of S_pad positions), where level l holds (H_l + 3) x (W_l + 3) positions."""
    b, _, heads, dim = value.shape
    padded = [(h + BEFORE + AFTER) * (w + BEFORE + AFTER) for h, w in spatial_shapes]
    table = value.new_zeros((b, sum(padded), heads, dim))
    starts, start, first = [], 0, 0
    for (h, w), size in zip(spatial_shapes, padded):
        level = table[:, start : start + size].view(b, h + 3, w + 3, heads, dim)
        source = value[:, first : first + h * w].view(b, h, w, heads, dim)
        level[:, BEFORE : BEFORE + h, BEFORE : BEFORE + w].copy_(source)
        starts.append(start)
        start += size
        first += h * w
    return table.view(-1, dim), starts


def _axis(coord: torch.Tensor, size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """coord (...) in [0, 1] -> (first padded pixel index int32, fraction toward the next).

    The bordered map has pixel centres at integers 1..size; the coordinate is clamped to
    [0, size + 1], which keeps both taps inside the border, and there truncation is floor.
    """
    pix = torch.mul(coord, size).add_(BEFORE - 0.5).clamp_(0.0, size + BEFORE)
    low = pix.to(torch.int32)
    return low, pix.sub_(low)


# Same-size stand-ins that move a run of P elements as one element (their values are never
# computed with, only copied bit for bit).
_WORDS = {16: torch.complex128, 8: torch.int64}


def _bags(slots: torch.Tensor) -> torch.Tensor:
    """(L * 4, B, Q, heads, P) -> (B * Q * heads, L * 4 * P), one bag per row.

    A plain permuted copy moves runs of P = 4 elements and is slow at it; viewing each run as
    one 16- or 8-byte element makes the copy a simple 2-D transpose, about 5x faster.
    """
    taps, b, q, heads, points = slots.shape
    word = _WORDS.get(points * slots.element_size())
    if word is None:
        return slots.permute(1, 2, 3, 0, 4).reshape(b * q * heads, taps * points)
    runs = slots.view(word).view(taps, b * q * heads)  # one element per run of P
    return runs.t().contiguous().view(slots.dtype).view(b * q * heads, taps * points)


def padded_deformable_sampling(
    value: torch.Tensor,
    spatial_shapes: Sequence[Tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Same arguments and result as ``multi_scale_deformable_attention``, for inference.

    Args:
        value: (B, S, heads, D).
        spatial_shapes: (H_l, W_l) per level.
        sampling_locations: (B, Q, heads, L, P, 2) normalized x, y (float32 recommended).
        attention_weights: (B, Q, heads, L, P).
    Returns:
        (B, Q, heads * D) in value's dtype.
    """
    b, q, heads, levels, points, _ = sampling_locations.shape
    dim = value.shape[-1]
    table, starts = padded_value_table(value, spatial_shapes)
    rows_per_image = table.shape[0] // b
    if table.shape[0] >= 2**31:
        raise ValueError("deformable sampling: value table too large for 32-bit rows")
    dtype = torch.promote_types(sampling_locations.dtype, attention_weights.dtype)
    # Level-major, contiguous (B, Q, heads, P) slices (see bilinear_taps for why).
    locs = sampling_locations.to(dtype).permute(5, 3, 0, 1, 2, 4).contiguous()
    attn = attention_weights.to(dtype).permute(3, 0, 1, 2, 4).contiguous()
    # Row of (batch b, head h) at position 0: b * rows_per_image + h, shape (B, 1, heads, 1).
    base = torch.arange(b, dtype=torch.int32, device=value.device)[:, None] * rows_per_image
    base = (base + torch.arange(heads, dtype=torch.int32, device=value.device))[:, None, :, None]
    # Taps are computed slot-major, (L * 4, B, Q, heads, P), so every operation below writes
    # long contiguous runs; one transposing copy per array then makes each (batch, query, head)
    # bag contiguous. (Writing each slot straight into the bag layout moves runs of P = 4
    # elements, and those small runs cost more than all the arithmetic.)
    slots = (levels * 4, b, q, heads, points)
    index = torch.empty(slots, dtype=torch.int32, device=value.device)
    weight = torch.empty(slots, dtype=dtype, device=value.device)
    for level, (height, width) in enumerate(spatial_shapes):
        x0, fx = _axis(locs[0, level], width)
        y0, fy = _axis(locs[1, level], height)
        row = (width + BEFORE + AFTER) * heads
        # index of the top-left tap: ((start + y0 * W_pad + x0) * heads) + base
        top_left = y0.mul_(width + BEFORE + AFTER).add_(x0).mul_(heads)
        k = 4 * level
        torch.add(top_left, base, out=index[k]).add_(starts[level] * heads)
        torch.add(index[k], heads, out=index[k + 1])
        torch.add(index[k], row, out=index[k + 2])
        torch.add(index[k], row + heads, out=index[k + 3])
        # Weights: a * (1 - f) is written a - a * f, one product fewer per pair.
        bottom = fy.mul_(attn[level])  # attention * fy
        top = torch.sub(attn[level], bottom)
        torch.mul(top, fx, out=weight[k + 1])
        torch.sub(top, weight[k + 1], out=weight[k])
        torch.mul(bottom, fx, out=weight[k + 3])
        torch.sub(bottom, weight[k + 3], out=weight[k + 2])
    out = F.embedding_bag(
        _bags(index), table, mode="sum", per_sample_weights=_bags(weight.to(table.dtype))
    )
    return out.view(b, q, heads * dim)
