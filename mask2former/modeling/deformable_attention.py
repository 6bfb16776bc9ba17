"""Multi-scale deformable attention (Zhu et al., Deformable DETR), as used by the pixel decoder.

Each query looks at ``n_points`` learned sampling locations around its reference point in each of
``n_levels`` feature maps, per head, and mixes the bilinearly sampled values with softmax
weights. Attribute names follow the checkpoint keys ``...encoder.layers.{n}.self_attn.*``.
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MultiscaleDeformableAttention", "multi_scale_deformable_attention"]


def multi_scale_deformable_attention(
    value: torch.Tensor,
    spatial_shapes: Sequence[Tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Sample and mix values at fractional locations.

    Args:
        value: (B, S, heads, D) values of all levels, flattened and concatenated
            (S = sum of H_l * W_l).
        spatial_shapes: (H_l, W_l) of each level, in the order of ``value``.
        sampling_locations: (B, Q, heads, L, P, 2) x, y in [0, 1] image coordinates.
        attention_weights: (B, Q, heads, L, P), summing to 1 over (L, P).
    Returns:
        (B, Q, heads * D)
    """
    b, _, heads, dim = value.shape
    _, q, _, levels, points, _ = sampling_locations.shape
    # grid_sample takes [-1, 1] coordinates; with align_corners=False that matches the [0, 1]
    # convention where 0 and 1 are the outer edges of the border pixels.
    grids = (2 * sampling_locations - 1).transpose(1, 2).flatten(0, 1)  # (B*heads, Q, L, P, 2)
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
    weights = attention_weights.transpose(1, 2).reshape(b * heads, 1, q, levels * points)
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
        angles = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([angles.cos(), angles.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True)[0]
        grid = grid.view(self.n_heads, 1, 1, 2).repeat(1, self.n_levels, self.n_points, 1)
        grid = grid * torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        self.sampling_offsets.bias.copy_(grid.flatten())
        self.attention_weights.weight.zero_()
        self.attention_weights.bias.zero_()

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: torch.Tensor,
        reference_points: torch.Tensor,
        spatial_shapes: List[Tuple[int, int]],
        padding_mask: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            hidden_states: (B, S, C) flattened features of all levels.
            position_embeddings: (B, S, C), added to the queries (not the values).
            reference_points: (B, S, L, 2) normalized x, y of each query in each level.
            spatial_shapes: (H_l, W_l) per level.
            padding_mask: optional (B, S) bool, True where a value is padding (zeroed).
        Returns:
            output (B, S, C) and attention weights (B, S, heads, L, P).
        """
        b, s, _ = hidden_states.shape
        queries = hidden_states + position_embeddings
        value = self.value_proj(hidden_states)
        if padding_mask is not None:
            value = value.masked_fill(padding_mask[..., None], 0.0)
        value = value.view(b, s, self.n_heads, -1)
        offsets = self.sampling_offsets(queries).view(
            b, s, self.n_heads, self.n_levels, self.n_points, 2
        )
        weights = self.attention_weights(queries).view(b, s, self.n_heads, -1).softmax(-1)
        weights = weights.view(b, s, self.n_heads, self.n_levels, self.n_points)
        # Offsets are in pixels of each level; normalize by (W_l, H_l).
        normalizer = torch.tensor(
            [[w, h] for h, w in spatial_shapes], dtype=offsets.dtype, device=offsets.device
        )
        locations = reference_points[:, :, None, :, None, :] + offsets / normalizer[:, None, :]
        out = multi_scale_deformable_attention(value, spatial_shapes, locations, weights)
        return self.output_proj(out), weights
