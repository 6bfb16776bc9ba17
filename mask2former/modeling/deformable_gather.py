"""The inference form of multi-scale deformable sampling: a zero-bordered value table and
bilinear taps computed in a few in-place passes.

:func:`mask2former.modeling.deformable_attention.multi_scale_deformable_attention` gives every
sampling point four bilinear taps and sums the weighted value rows with one ``embedding_bag``.
Its tap arithmetic masks the corners that fall outside their map; that masking and its
temporaries cost several times the gather itself (about 50 ms per encoder layer at 800x1088).
Here every level's map gets a zero border (one pixel before, two after), coordinates are
clamped into the bordered map, and a corner outside the image then reads a zero row: no masks,
no clamps of indices. Queries go in cache-sized chunks, their taps computed slot-major and then
transposed into one bag per (query, head). The result equals the masked form up to float
rounding (a few ulps of the bilinear weights). No autograd: training keeps the masked form and
its own backward.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .fast_ops import linear_into

__all__ = ["padded_value_table", "padded_deformable_sampling", "deformable_attention_inference"]

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
    # Only the border is zeroed: the interior is written once, by the copy.
    table = value.new_empty((b, sum(padded), heads, dim))
    starts, start, first = [], 0, 0
    for (h, w), size in zip(spatial_shapes, padded):
        level = table[:, start : start + size].view(b, h + 3, w + 3, heads, dim)
        level[:, :BEFORE].zero_()
        level[:, BEFORE + h :].zero_()
        rows = level[:, BEFORE : BEFORE + h]
        rows[:, :, :BEFORE].zero_()
        rows[:, :, BEFORE + w :].zero_()
        source = value[:, first : first + h * w].view(b, h, w, heads, dim)
        rows[:, :, BEFORE : BEFORE + w].copy_(source)
        starts.append(start)
        start += size
        first += h * w
    return table.view(-1, dim), starts


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
    dtype = torch.promote_types(sampling_locations.dtype, attention_weights.dtype)
    # Back to pixels of each level (x * W_l, y * H_l), query-major like a projection's output.
    sizes = torch.tensor(
        [[w, h] for h, w in spatial_shapes], dtype=dtype, device=sampling_locations.device
    )
    pixels = sampling_locations.to(dtype) * sizes.view(levels, 1, 2)
    table, starts = padded_value_table(value, spatial_shapes)
    taps = _TapLayout(spatial_shapes, starts, heads, points, table.shape[0] // b, value.device)
    out = value.new_empty(b, q, heads * value.shape[-1])
    for image, rows in _query_chunks(b, q, heads, levels, points):
        # (2, L, P, heads, n) and (L * P, heads, n): the slot-major layout of taps.
        xy = pixels[image, rows].permute(4, 2, 3, 1, 0).contiguous()
        weights = attention_weights[image, rows].to(dtype).permute(2, 3, 1, 0)
        weights = weights.reshape(levels * points, heads, -1)
        out[image, rows] = taps.gather(table, image, xy, weights)
    return out


# Queries per chunk: the chunk's taps (index and weight, 4 * L * P per query and head) stay
# within a few MB, so they are computed and read while still in the core's cache and every
# temporary is recycled by the allocator instead of being fresh memory (a page fault per 4 KiB).
CHUNK_TAPS = 2**19


def _query_chunks(batch: int, queries: int, heads: int, levels: int, points: int):
    """(image, slice of queries) pieces of at most CHUNK_TAPS taps each, image by image."""
    step = max(1, CHUNK_TAPS // (heads * levels * points * 4))
    for image in range(batch):
        for first in range(0, queries, step):
            yield image, slice(first, min(queries, first + step))


class _TapLayout:
    """The per-level constants of the bilinear taps into a zero-bordered table.

    Taps are computed slot-major: arrays (L, ..., heads, n) whose last two dimensions are one
    long contiguous run, so that every elementwise pass is a plain vector loop and per-level
    constants broadcast from the leading dimension.
    """

    def __init__(self, spatial_shapes, starts, heads, points, rows_per_image, device):
        levels = len(spatial_shapes)
        shape = (levels, 1, 1, 1)
        f32, i32 = torch.float32, torch.int32
        self.heads, self.levels, self.points = heads, levels, points
        self.rows_per_image = rows_per_image
        self.size = [
            torch.tensor([w for _, w in spatial_shapes], dtype=f32, device=device).view(shape),
            torch.tensor([h for h, _ in spatial_shapes], dtype=f32, device=device).view(shape),
        ]
        padded_width = torch.tensor(
            [w + BEFORE + AFTER for _, w in spatial_shapes], dtype=i32, device=device
        )
        self.padded_width = padded_width.view(shape)
        # Row of the top-left tap at padded pixel (0, 0): start_l * heads + head.
        start = torch.tensor(starts, dtype=i32, device=device).view(levels, 1, 1, 1) * heads
        self.base = start + torch.arange(heads, dtype=i32, device=device).view(1, 1, heads, 1)
        # Rows of the four corners relative to the top-left one, (y, x) order: (L, 2, 2, 1, 1, 1).
        row = padded_width * heads
        corners = torch.stack(
            [torch.zeros_like(row), torch.full_like(row, heads), row, row + heads]
        )
        self.corners = corners.t().reshape(levels, 2, 2, 1, 1, 1)

    def _axis(self, pixel: torch.Tensor, size: torch.Tensor):
        """pixel (L, P, heads, n) position in pixels of the level -> (first padded pixel int32,
        fraction toward the next), clamped so that both taps stay inside the border."""
        pix = torch.add(pixel, BEFORE - 0.5).clamp_(min=0.0)
        pix = torch.minimum(pix, size + BEFORE, out=pix)
        low = pix.to(torch.int32)
        return low, pix.sub_(low)

    def gather(self, table, image, xy, weights) -> torch.Tensor:
        """table (rows, D); xy (2, L, P, heads, n) sampling positions in pixels; weights
        (L * P, heads, n) attention -> (n, heads * D) in the table's dtype."""
        levels, points, heads = self.levels, self.points, self.heads
        n = xy.shape[-1]
        x0, fx = self._axis(xy[0], self.size[0])
        y0, fy = self._axis(xy[1], self.size[1])
        base = self.base + image * self.rows_per_image  # (L, 1, heads, 1): this image's rows
        top_left = y0.mul_(self.padded_width).add_(x0).mul_(heads).add_(base)
        index = top_left.new_empty((levels, 2, 2, points, heads, n))
        torch.add(top_left.unsqueeze(1).unsqueeze(1), self.corners, out=index)
        attn = weights.view(levels, 1, points, heads, n)
        # Bilinear weights; a * (1 - f) is written a - a * f, one product fewer per pair.
        weight = torch.empty((levels, 2, 2, points, heads, n), dtype=fx.dtype, device=fx.device)
        by_row = torch.empty((levels, 2, points, heads, n), dtype=fx.dtype, device=fx.device)
        torch.mul(attn, fy.unsqueeze(1), out=by_row[:, 1:])
        torch.sub(attn, by_row[:, 1:], out=by_row[:, :1])
        torch.mul(by_row, fx.unsqueeze(1), out=weight[:, :, 1])
        torch.sub(by_row, weight[:, :, 1], out=weight[:, :, 0])
        # One bag per (query, head): the taps become the rows' contiguous runs.
        taps = levels * 4 * points
        index = _bag_rows(index, taps, heads, n)
        weight = _bag_rows(weight.to(table.dtype), taps, heads, n)
        out = F.embedding_bag(index, table, mode="sum", per_sample_weights=weight)
        return out.view(n, heads * table.shape[1])


