"""Swin's patch embedding: non-overlapping ``patch`` x ``patch`` pixel blocks -> ``dim`` channels,
then a layer norm. Attribute names follow the checkpoint keys ``...embeddings.*``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .exporting import is_exporting

__all__ = ["SwinEmbeddings", "SwinPatchEmbeddingsProjection"]


class SwinPatchEmbeddingsProjection(nn.Module):
    def __init__(self, in_channels: int, dim: int, patch: int):
        super().__init__()
        self.patch = patch
        self.projection = nn.Conv2d(in_channels, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, H/patch, W/patch, dim), channels last; the image is zero-padded
        on the bottom and right to whole patches (see SwinBlock)."""
        h, w = x.shape[-2:]
        p = self.patch
        hp, wp = (h + p - 1) // p * p, (w + p - 1) // p * p
        if is_exporting():  # one graph for padded and unpadded sizes
            return self.projection(F.pad(x, (0, wp - w, 0, hp - h))).permute(0, 2, 3, 1)
        if hp != h or wp != w:
            x = F.pad(x, (0, wp - w, 0, hp - h))
        # The stride-``patch`` convolution is one matrix product over the patches laid out as
        # rows of (channel, row, column) values, the order of the kernel's weights. oneDNN's
        # convolution with 3 input channels is slow, in bfloat16 especially (800x1088: 15.7
        # against 3 ms, patches copied included), and its output would need a channels-last
        # copy anyway.
        b, c = x.shape[:2]
        conv = self.projection
        patches = x.reshape(b, c, hp // p, p, wp // p, p).permute(0, 2, 4, 1, 3, 5)
        rows = F.linear(
            patches.reshape(-1, c * p * p), conv.weight.reshape(conv.out_channels, -1), conv.bias
        )
        return rows.view(b, hp // p, wp // p, conv.out_channels)


class SwinEmbeddings(nn.Module):
    def __init__(self, in_channels: int, dim: int, patch: int):
        super().__init__()
        self.patch_embeddings = SwinPatchEmbeddingsProjection(in_channels, dim, patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, H/patch, W/patch, dim), channels last."""
        return self.norm(self.patch_embeddings(pixel_values))
