"""Mask2Former universal image segmentation in native PyTorch.

Public names are imported lazily so that ``import mask2former`` stays cheap (the CLI starts fast)
and a submodule is only loaded when used.
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Mask2FormerConfig": "mask2former.config",
    "SwinConfig": "mask2former.config",
    "ResNetConfig": "mask2former.config",
    "ConfigError": "mask2former.config",
    "Mask2FormerModel": "mask2former.modeling.mask2former",
    "Mask2FormerForUniversalSegmentation": "mask2former.modeling.mask2former",
    "Mask2FormerModelOutput": "mask2former.modeling.outputs",
    "Mask2FormerForUniversalSegmentationOutput": "mask2former.modeling.outputs",
    "CheckpointError": "mask2former.checkpoint",
    "Mask2FormerImageProcessor": "mask2former.processing.image_processor",
    "Predictor": "mask2former.predictor",
    "SegmentationResult": "mask2former.inference.results",
    "segment": "mask2former.inference.segment_files",
    "draw_overlay": "mask2former.visualize",
    "enable_memory_reuse": "mask2former.memory_reuse",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mask2former' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
