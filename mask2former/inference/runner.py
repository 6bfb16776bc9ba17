"""The model behind the pipeline: one small interface, so another runtime plugs in at one place.

A runner takes the processor's ``pixel_values`` and returns the two tensors post-processing
needs. :class:`TorchRunner` wraps a :class:`Mask2FormerForUniversalSegmentation`; an
onnxruntime runner only has to provide the same ``__call__`` and ``info``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional, Protocol, Union

import torch

from .options import ModelInfo

__all__ = ["QueryLogits", "ModelRunner", "TorchRunner", "load_torch_runner", "DTYPES"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class QueryLogits:
    """What post-processing needs of a forward pass.

    Attributes:
        class_queries_logits: (B, Q, num_labels + 1); the last class is "no object".
        masks_queries_logits: (B, Q, H/4, W/4) for (H, W) network inputs.
    """

    class_queries_logits: torch.Tensor
    masks_queries_logits: torch.Tensor


class ModelRunner(Protocol):
    """Interface of a runtime: ``runner(pixel_values) -> QueryLogits``.

    Attributes:
        info: the model's labels and test defaults (:class:`ModelInfo`).
    """

    info: ModelInfo

    def __call__(self, pixel_values: torch.Tensor) -> QueryLogits:
        """``pixel_values``: (B, 3, H, W) float32, normalised as the image processor does."""
        ...


class TorchRunner:
    """A PyTorch model on its device and in its dtype; inputs are moved and cast to match."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model.eval()
        self.info = ModelInfo.from_config(model.config)
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype

    @torch.inference_mode()
    def __call__(self, pixel_values: torch.Tensor) -> QueryLogits:
        out = self.model(pixel_values=pixel_values.to(self.device, self.dtype), return_dict=True)
        return QueryLogits(out.class_queries_logits, out.masks_queries_logits)


def _dtype(dtype: Union[None, str, torch.dtype]) -> Optional[torch.dtype]:
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        return DTYPES[dtype]
    return dtype


def load_torch_runner(
    name_or_path: Union[str, os.PathLike],
    device: Union[str, torch.device] = "cpu",
    dtype: Union[None, str, torch.dtype] = None,
) -> TorchRunner:
    """A built-in model name, checkpoint folder or hub id on ``device`` in ``dtype``."""
    from ..modeling.mask2former import Mask2FormerForUniversalSegmentation

    dtype = _dtype(dtype)
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available; use --device cpu")
    model: Any = Mask2FormerForUniversalSegmentation.from_pretrained(
        name_or_path, torch_dtype=dtype
    )
    return TorchRunner(model.to(device))
