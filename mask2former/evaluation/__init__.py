"""Evaluation: panoptic quality, COCO mask AP (needs pycocotools at compute time) and mIoU.

Each evaluator accumulates with ``update(...)`` per image, combines with ``merge(other)``,
returns a JSON-serialisable dict (see :func:`to_jsonable`) of percentages from ``compute()``, and
renders it with ``format_table(result)``.
"""

from .coco_ap import CocoMaskAPEvaluator
from .miou import SemanticSegmentationEvaluator
from .pq import PanopticQualityEvaluator
from .report import format_table, to_jsonable, write_json

__all__ = [
    "CocoMaskAPEvaluator",
    "PanopticQualityEvaluator",
    "SemanticSegmentationEvaluator",
    "format_table",
    "to_jsonable",
    "write_json",
]
