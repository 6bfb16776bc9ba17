"""Sine position encoding of a 2-D feature map (DETR style, normalized, scale 2*pi)."""

from __future__ import annotations

import math

import torch

__all__ = ["sine_position_encoding"]


def sine_position_encoding(
    batch: int,
    height: int,
    width: int,
    num_pos_feats: int,
    device: torch.device,
    dtype: torch.dtype,
    temperature: float = 10000.0,
) -> torch.Tensor:
    """(B, 2 * num_pos_feats, H, W): y features first, then x; sin/cos interleaved.

    Positions are 1..H and 1..W normalized to (0, 2*pi]. The network does not mask padding, so
    every pixel counts as valid. Computed in float32 and cast, so low-precision runs get the same
    encoding as float32 ones.
    """
    eps = 1e-6
    scale = 2 * math.pi
    y = torch.arange(1, height + 1, dtype=torch.float32, device=device)
    x = torch.arange(1, width + 1, dtype=torch.float32, device=device)
    y = y / (height + eps) * scale
    x = x / (width + eps) * scale
    dim_t = torch.arange(num_pos_feats, dtype=torch.float32, device=device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_pos_feats)
    pos_y = y[:, None] / dim_t  # (H, F)
    pos_x = x[:, None] / dim_t  # (W, F)
    pos_y = torch.stack((pos_y[:, 0::2].sin(), pos_y[:, 1::2].cos()), dim=2).flatten(1)
    pos_x = torch.stack((pos_x[:, 0::2].sin(), pos_x[:, 1::2].cos()), dim=2).flatten(1)
    pos = torch.cat(
        (
            pos_y[:, None, :].expand(height, width, num_pos_feats),
            pos_x[None, :, :].expand(height, width, num_pos_feats),
        ),
        dim=2,
    ).permute(2, 0, 1)
    return pos.to(dtype).unsqueeze(0).expand(batch, -1, -1, -1)
