"""Image processing: preprocessing, label encoding, post-processing and COCO RLE."""

from .batch import BatchFeature
from .image_processor import Mask2FormerImageProcessor
from .postprocess import (
    post_process_instance_segmentation,
    post_process_panoptic_segmentation,
    post_process_semantic_segmentation,
)
from .rle import encode_masks

__all__ = [
    "BatchFeature",
    "Mask2FormerImageProcessor",
    "encode_masks",
    "post_process_instance_segmentation",
    "post_process_panoptic_segmentation",
    "post_process_semantic_segmentation",
]
