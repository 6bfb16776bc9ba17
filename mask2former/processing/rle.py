"""COCO run-length encoding of binary masks, readable by ``pycocotools.mask.decode``.

COCO RLE walks the mask in column-major (Fortran) order and starts with a run of zeros (possibly
empty); ``counts`` is stored compressed as a string. pycocotools is used when it is installed;
otherwise :mod:`mask2former.data.rle` (our own codec) writes the same strings; pycocotools is not
a dependency of the package.
"""

from __future__ import annotations

from typing import Any, Dict, List

import numpy as np
import torch

from ..data.rle import encode_mask

__all__ = ["encode_masks"]

try:  # optional accelerator
    from pycocotools import mask as _coco_mask
except ImportError:  # pragma: no cover - exercised by forcing the fallback in tests
    _coco_mask = None


def _encode_own(masks: np.ndarray) -> List[Dict[str, Any]]:
    # The package's own codec (bit-compatible with pycocotools), with bytes counts like it.
    out = []
    for m in masks:
        rle = encode_mask(m)
        out.append({"size": rle["size"], "counts": rle["counts"].encode("ascii")})
    return out


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
