"""Multi-scale deformable attention (Zhu et al., Deformable DETR), as used by the pixel decoder.

Each query looks at ``n_points`` learned sampling locations around its reference point in each of
``n_levels`` feature maps, per head, and mixes the bilinearly sampled values with softmax
weights. Attribute names follow the checkpoint keys ``...encoder.layers.{n}.self_attn.*``.
"""

from __future__ import annotations

import math
import warnings
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .deformable_gather import deformable_attention_inference
from .exporting import is_exporting

__all__ = [
    "MultiscaleDeformableAttention",
    "multi_scale_deformable_attention",
    "multi_scale_deformable_attention_grid_sample",
]


def multi_scale_deformable_attention(
    value: torch.Tensor,
    spatial_shapes: Sequence[Tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Sample and mix values at fractional locations (bilinear, zeros outside the map).

    One weighted gather over all levels: every sampling point becomes its four bilinear corner
    taps, each with weight attention * bilinear weight (0 outside the map), and
    ``F.embedding_bag(mode="sum")`` sums the weighted value rows per (batch, query, head). This
    never builds the (B*heads, D, Q, L*P) tensor of sampled values that a grid_sample
    formulation needs, and the result comes out directly in the (B, Q, heads * D) layout.
    Gradients flow to ``value``, ``attention_weights`` and (through the bilinear weights)
    ``sampling_locations``, as with grid_sample; the gather's own backward
    (:class:`_WeightedRowSum`) makes a training step's deformable attention about 1.5x faster
    than autograd through grid_sample on the CPU.

    Args:
        value: (B, S, heads, D) values of all levels, flattened and concatenated
            (S = sum of H_l * W_l).
        spatial_shapes: (H_l, W_l) of each level, in the order of ``value``.
        sampling_locations: (B, Q, heads, L, P, 2) x, y in [0, 1] image coordinates (0 and 1
            are the outer edges of the border pixels); float32 recommended whatever the value
            dtype, since a bfloat16 coordinate is off by up to half a pixel on a 100-wide map.
        attention_weights: (B, Q, heads, L, P), summing to 1 over (L, P).
    Returns:
        (B, Q, heads * D) in value's dtype.
    """
    b, s, heads, dim = value.shape
    _, q, _, levels, points, _ = sampling_locations.shape
    index, weight = bilinear_taps(spatial_shapes, sampling_locations, attention_weights, s)
    # Row r of the table is value[b, s, h] with r = (b * S + s) * heads + h: a free view.
    table = value.reshape(b * s * heads, dim)
    index = index.view(b * q * heads, levels * points * 4)
    weight = weight.view(b * q * heads, -1).to(table.dtype)
    if torch.is_grad_enabled() and (table.requires_grad or weight.requires_grad):
        out = _WeightedRowSum.apply(table, index, weight)
    else:
        out = F.embedding_bag(index, table, mode="sum", per_sample_weights=weight)
    return out.view(b, q, heads * dim)  # from (B * Q * heads, D)


class _WeightedRowSum(torch.autograd.Function):
    """``out[n] = sum_t weight[n, t] * table[index[n, t]]``: embedding_bag's forward with a
    backward of its own.

    embedding_bag's own backward sorts every tap and scatters through a generic path that is
    several times slower than the forward pass. Here the weight gradient (one dot product per
    tap) is a sampled dense-dense product on the taps' sparsity pattern, and the table gradient
    is the transposed gather: taps sorted once by table row, then one more embedding_bag over
    the output gradient.
    """

    @staticmethod
    def forward(ctx, table: torch.Tensor, index: torch.Tensor, weight: torch.Tensor):
        ctx.save_for_backward(table, index, weight)
        return F.embedding_bag(index, table, mode="sum", per_sample_weights=weight)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        table, index, weight = ctx.saved_tensors
        bags, taps = index.shape
        rows = table.shape[0]
        # bilinear_taps gives int32 rows whenever they fit: kept as they are, they serve as
        # CSR column indices and as sort keys without a copy (a 32-bit stable sort takes about
        # half the time of an int64 one).
        flat = index.reshape(-1)
        if flat.numel() >= 2**31:  # the CSR row pointers must hold the tap count
            flat = flat.long()
        grad = grad.contiguous()
        grad_table = grad_weight = None
        if ctx.needs_input_grad[2]:
            # sampled_addmm has no bfloat16 / float16 kernel on the CPU.
            work = torch.promote_types(grad.dtype, torch.float32)
            crow = torch.arange(0, bags * taps + 1, taps, device=grad.device, dtype=flat.dtype)
            with warnings.catch_warnings():  # "sparse CSR support is in beta"
                warnings.simplefilter("ignore", UserWarning)
                pattern = torch.sparse_csr_tensor(
                    crow, flat, grad.new_zeros(bags * taps, dtype=work), size=(bags, rows)
                )
                grad_weight = torch.sparse.sampled_addmm(
                    pattern, grad.to(work), table.t().to(work), beta=0.0
                )
            grad_weight = grad_weight.values().view(bags, taps).to(weight.dtype)
        if ctx.needs_input_grad[0]:
            sorted_rows, order = torch.sort(flat, stable=True)
            starts = torch.zeros(rows, dtype=torch.int64, device=grad.device)
            starts[1:] = torch.bincount(sorted_rows, minlength=rows).cumsum(0)[:-1]
            # Gathered before ``order`` is divided in place below.
            tap_weight = weight.reshape(-1)[order]
            grad_table = F.embedding_bag(
                order.div_(taps, rounding_mode="floor"),  # tap -> its bag
                grad,
                starts,
                mode="sum",
                per_sample_weights=tap_weight,
            )
        return grad_table, None, grad_weight


def _axis_taps(
    coord: torch.Tensor, size: int, itype: torch.dtype
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Both bilinear neighbours along one axis of one level.

    coord: (...) normalized coordinate in [0, 1] for a map ``size`` pixels long.
    Returns clamped pixel indices (k0, k1) and their weights (w0, w1), 0 outside the map.
    """
    pix = coord * size - 0.5  # pixel centres sit on integers (align_corners=False)
    low = pix.floor()
    frac = pix - low
    k0 = low.to(itype)
    w0 = (1 - frac) * ((k0 >= 0) & (k0 < size))
    w1 = frac * ((k0 >= -1) & (k0 < size - 1))
    return k0.clamp(0, size - 1), (k0 + 1).clamp(0, size - 1), w0, w1


def bilinear_taps(
    spatial_shapes: Sequence[Tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    total: int,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Table rows and weights of the four bilinear corners of every sampling point.

    Args:
        spatial_shapes: (H_l, W_l) per level; ``total`` = sum of H_l * W_l.
        sampling_locations: (B, Q, heads, L, P, 2) normalized x, y.
        attention_weights: (B, Q, heads, L, P).
    Returns:
        index (B, Q, heads, L * 4 * P), int32 where it fits: row ``(b * S + s) * heads + h``
        of the value table; weight, the same shape, in the locations' dtype (promoted with the
        attention weights). Corners outside their map get weight 0 and a clamped, valid row.
    """
    b, q, heads, levels, points, _ = sampling_locations.shape
    device = sampling_locations.device
    dtype = torch.promote_types(sampling_locations.dtype, attention_weights.dtype)
    itype = torch.int32 if b * total * heads < 2**31 else torch.int64
    # Level-major, contiguous (B, Q, heads, P) slices: every operation below then runs on long
    # contiguous arrays with Python-scalar level constants. (Broadcasting per-level constants
    # over the trailing (L, P, 2) dimensions made this index arithmetic cost several times the
    # gather itself.)
    locs = sampling_locations.to(dtype).permute(5, 3, 0, 1, 2, 4).contiguous()  # (2, L, ...)
    attn = attention_weights.to(dtype).permute(3, 0, 1, 2, 4).contiguous()  # (L, B, Q, h, P)
    head_row = torch.arange(b, device=device, dtype=itype)[:, None] * (total * heads)
    head_row = head_row + torch.arange(heads, device=device, dtype=itype)  # (B, heads)
    head_row = head_row[:, None, :, None]  # (B, 1, heads, 1)
    # (B, Q, heads, L * 4, P): each (batch, query, head) bag is one contiguous row. The indices
    # are written in place (torch.stack has no fast kernel for integers); the weights are
    # stacked so that autograd sees them.
    index = torch.empty((b, q, heads, levels * 4, points), dtype=itype, device=device)
    weights = []
    start = 0
    for level, (height, width) in enumerate(spatial_shapes):
        x0, x1, wx0, wx1 = _axis_taps(locs[0, level], width, itype)
        y0, y1, wy0, wy1 = _axis_taps(locs[1, level], height, itype)
        wy0 = wy0 * attn[level]
        wy1 = wy1 * attn[level]
        base = head_row + start * heads
        r0 = y0 * (width * heads) + base
        r1 = y1 * (width * heads) + base
        x0, x1 = x0 * heads, x1 * heads
        for k, (r, x) in enumerate(((r0, x0), (r0, x1), (r1, x0), (r1, x1))):
            torch.add(r, x, out=index[:, :, :, 4 * level + k])
        weights += [wy0 * wx0, wy0 * wx1, wy1 * wx0, wy1 * wx1]
        start += height * width
    weight = torch.stack(weights, dim=3)
    return index.view(b, q, heads, -1), weight.view(b, q, heads, -1)


def multi_scale_deformable_attention_grid_sample(
    value: torch.Tensor,
    spatial_shapes: Sequence[Tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """The straightforward per-level grid_sample formulation of
    :func:`multi_scale_deformable_attention` (same arguments and result); slower and more
    memory hungry on the CPU. It is the training path on other devices, and the plain path
    that tests compare the gather against."""
    b, _, heads, dim = value.shape
    _, q, _, levels, points, _ = sampling_locations.shape
    # grid_sample takes [-1, 1] coordinates; with align_corners=False that matches the [0, 1]
    # convention where 0 and 1 are the outer edges of the border pixels.
    grids = (2 * sampling_locations.to(value.dtype) - 1).transpose(1, 2).flatten(0, 1)
    per_level = value.split([h * w for h, w in spatial_shapes], dim=1)
    sampled = []
    for level, (h, w) in enumerate(spatial_shapes):
        v = per_level[level].permute(0, 2, 3, 1).reshape(b * heads, dim, h, w)
        sampled.append(
            F.grid_sample(
                v, grids[:, :, level], mode="bilinear", padding_mode="zeros", align_corners=False
            )
        )  # (B*heads, D, Q, P)
    stacked = torch.stack(sampled, dim=-2).flatten(-2)  # (B*heads, D, Q, L*P)
    weights = attention_weights.to(value.dtype).transpose(1, 2)
    weights = weights.reshape(b * heads, 1, q, levels * points)
    out = (stacked * weights).sum(-1)  # (B*heads, D, Q)
    return out.view(b, heads * dim, q).transpose(1, 2)


class MultiscaleDeformableAttention(nn.Module):
    """Deformable self-attention over the flattened multi-scale feature maps."""

    def __init__(self, embed_dim: int, num_heads: int, n_levels: int, n_points: int):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide embed_dim={embed_dim}")
        self.embed_dim = embed_dim
        self.n_heads = num_heads
        self.n_levels = n_levels
        self.n_points = n_points
        self.sampling_offsets = nn.Linear(embed_dim, num_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(embed_dim, num_heads * n_levels * n_points)
        self.value_proj = nn.Linear(embed_dim, embed_dim)
        self.output_proj = nn.Linear(embed_dim, embed_dim)

    @torch.no_grad()
    def reset_sampling_parameters(self) -> None:
        """The Deformable DETR start: head h samples along direction 2*pi*h/heads, point p at
        distance p+1; uniform attention over points."""
        self.sampling_offsets.weight.zero_()
        # In float64: cos(pi/2) is then 6e-17 rather than -4e-8, so the directions are
        # symmetric to float32 precision (their mean is 0, as the exact start's).
        angles = torch.arange(self.n_heads, dtype=torch.float64) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([angles.cos(), angles.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True)[0]
        grid = grid.view(self.n_heads, 1, 1, 2).repeat(1, self.n_levels, self.n_points, 1)
        grid = grid * torch.arange(1, self.n_points + 1, dtype=torch.float64).view(1, 1, -1, 1)
        self.sampling_offsets.bias.copy_(grid.flatten())
        self.attention_weights.weight.zero_()
        self.attention_weights.bias.zero_()

    def _inference(
        self, inputs: tuple, need_weights: bool, residual, into_residual: bool
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The chunked inference form (``deformable_gather``) of :meth:`forward`."""
        out, weights = deformable_attention_inference(
            *inputs,
            self.sampling_offsets,
            self.attention_weights,
            self.n_points,
            need_weights,
            self.output_proj,
            residual,
            into_residual,
        )
        return out, None if weights is None else weights.to(inputs[0].dtype)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: torch.Tensor,
        reference_points: torch.Tensor,
        spatial_shapes: List[Tuple[int, int]],
        padding_mask: Optional[torch.Tensor] = None,
        need_weights: bool = True,
        residual: Optional[torch.Tensor] = None,
        into_residual: bool = False,
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """
        Args:
            hidden_states: (B, S, C) flattened features of all levels.
            position_embeddings: (B, S, C), added to the queries (not the values).
            reference_points: (B, S, L, 2) normalized x, y of each query in each level.
            spatial_shapes: (H_l, W_l) per level.
            padding_mask: optional (B, S) bool, True where a value is padding (zeroed).
            need_weights: False returns None for the attention weights.
            residual: optional (B, S, C) added to the output (inference adds it chunk by chunk
                while the projected rows are still in cache).
            into_residual: without autograd, write that sum into ``residual`` itself (which
                may be ``hidden_states``; the caller must not need it afterwards).
        Returns:
            output (B, S, C) (plus residual) and attention weights (B, S, heads, L, P) or None.
        """
        b, s, _ = hidden_states.shape
        value = self.value_proj(hidden_states)
        if padding_mask is not None:
            value = value.masked_fill(padding_mask[..., None], 0.0)
        value = value.view(b, s, self.n_heads, -1)
        heads, levels, points = self.n_heads, self.n_levels, self.n_points
        if not (torch.is_grad_enabled() or is_exporting()):
            inputs = hidden_states, position_embeddings, value, reference_points, spatial_shapes
            return self._inference(inputs, need_weights, residual, into_residual)
        queries = hidden_states + position_embeddings
        work = torch.promote_types(hidden_states.dtype, torch.float32)
        # Locations and softmax in float32 even for a bfloat16 model: a bfloat16 x of ~100
        # pixels is only good to half a pixel. Both are computed level-major, (2, L, B, S,
        # heads, P) and (L * P, B, S, heads), the layouts bilinear_taps works in: a softmax
        # over a short last dimension is several times slower than over the leading one.
        offsets = self.sampling_offsets(queries).view(b, s, heads, levels, points, 2)
        offsets = offsets.permute(5, 3, 0, 1, 2, 4).to(work, memory_format=torch.contiguous_format)
        # Offsets are in pixels of each level; normalize by (W_l, H_l).
        normalizer = torch.tensor(
            [[w for _, w in spatial_shapes], [h for h, _ in spatial_shapes]],
            dtype=work,
            device=offsets.device,
        ).view(2, levels, 1, 1, 1, 1)
        ref = reference_points.to(work).permute(3, 2, 0, 1)[..., None, None]  # (2, L, B, S, 1, 1)
        locations = (ref + offsets / normalizer).permute(2, 3, 4, 1, 5, 0)  # (B, S, h, L, P, 2)
        logits = self.attention_weights(queries).view(b, s, heads, levels * points)
        logits = logits.permute(3, 0, 1, 2).to(work, memory_format=torch.contiguous_format)
        weights = logits.softmax(0).view(levels, points, b, s, heads).permute(2, 3, 4, 0, 1)
        training = torch.is_grad_enabled() and (value.requires_grad or locations.requires_grad)
        if is_exporting() or (training and value.device.type != "cpu"):
            # Exporting: GridSample is a standard ONNX operator (opset 16), embedding_bag is not
            # one and its ONNX form mixes int32 and int64 indices, which onnxruntime refuses.
            # The gather's backward is written for the CPU (measured there); elsewhere autograd
            # through grid_sample is the well-trodden path.
            out = multi_scale_deformable_attention_grid_sample(
                value, spatial_shapes, locations, weights
            )
        else:
            out = multi_scale_deformable_attention(value, spatial_shapes, locations, weights)
        weights = weights.to(hidden_states.dtype) if need_weights else None
        out = self.output_proj(out)
        return (out if residual is None else residual + out), weights
