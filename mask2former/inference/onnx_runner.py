"""The onnxruntime backend: a :class:`~.runner.ModelRunner` over a graph written by
``mask2former export`` (plain onnxruntime, standard operators only).

A model folder for it holds ``model.onnx``, ``config.json`` (labels and test defaults),
``preprocessor_config.json`` and ``onnx_export.json`` (the input bounds it was exported for).
Needs the ``onnx`` extra: ``pip install 'mask2former[onnx]'``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Any, List, Optional, Union

import torch

from .options import ModelInfo
from .runner import QueryLogits

__all__ = [
    "ONNX_NAME",
    "EXPORT_INFO_NAME",
    "InputBounds",
    "OnnxRunner",
    "load_onnx_runner",
    "require_onnxruntime",
    "has_onnx_model",
]

ONNX_NAME = "model.onnx"
EXPORT_INFO_NAME = "onnx_export.json"
OUTPUT_NAMES = ("class_queries_logits", "masks_queries_logits")


@dataclass(frozen=True)
class InputBounds:
    """The ``pixel_values`` sizes a graph is exported for and accepts: batch 1..max_batch,
    sides min_side..max_side (checked before each run)."""

    max_batch: int = 64
    # 64: at 32 pixels the coarsest feature map has one pixel, which torch.export fixes as
    # a constant (a size of 1 broadcasts), so no graph could take both.
    min_side: int = 64
    max_side: int = 4096

    def __post_init__(self) -> None:
        if not 1 <= self.max_batch <= 4096:
            raise ValueError(f"max_batch must be 1..4096, got {self.max_batch}")
        if not 64 <= self.min_side < self.max_side <= 16384:
            raise ValueError(
                "input sides must satisfy 64 <= min_side < max_side <= 16384, got "
                f"{self.min_side}..{self.max_side}"
            )

    def check(self, shape: tuple) -> None:
        b, c, h, w = shape
        if not 1 <= b <= self.max_batch:
            raise ValueError(f"batch of {b} images: the ONNX graph takes 1..{self.max_batch}")
        for name, side in (("height", h), ("width", w)):
            if not self.min_side <= side <= self.max_side:
                raise ValueError(
                    f"input {name} {side}: the ONNX graph was exported for sides "
                    f"{self.min_side}..{self.max_side} (re-export with other bounds)"
                )

    def to_dict(self) -> dict:
        return asdict(self)


def require_onnxruntime() -> Any:
    """The onnxruntime module, or a one-line ImportError naming the extra."""
    try:
        import onnxruntime
    except ImportError:
        raise ImportError(
            "the onnxruntime backend needs the onnx extra: pip install 'mask2former[onnx]'"
        ) from None
    return onnxruntime


def has_onnx_model(folder: Union[str, os.PathLike]) -> bool:
    return os.path.isfile(os.path.join(folder, ONNX_NAME))


def _providers(device: Union[str, torch.device], available: List[str]) -> List[str]:
    kind = torch.device(device).type
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    if kind == "cuda" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise ValueError(
        f"device {str(device)!r}: this onnxruntime offers {available}; use --device cpu"
    )


class OnnxRunner:
    """Runs ``model.onnx`` in onnxruntime; float32 inputs on the CPU, outputs as tensors.

    Args:
        session: an ``onnxruntime.InferenceSession`` of an exported graph.
        info: the model's labels and defaults (from its config.json).
        bounds: the input sizes the graph was exported for.
    """

    device = torch.device("cpu")  # where results are returned
    dtype = torch.float32
    model = None  # no PyTorch module behind this runner

    def __init__(self, session: Any, info: ModelInfo, bounds: InputBounds) -> None:
        self.session = session
        self.info = info
        self.bounds = bounds

    def __call__(self, pixel_values: torch.Tensor) -> QueryLogits:
        self.bounds.check(tuple(pixel_values.shape))
        feed = {"pixel_values": pixel_values.detach().to("cpu", torch.float32).numpy()}
        classes, masks = self.session.run(list(OUTPUT_NAMES), feed)
        return QueryLogits(torch.from_numpy(classes), torch.from_numpy(masks))


def read_bounds(folder: Union[str, os.PathLike]) -> InputBounds:
    """The bounds recorded in ``onnx_export.json`` (the defaults when the file is absent)."""
    from .._config_base.checks import ConfigError, check_int

    path = os.path.join(folder, EXPORT_INFO_NAME)
    if not os.path.isfile(path):
        return InputBounds()
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f).get("input_bounds", {})
        values = {
            k: check_int(k, data[k], 1, 1 << 20) for k in ("max_batch", "min_side", "max_side")
        }
        return InputBounds(**values)
    except (ValueError, KeyError, AttributeError, ConfigError) as e:
        raise ValueError(f"{path}: input_bounds: {e}") from None


def load_onnx_runner(
    folder: Union[str, os.PathLike],
    device: Union[str, torch.device] = "cpu",
    threads: Optional[int] = None,
) -> OnnxRunner:
    """The runner of an exported model folder (see the module docstring)."""
    from ..config import Mask2FormerConfig

    ort = require_onnxruntime()
    folder = os.fspath(folder)
    path = os.path.join(folder, ONNX_NAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{folder}: no {ONNX_NAME} (make one with: mask2former export --model M --out DIR)"
        )
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    providers = _providers(device, ort.get_available_providers())
    session = ort.InferenceSession(path, options, providers=providers)
    info = ModelInfo.from_config(Mask2FormerConfig.from_pretrained(folder))
    return OnnxRunner(session, info, read_bounds(folder))
