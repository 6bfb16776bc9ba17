"""Whether the model is being exported, for the few places that take another path then.

The eager model uses kernels that are fastest in PyTorch (``embedding_bag`` gathers, fused
attention whose output layout is known); the exporters need standard operators and layouts
that survive their decompositions. The paths compute the same values.
"""

from __future__ import annotations

import torch

__all__ = ["is_exporting"]


def is_exporting() -> bool:
    """True inside ``torch.export.export`` and both ONNX exporters."""
    return torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export()
