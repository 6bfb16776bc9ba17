"""Coarse-to-fine evaluation of 4x bilinearly upsampled mask logits.

Post-processing works on mask logits upsampled 4x (bilinear, align_corners=False) to the network
input size. Most decisions there (which query wins a pixel, which pixels pass a threshold) are the
same over large regions, so we cut the input into square tiles of ``4k`` pixels, bound every
upsampled logit of a tile from the low-resolution logits, decide whole tiles from the bounds, and
evaluate pixels exactly only in the undecided tiles.

Why the bounds hold: every upsampled value is a convex combination of (at most) 2x2 neighbouring
low-resolution values, and the pixels of tile ``t`` (rows ``4kt .. 4k(t+1)-1``) only read low-res
rows ``kt-1 .. k(t+1)`` (clamped to the map), so the min/max over that window bound the tile.
The exact values of a tile come from the same window: with replicate padding of one row/column
(the clamping of the bilinear kernel at the border), ``A @ window @ A.T`` with a fixed (4k, k+2)
interpolation matrix ``A`` gives the tile's upsampled logits, equal to ``F.interpolate``'s up to
float rounding (one ulp).
"""

from __future__ import annotations

from typing import Dict, Tuple

import torch
import torch.nn.functional as F

__all__ = ["TiledLogits", "upsample4"]

_MATRICES: Dict[Tuple[int, torch.dtype, torch.device], torch.Tensor] = {}


def upsample4(logits: torch.Tensor) -> torch.Tensor:
    """(K, h, w) -> (K, 4h, 4w): bilinear, align_corners=False (the network input size)."""
    h, w = logits.shape[-2:]
    return F.interpolate(logits[None], size=(4 * h, 4 * w), mode="bilinear", align_corners=False)[0]


