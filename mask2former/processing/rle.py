"""COCO run-length encoding of binary masks, readable by ``pycocotools.mask.decode``.

COCO RLE walks the mask in column-major (Fortran) order and starts with a run of zeros (possibly
empty); ``counts`` is stored compressed as a string. pycocotools is used when it is installed;
otherwise an encoder of our own writes the same strings (it is not a dependency of the package).
"""

from __future__ import annotations

from typing import Any, Dict, List

import numpy as np
import torch

__all__ = ["encode_masks", "mask_to_rle_counts", "compress_counts"]

try:  # optional accelerator
    from pycocotools import mask as _coco_mask
except ImportError:  # pragma: no cover - exercised by forcing the fallback in tests
    _coco_mask = None


def mask_to_rle_counts(mask: np.ndarray) -> List[int]:
    """Uncompressed COCO run lengths of an (H, W) binary mask (column-major, zeros first)."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    # Positions where the value changes, with a virtual 0 before the first pixel.
    padded = np.concatenate([[False], flat, [not flat[-1]] if flat.size else [True]])
    changes = np.flatnonzero(padded[1:] != padded[:-1])
    return np.diff(np.concatenate([[0], changes])).tolist()


def compress_counts(counts: List[int]) -> bytes:
    """The LEB128-like text form of COCO RLE counts (pycocotools' ``rleToString``)."""
    out = bytearray()
    for i, value in enumerate(counts):
        x = int(value)
        if i > 2:  # from the fourth run on, store the difference to the run two before
            x -= int(counts[i - 2])
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            # Arithmetic shift: stop when the rest is the sign extension of bit 4.
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            out.append(c + 48)
    return bytes(out)


def _encode_own(masks: np.ndarray) -> List[Dict[str, Any]]:
    height, width = masks.shape[1:]
    return [
        {"size": [int(height), int(width)], "counts": compress_counts(mask_to_rle_counts(m))}
        for m in masks
    ]


def encode_masks(masks: Any, use_pycocotools: bool = True) -> List[Dict[str, Any]]:
    """One COCO RLE dict ``{"size": [H, W], "counts": bytes}`` per mask of an (N, H, W) stack.

    ``counts`` is the compressed byte string, as ``pycocotools.mask.encode`` returns it (call
    ``.decode()`` on it to store it in JSON).
    """
    if isinstance(masks, torch.Tensor):
        masks = masks.detach().cpu().numpy()
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (N, H, W), got shape {masks.shape}")
    if masks.shape[0] == 0:
        return []
    if _coco_mask is not None and use_pycocotools:
        # pycocotools wants (H, W, N) uint8 in Fortran order: one transposed copy for all masks.
        fortran = np.asfortranarray(masks.astype(np.uint8, copy=False).transpose(1, 2, 0))
        rles = _coco_mask.encode(fortran)
        return [
            {"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"]} for r in rles
        ]
    return _encode_own(masks)
