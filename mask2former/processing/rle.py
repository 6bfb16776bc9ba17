"""``binary_mask_to_rle``: the run-length encoding transformers exports from its Mask2Former
image-processing module (not COCO's compressed RLE: for that see :func:`mask2former.coco.encode_masks`)."""

from __future__ import annotations

from typing import Any, List

import numpy as np

from .transforms import _is_torch_tensor

__all__ = ["binary_mask_to_rle"]


def binary_mask_to_rle(mask: Any) -> List[int]:
    """Runs of a binary mask as a flat list ``[start_1, length_1, start_2, length_2, ...]``.

    ``mask``: (H, W) numpy array or torch tensor (any device), nonzero = inside. Pixels are read
    row by row (row-major, unlike COCO's column-major RLE); a start is the 1-based index of a
    run's first pixel in that order. ``[[0, 1, 1], [1, 0, 0]]`` gives ``[2, 3]``; an empty mask
    gives ``[]``. As in transformers 4.37.2, whose output this matches for 0/1 masks (it returns
    numpy integers, this returns ints).
    """
    if _is_torch_tensor(mask):
        mask = mask.detach().cpu().numpy()
    inside = np.asarray(mask).reshape(-1) != 0
    # A change between neighbours (with a background pixel before and after) starts or ends a run.
    padded = np.concatenate([[False], inside, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])  # 0-based: run starts, then run ends
    starts, ends = edges[0::2], edges[1::2]
    runs = np.empty(2 * len(starts), dtype=np.int64)
    runs[0::2] = starts + 1
    runs[1::2] = ends - starts
    return runs.tolist()