def _interp_matrix(k: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(4k, k+2) weights of one tile's 4k output rows over its k+2 padded low-res rows."""
    key = (k, dtype, device)
    if key not in _MATRICES:
        # Local output j sits at padded-window coordinate (j + 4 + 0.5) / 4 - 0.5.
        src = (torch.arange(4 * k, dtype=torch.float64) + 4.5) / 4 - 0.5
        i0 = src.floor().long()
        lam = src - i0
        mat = torch.zeros(4 * k, k + 2, dtype=torch.float64)
        rows = torch.arange(4 * k)
        mat[rows, i0] = 1 - lam
        mat[rows, i0 + 1] = lam
        _MATRICES[key] = mat.to(dtype=dtype, device=device)
    return _MATRICES[key]


class TiledLogits:
    """Tile bounds and exact tile evaluation of the 4x upsampled logits of a (K, h, w) stack,
    restricted to the top-left ``crop`` (height, width) of the upsampled map.

    Attributes: ``lo``/``hi`` (K, Th, Tw) bounds of each tile's upsampled logits; ``counts``
    (Th, Tw) number of the tile's pixels inside the crop; ``tile`` = 4k pixels per tile side.
    """

    def __init__(
        self, logits: torch.Tensor, crop: Tuple[int, int], k: int = 4, bounds: bool = True
    ) -> None:
        num, h, w = logits.shape
        self.k, self.tile, self.crop = k, 4 * k, crop
        ch, cw = crop
        th, tw = -(-ch // self.tile), -(-cw // self.tile)  # tiles touching the crop
        self.shape = (th, tw)
        # Replicate padding: one row/column for the kernel's clamping at the border, more to
        # complete the last tiles (whose extra pixels lie outside the crop).
        pad_b, pad_r = th * k + 1 - h, tw * k + 1 - w
        if num == 0:  # F.pad refuses empty inputs
            self.padded = logits.new_zeros((0, th * k + 2, tw * k + 2))
        else:
            self.padded = F.pad(
                logits[None], (1, max(pad_r, 0), 1, max(pad_b, 0)), mode="replicate"
            )[0]
            self.padded = self.padded[:, : th * k + 2, : tw * k + 2]
        self.windows = self.padded.unfold(1, k + 2, k).unfold(2, k + 2, k)  # (K,Th,Tw,k+2,k+2)
        if bounds:  # (not needed when only exact tiles are wanted)
            self.lo, self.hi = self._bounds(num, th, tw)
        rows = (ch - torch.arange(th, device=logits.device) * self.tile).clamp(max=self.tile)
        cols = (cw - torch.arange(tw, device=logits.device) * self.tile).clamp(max=self.tile)
        self.counts = rows[:, None] * cols[None, :]

    def _bounds(self, num: int, th: int, tw: int) -> Tuple[torch.Tensor, torch.Tensor]:
        # Min/max over overlapping (k+2)-wide windows with stride k (a window's min/max is
        # separable). Elementwise ops on k+2 views are much faster on CPU than reductions over
        # tiny inner dimensions; rows go first so the big ops read whole contiguous rows.
        k = self.k

        def window(x: torch.Tensor, dim: int, count: int, op) -> torch.Tensor:
            views = [x.narrow(dim, j, (count - 1) * k + 1) for j in range(k + 2)]
            out = views[0].unfold(dim, 1, k).squeeze(-1)
            for v in views[1:]:
                out = op(out, v.unfold(dim, 1, k).squeeze(-1))
            return out

        out = []
        for op in (torch.minimum, torch.maximum):
            rows = window(self.padded, 1, th, op)  # (K, Th, W+2)
            # Columns on a transposed copy (a quarter of the size) to keep rows contiguous.
            cols = window(rows.transpose(1, 2).contiguous(), 1, tw, op)  # (K, Tw, Th)
            out.append(cols.transpose(1, 2))
        return out[0], out[1]

    def tiles(self, ty: torch.Tensor, tx: torch.Tensor) -> torch.Tensor:
        """Exact upsampled logits of tiles (ty, tx) for every query: (N, K, 4k, 4k)."""
        win = self.windows[:, ty, tx].transpose(0, 1)  # (N, K, k+2, k+2)
        mat = _interp_matrix(self.k, win.dtype, win.device)
        return mat @ win @ mat.T

    def pair_tiles(self, q: torch.Tensor, ty: torch.Tensor, tx: torch.Tensor) -> torch.Tensor:
        """Exact upsampled logits of (query, tile) pairs: (M, 4k, 4k)."""
        win = self.windows[q, ty, tx]
        mat = _interp_matrix(self.k, win.dtype, win.device)
        return mat @ win @ mat.T

    def clip_to_crop(self, patches: torch.Tensor, ty: torch.Tensor, tx: torch.Tensor) -> None:
        """Zero (in place) the pixels of (N, [K,] 4k, 4k) bool patches lying outside the crop."""
        th, tw = self.shape
        border = ((ty == th - 1) | (tx == tw - 1)).nonzero()[:, 0]
        if len(border):
            inside = self.inside(ty[border], tx[border])
            patches[border] &= inside if patches.dim() == 3 else inside[:, None]

    def inside(self, ty: torch.Tensor, tx: torch.Tensor) -> torch.Tensor:
        """(N, 4k, 4k) bool: which pixels of tiles (ty, tx) lie inside the crop."""
        r = torch.arange(self.tile, device=ty.device)
        rows = ty[:, None] * self.tile + r < self.crop[0]
        cols = tx[:, None] * self.tile + r < self.crop[1]
        return rows[:, :, None] & cols[:, None, :]

    def assemble(
        self, per_tile: torch.Tensor, ty: torch.Tensor, tx: torch.Tensor, patches: torch.Tensor
    ) -> torch.Tensor:
        """Crop-sized map from one value per tile (Th, Tw), overwritten by exact ``patches``
        (N, 4k, 4k) at tiles (ty, tx)."""
        th, tw = self.shape
        t = self.tile
        canvas = per_tile[:, None, :, None].expand(th, t, tw, t).reshape(th * t, tw * t).clone()
        if patches.shape[0]:
            view = canvas.view(th, t, tw, t).permute(0, 2, 1, 3)
            view[ty, tx] = patches.to(canvas.dtype)
        return canvas[: self.crop[0], : self.crop[1]]
