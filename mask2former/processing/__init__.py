"""Image processing: preprocessing, label encoding, post-processing and COCO RLE."""

from ..coco import encode_masks  # the COCO RLE encoder, re-exported for convenience
from .batch import BatchFeature
from .image_processor import Mask2FormerImageProcessor
from .postprocess import (
    post_process_instance_segmentation,
    post_process_panoptic_segmentation,
    post_process_semantic_segmentation,
)

__all__ = [
    "BatchFeature",
    "Mask2FormerImageProcessor",
    "encode_masks",
    "post_process_instance_segmentation",
    "post_process_panoptic_segmentation",
    "post_process_semantic_segmentation",
]
