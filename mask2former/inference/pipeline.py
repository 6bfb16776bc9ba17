"""The one inference pipeline: images -> processor -> runner -> post-processing -> results.

Every front end (:class:`mask2former.Predictor`, :func:`mask2former.segment`, evaluation, the
benchmarks) goes through :class:`Pipeline`, so batching, segment ids and the handling of fused
segments are the same everywhere.

Batching policy: images are grouped by network input size and each group is cut into chunks of
``batch_size``. The network does not mask padding, so only images that need none share a
forward pass, and a result never depends on the other images of a call.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..checkpoint import SAFE_INDEX, SAFE_WEIGHTS, TORCH_INDEX, TORCH_WEIGHTS
from .onnx_runner import has_onnx_model, load_onnx_runner
from .options import ModelInfo, TaskOptions
from .results import SegmentationResult, to_results
from .runner import ModelRunner, load_torch_runner

__all__ = ["Pipeline", "BACKENDS", "build_pipeline", "choose_backend", "size_groups", "window_size"]


def window_size(batch_size: int) -> int:
    """Images a caller loads and hands to :meth:`Pipeline.run` at once: enough for several
    same-size batches to form, few enough to bound memory."""
    return max(8, 4 * max(1, int(batch_size)))


def size_groups(shapes: Sequence[Tuple[int, ...]], batch_size: int) -> Iterator[List[int]]:
    """Indices of inputs grouped by shape (first appearance order), in chunks of ``batch_size``."""
    groups: Dict[Tuple[int, ...], List[int]] = {}
    for i, shape in enumerate(shapes):
        groups.setdefault(tuple(shape), []).append(i)
    step = max(1, int(batch_size))
    for indices in groups.values():
        for start in range(0, len(indices), step):
            yield indices[start : start + step]


class Pipeline:
    """An image processor and a model runner.

    Args:
        runner: the model (:class:`~mask2former.inference.runner.ModelRunner`).
        processor: its :class:`~mask2former.Mask2FormerImageProcessor`.
        name: how the model was named (recorded in outputs).
    """

    def __init__(self, runner: ModelRunner, processor: Any, name: str = "model") -> None:
        self.runner = runner
        self.processor = processor
        self.name = name

    @property
    def info(self) -> ModelInfo:
        return self.runner.info

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """(1, 3, h, w) network input of one (H, W, 3) image."""
        return self.processor(image, return_tensors="pt")["pixel_values"]

    def run(
        self,
        images: Sequence[np.ndarray],
        requests: Sequence[TaskOptions],
        batch_size: int = 1,
    ) -> List[List[SegmentationResult]]:
        """Each (H, W, 3) image through the model once and through every request's
        post-processing: ``out[i][r]`` is image i's result for ``requests[r]``, at its size."""
        inputs = [self.preprocess(image) for image in images]
        out: List[Optional[List[SegmentationResult]]] = [None] * len(images)
        for chunk in size_groups([x.shape for x in inputs], batch_size):
            logits = self.runner(torch.cat([inputs[i] for i in chunk]))
            sizes = [images[i].shape[:2] for i in chunk]
            per_request = [to_results(logits, sizes, r, self.info) for r in requests]
            for k, i in enumerate(chunk):
                out[i] = [results[k] for results in per_request]
        return out  # type: ignore[return-value]

    def predict(
        self, images: Sequence[np.ndarray], options: TaskOptions, batch_size: int = 1
    ) -> List[SegmentationResult]:
        """One result per (H, W, 3) image, in input order."""
        return [r[0] for r in self.run(images, [options], batch_size)]


BACKENDS = ("torch", "onnxruntime")


def build_pipeline(
    name_or_path: Union[str, os.PathLike] = "shapes",
    device: Union[str, torch.device] = "cpu",
    dtype: Union[None, str, torch.dtype] = None,
    backend: Optional[str] = None,
) -> Pipeline:
    """A built-in model name, checkpoint folder or hub id with its image processor (the folder's
    ``preprocessor_config.json`` when present, else the processor's defaults).

    ``backend``: "torch", "onnxruntime" (a folder written by ``mask2former export``), or None:
    onnxruntime for a folder that has ``model.onnx`` and no PyTorch weights, else torch.
    """
    from ..hub import resolve_file
    from ..processing.image_processor import CONFIG_NAME, Mask2FormerImageProcessor

    backend = choose_backend(name_or_path, backend)
    if backend == "onnxruntime":
        if dtype not in (None, "float32", torch.float32):
            raise ValueError("the onnxruntime backend runs the exported float32 graph: no --dtype")
        runner: ModelRunner = load_onnx_runner(name_or_path, device=device)
    else:
        runner = load_torch_runner(name_or_path, device=device, dtype=dtype)
    config_path = resolve_file(name_or_path, CONFIG_NAME, required=False)
    if config_path is None:
        processor = Mask2FormerImageProcessor()
    else:
        processor = Mask2FormerImageProcessor.from_pretrained(config_path)
    return Pipeline(runner, processor, name=os.fspath(name_or_path))


def choose_backend(name_or_path: Union[str, os.PathLike], backend: Optional[str]) -> str:
    """``backend`` checked, or the one the folder calls for (see :func:`build_pipeline`)."""
    if backend is not None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
        return backend
    folder = os.fspath(name_or_path)
    weights = (SAFE_WEIGHTS, SAFE_INDEX, TORCH_WEIGHTS, TORCH_INDEX)  # what from_pretrained reads
    if has_onnx_model(folder) and not any(
        os.path.isfile(os.path.join(folder, name)) for name in weights
    ):
        return "onnxruntime"
    return "torch"
