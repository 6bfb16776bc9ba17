"""Image processing: preprocessing, label encoding, post-processing, COCO RLE and transformers'
row-major run lengths (``binary_mask_to_rle``)."""

from ..coco import encode_masks  # the COCO RLE encoder, re-exported for convenience
from .batch import BatchFeature
from .image_processor import Mask2FormerImageProcessor
from .postprocess import (
    post_process_instance_segmentation,
    post_process_panoptic_segmentation,
    post_process_semantic_segmentation,
)
from .rle import binary_mask_to_rle

__all__ = [
    "BatchFeature",
    "Mask2FormerImageProcessor",
    "binary_mask_to_rle",
    "encode_masks",
    "post_process_instance_segmentation",
    "post_process_panoptic_segmentation",
    "post_process_semantic_segmentation",
]
