"""Datasets: the synthetic ``shapes`` set, writers and readers of the standard formats, and
training augmentation. Every reader returns samples in the format described in
:mod:`mask2former.data.sample`; broken inputs raise :class:`DatasetError` naming the file.
The COCO helpers re-exported here live in :mod:`mask2former.coco`."""

from ..coco import category_to_label, decode_rle, encode_mask, label_categories, polygons_to_mask
from .augment import LargeScaleJitter, ResizeShortestEdgeCrop
from .coco_instances import CocoInstancesDataset
from .coco_panoptic import CocoPanopticDataset
from .errors import DatasetError
from .export import export_panoptic_dataset
from .sample import Sample, sample_to_panoptic, sample_to_semantic, segments_to_sample
from .semantic import SemanticSegmentationDataset
from .shapes import SHAPES_CATEGORIES, ShapesConfig, ShapesDataset, render_shapes

__all__ = [
    "CocoInstancesDataset",
    "CocoPanopticDataset",
    "DatasetError",
    "LargeScaleJitter",
    "ResizeShortestEdgeCrop",
    "SHAPES_CATEGORIES",
    "Sample",
    "SemanticSegmentationDataset",
    "ShapesConfig",
    "ShapesDataset",
    "category_to_label",
    "decode_rle",
    "encode_mask",
    "export_panoptic_dataset",
    "label_categories",
    "polygons_to_mask",
    "render_shapes",
    "sample_to_panoptic",
    "sample_to_semantic",
    "segments_to_sample",
]
