"""``torch.export`` of Mask2Former with dynamic batch, height and width.

The model takes export-friendly paths while exporting (see
:mod:`mask2former.modeling.exporting`). Some of PyTorch's shape rules add guards that its
symbolic reasoning cannot prove for every size (``windows != 1``, ``padded != unpadded``);
they are deferred to runtime assertions instead of fixing the sizes, and the graph computes the
same values either way (checked at several sizes by the tests).
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
from torch import nn

from ..inference.onnx_runner import InputBounds

__all__ = ["InputBounds", "QueryLogitsModule", "export_program"]


class QueryLogitsModule(nn.Module):
    """The model with one input and the two outputs post-processing needs.

    ``pixel_values`` (B, 3, H, W) -> ``class_queries_logits`` (B, Q, num_labels + 1) and
    ``masks_queries_logits`` (B, Q, ceil(H/4), ceil(W/4)). Inputs and outputs are float32
    whatever the model's dtype (a float16 model's graph takes and gives what a float32 one
    does; the casts vanish for a float32 model).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.dtype = next(model.parameters()).dtype

    def forward(self, pixel_values: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        out = self.model(pixel_values=pixel_values.to(self.dtype), return_dict=True)
        return out.class_queries_logits.float(), out.masks_queries_logits.float()


def example_input(bounds: InputBounds) -> torch.Tensor:
    """A batch of 2 (a batch of 1 would fix the batch size) at a size inside the bounds that is
    not a multiple of 32 (nor fixes padding)."""
    side = min(max(bounds.min_side, 250), bounds.max_side)
    return torch.randn(2, 3, side, side + 42 if side + 42 <= bounds.max_side else side)


def export_program(model: nn.Module, bounds: Optional[InputBounds] = None) -> Any:
    """``torch.export.ExportedProgram`` of ``model`` (a Mask2FormerForUniversalSegmentation in
    evaluation mode, float32) with dynamic batch, height and width within ``bounds``."""
    bounds = bounds or InputBounds()
    module = QueryLogitsModule(model).eval()
    example = example_input(bounds)
    dims = {
        2: torch.export.Dim("height", min=bounds.min_side, max=bounds.max_side),
        3: torch.export.Dim("width", min=bounds.min_side, max=bounds.max_side),
    }
    if bounds.max_batch > 1:
        dims[0] = torch.export.Dim("batch", min=1, max=bounds.max_batch)
    else:  # one image per call: the batch is fixed
        example = example[:1]
    with torch.no_grad():
        return torch.export.export(
            module,
            (example,),
            dynamic_shapes={"pixel_values": dims},
            prefer_deferred_runtime_asserts_over_guards=True,
        )
