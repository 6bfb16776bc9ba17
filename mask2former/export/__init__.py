"""Deployment: the model as a graph with dynamic batch, height and width.

- :mod:`.program`: :func:`export_program`, ``torch.export`` of the model (the door to
  ExecuTorch and AOTInductor, and the first step of the ONNX export).
- :mod:`.onnx_export`: :func:`export_onnx`, a model folder for onnxruntime (``model.onnx`` of
  standard operators, checked against PyTorch), as ``mask2former export`` writes it.
"""

from .onnx_export import ExportReport, export_onnx
from .program import InputBounds, export_program

__all__ = ["ExportReport", "InputBounds", "export_onnx", "export_program"]
