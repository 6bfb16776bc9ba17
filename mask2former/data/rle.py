"""Temporary: removed when processing/rle.py goes. The COCO codec lives in mask2former.coco;
these names stay importable here only for the modules not yet switched to it
(processing/rle.py: encode_mask; predictor.py and inference/results.py: mask_bbox)."""

from ..coco import encode_mask, mask_bbox

__all__ = ["encode_mask", "mask_bbox"]
