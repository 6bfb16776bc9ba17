"""Segment images in a few lines: :class:`Predictor` (in memory).

    >>> from mask2former.predictor import Predictor
    >>> predictor = Predictor.from_pretrained("shapes")
    >>> result = predictor.predict([image])[0]      # image: path, PIL image or (H, W, 3) array
    >>> result.segmentation, result.segments        # (H, W) ids, [{"id", "label", "score", ...}]

Every result has the size of its input image; segment ids follow the rule of
:mod:`mask2former.inference.results`. Files in, files out: :func:`mask2former.segment`.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import torch

from .inference.images import ImageError, load_image
from .inference.options import TASKS, model_threshold
from .inference.pipeline import Pipeline, build_pipeline
from .inference.results import SegmentationResult
from .inference.runner import TorchRunner

__all__ = [
    "Predictor",
    "SegmentationResult",
    "ImageError",
    "TASKS",
    "load_image",
    "model_threshold",
]


class Predictor:
    """A model and its image processor, ready to segment images (SAM-predictor style).

    Args:
        model: a :class:`Mask2FormerForUniversalSegmentation`.
        processor: its :class:`Mask2FormerImageProcessor`.
        name: how the model was named (recorded in outputs).
    """

    def __init__(self, model: Any, processor: Any, name: str = "model") -> None:
        self.pipeline = Pipeline(TorchRunner(model), processor, name=name)

    @classmethod
    def from_pipeline(cls, pipeline: Pipeline) -> Predictor:
        predictor = cls.__new__(cls)
        predictor.pipeline = pipeline
        return predictor

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: Union[str, os.PathLike] = "shapes",
        device: Union[str, torch.device] = "cpu",
        dtype: Union[None, str, torch.dtype] = None,
        backend: Optional[str] = None,
    ) -> Predictor:
        """Load a built-in model name (default "shapes"), a checkpoint folder or a hub id.

        ``dtype``: None / "float32", "bfloat16" or "float16" (or a torch dtype). The folder's
        ``preprocessor_config.json`` is used when present, else the processor's defaults.
        ``backend``: "torch" or "onnxruntime" (a folder written by ``mask2former export``);
        default: onnxruntime for a folder with ``model.onnx`` and no PyTorch weights.
        """
        pipeline = build_pipeline(name_or_path, device=device, dtype=dtype, backend=backend)
        return cls.from_pipeline(pipeline)

    @property
    def model(self) -> Optional[torch.nn.Module]:
        """The PyTorch model (None with the onnxruntime backend)."""
        return self.pipeline.runner.model  # type: ignore[attr-defined]

    @property
    def processor(self) -> Any:
        return self.pipeline.processor

    @property
    def name(self) -> str:
        return self.pipeline.name

    @property
    def device(self) -> torch.device:
        return self.pipeline.runner.device  # type: ignore[attr-defined]

    @property
    def dtype(self) -> torch.dtype:
        return self.pipeline.runner.dtype  # type: ignore[attr-defined]

    @property
    def id2label(self) -> Dict[int, str]:
        return dict(self.pipeline.info.id2label)

    @property
    def default_task(self) -> str:
        """The task the model was trained for (``task`` in config.json), else panoptic."""
        return self.pipeline.info.task

    @property
    def stuff_label_ids(self) -> Optional[List[int]]:
        """Classes fused into one segment per image by default (``stuff_label_ids`` in config)."""
        return list(self.pipeline.info.stuff_label_ids) or None

    @property
    def default_threshold(self) -> float:
        """Minimum segment score when none is given: the model's own test setting
        (``object_mask_threshold`` in config.json, as detectron2's
        ``MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD``), else 0.5."""
        return self.pipeline.info.threshold

    def predict(
        self,
        images: Union[Any, Sequence[Any]],
        task: Optional[str] = None,
        threshold: Optional[float] = None,
        mask_threshold: float = 0.5,
        overlap_mask_area_threshold: float = 0.8,
        label_ids_to_fuse: Optional[Iterable[int]] = None,
        batch_size: int = 1,
    ) -> List[SegmentationResult]:
        """Segment images (paths, PIL images or (H, W, 3) arrays; one or a list).

        Args:
            task: "panoptic", "instance" or "semantic"; default :attr:`default_task`.
            threshold: minimum score of a kept segment (panoptic, instance); default
                :attr:`default_threshold`.
            mask_threshold, overlap_mask_area_threshold: as in the image processor.
            label_ids_to_fuse: panoptic classes merged into one segment per image; default
                :attr:`stuff_label_ids`.
            batch_size: images per forward pass. Only images with the same network input size
                share a batch (the network does not mask padding), so results never depend on
                the other images.

        Returns:
            One :class:`SegmentationResult` per image, in input order.
        """
        options = self.pipeline.info.options(
            task=task,
            threshold=threshold,
            mask_threshold=mask_threshold,
            overlap_mask_area_threshold=overlap_mask_area_threshold,
            label_ids_to_fuse=label_ids_to_fuse,
        )
        many = isinstance(images, (list, tuple))
        arrays = [load_image(im) for im in (images if many else [images])]
        return self.pipeline.predict(arrays, options, batch_size=batch_size)