def _bag_rows(slots: torch.Tensor, taps: int, heads: int, n: int) -> torch.Tensor:
    """(taps, heads, n) slot-major -> (n * heads, taps): one bag of taps per (query, head)."""
    return slots.view(taps, heads, n).permute(2, 1, 0).reshape(n * heads, taps)


def deformable_attention_inference(
    hidden_states: torch.Tensor,
    position_embeddings: torch.Tensor,
    value: torch.Tensor,
    reference_points: torch.Tensor,
    spatial_shapes: Sequence[Tuple[int, int]],
    sampling_offsets: nn.Linear,
    attention_weights: nn.Linear,
    points: int,
    need_weights: bool,
    output_proj: nn.Linear,
    residual: Optional[torch.Tensor] = None,
    into_residual: bool = False,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Multi-scale deformable attention with its output projection, for inference.

    Query projections, softmax and taps go chunk by chunk of queries: the offset and attention
    projections are one matrix product whose output is already slot-major (its weight rows are
    reordered), so no permuted copies are needed, and every temporary stays cache-sized.

    Args:
        hidden_states, position_embeddings: (B, Q, C); the queries are their sum.
        value: (B, S, heads, D) projected values.
        reference_points: (B, Q, L, 2) normalized x, y.
        sampling_offsets: Linear C -> heads * L * P * 2 (pixels of each level).
        attention_weights: Linear C -> heads * L * P (logits, softmax over L * P).
        output_proj: Linear heads * D -> C, applied chunk by chunk.
        residual: optional (B, Q, C) added after the projection (``residual + proj``).
        into_residual: write the sum into ``residual`` itself. It may be ``hidden_states``:
            a chunk reads its own rows of it (after the value table is made) before writing
            them.
    Returns:
        (B, Q, C) in value's dtype, and the attention weights (B, Q, heads, L, P) in float32
        when ``need_weights``.
    """
    b, q, _ = hidden_states.shape
    heads, levels = value.shape[2], len(spatial_shapes)
    slots = levels * points
    weight, bias = _slot_major_projection(sampling_offsets, attention_weights, heads, slots)
    table, starts = padded_value_table(value, spatial_shapes)
    taps = _TapLayout(spatial_shapes, starts, heads, points, table.shape[0] // b, value.device)
    sizes = torch.tensor([[w, h] for h, w in spatial_shapes], device=value.device)
    if into_residual and residual is not None:
        out = residual
    else:
        out = value.new_empty(b, q, output_proj.out_features)
    # float32 even for a bfloat16 model: a bfloat16 x of ~100 pixels is good to half a pixel.
    work = torch.promote_types(hidden_states.dtype, torch.float32)
    weights_out = None
    if need_weights:
        weights_out = value.new_empty((b, q, heads, levels, points), dtype=work)
    for image, rows in _query_chunks(b, q, heads, levels, points):
        queries = hidden_states[image, rows] + position_embeddings[image, rows]  # (n, C)
        proj = torch.addmm(bias, weight, queries.t()).to(work)  # (3 * L * P * heads, n)
        n = proj.shape[1]
        # Reference points in pixels of each level, (2, L, 1, 1, n).
        ref = reference_points[image, rows].to(work) * sizes
        xy = proj[: 2 * slots * heads].view(2, levels, points, heads, n)
        xy = xy + ref.permute(2, 1, 0).reshape(2, levels, 1, 1, n)
        attn = proj[2 * slots * heads :].view(slots, heads, n).softmax(0)
        if weights_out is not None:
            weights_out[image, rows] = attn.view(levels, points, heads, n).permute(3, 2, 0, 1)
        # Projected straight into the output rows; the same product and sum as
        # ``residual + output_proj(sampled)``, only while the chunk is in cache.
        target = out[image, rows]
        sampled = taps.gather(table, image, xy, attn)
        if out is residual:
            target.add_(output_proj(sampled))
            continue
        linear_into(sampled, output_proj, target)
        if residual is not None:
            target.add_(residual[image, rows])
    return out, weights_out


def _slot_major_projection(
    sampling_offsets: nn.Linear, attention_weights: nn.Linear, heads: int, slots: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Both projections as one (3 * slots * heads, C) weight and (.., 1) bias whose rows are
    ordered (x | y | logit, level, point, head), from the checkpoints' (head, level, point, xy)
    and (head, level, point) orders."""
    channels = sampling_offsets.in_features
    off_w = sampling_offsets.weight.view(heads, slots, 2, channels).permute(2, 1, 0, 3)
    off_b = sampling_offsets.bias.view(heads, slots, 2).permute(2, 1, 0)
    att_w = attention_weights.weight.view(heads, slots, channels).transpose(0, 1)
    att_b = attention_weights.bias.view(heads, slots).t()
    weight = torch.cat((off_w.reshape(-1, channels), att_w.reshape(-1, channels)))
    bias = torch.cat((off_b.reshape(-1), att_b.reshape(-1)))
    return weight, bias[:, None]
