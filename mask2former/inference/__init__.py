"""The inference pipeline: images -> processor -> model runner -> post-processing -> results.

- :mod:`.images`: reading and checking user images.
- :mod:`.options`: a request's options and a model's declared defaults.
- :mod:`.runner`: the runtime interface (PyTorch today).
- :mod:`.results`: per-image :class:`SegmentationResult` from query logits.
- :mod:`.pipeline`: :class:`Pipeline`, the batching policy, :func:`build_pipeline`.
- :mod:`.inputs`, :mod:`.outputs`, :mod:`.segment_files`: files in, files out (:func:`segment`).
"""

from .images import ImageError, load_image
from .options import TASKS, ModelInfo, TaskOptions
from .pipeline import Pipeline, build_pipeline
from .results import SegmentationResult
from .runner import ModelRunner, QueryLogits, TorchRunner

__all__ = [
    "TASKS",
    "ImageError",
    "ModelInfo",
    "ModelRunner",
    "Pipeline",
    "QueryLogits",
    "SegmentationResult",
    "TaskOptions",
    "TorchRunner",
    "build_pipeline",
    "load_image",
]
