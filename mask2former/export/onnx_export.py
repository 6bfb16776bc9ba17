"""``mask2former export``: a model folder that plain onnxruntime runs.

The folder holds ``model.onnx`` (input ``pixel_values`` (B, 3, H, W) with dynamic B, H and W;
outputs ``class_queries_logits`` and ``masks_queries_logits``; standard ONNX operators only,
checked with ``onnx.checker``), ``config.json`` (labels, task, thresholds),
``preprocessor_config.json`` and ``onnx_export.json`` (input bounds, opset, versions and the
check against PyTorch). It is written to a private folder first and appears complete or not at
all; the graph is compared with PyTorch at two input sizes before that.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, List, Optional, Tuple, Union

import torch

from ..files import atomic_directory, write_bytes, write_json
from ..inference.onnx_runner import (
    EXPORT_INFO_NAME,
    ONNX_NAME,
    OUTPUT_NAMES,
    InputBounds,
    load_onnx_runner,
    require_onnxruntime,
)
from .program import QueryLogitsModule, export_program

__all__ = ["ExportError", "ExportReport", "SizeCheck", "export_onnx", "check_standard_operators"]

MIN_OPSET = 18  # the exporter's lowest; GridSample (opset 16) is in every one it writes
STANDARD_DOMAINS = {"", "ai.onnx"}
# Largest |onnx - torch| / value range of an output that passes. The differences are float
# rounding (1e-7..1e-5), except where rounding flips a bit of the decoder's attention masks (a
# 0.5 threshold on sigmoids): measured 1e-3 on a random Swin-T at batch 2, where transformers
# differs from our PyTorch path by the same 1e-3. A broken graph is off by far more.
# float16 adds its own rounding (measured on the built-in model: 1e-3 to 2e-2 of the range).
TOLERANCE = {"float32": 1e-2, "float16": 5e-2}
# float16: weights and activations in half precision, inputs and outputs float32; it runs in
# onnxruntime (CPU and CUDA). bfloat16 does not: the CPU kernels have no bfloat16 Conv.
EXPORT_DTYPES = ("float32", "float16")


class ExportError(ValueError):
    """The export failed; the message names the cause."""


@dataclass
class SizeCheck:
    """One comparison with PyTorch: input shape and each output's max error / value range."""

    shape: Tuple[int, int, int, int]
    class_error: float
    mask_error: float

    def line(self) -> str:
        b, _, h, w = self.shape
        return (
            f"batch {b} at {h}x{w}: class logits {self.class_error:.1e}, mask logits "
            f"{self.mask_error:.1e} (max error / value range)"
        )


@dataclass
class ExportReport:
    out_dir: str
    opset: int
    onnx_bytes: int
    seconds: float
    checks: List[SizeCheck] = field(default_factory=list)
    dtype: str = "float32"

    def lines(self) -> List[str]:
        head = (
            f"wrote {self.out_dir}: {ONNX_NAME} ({self.dtype}, {self.onnx_bytes / 2**20:.1f} MiB, "
            f"opset {self.opset}), config.json, preprocessor_config.json in {self.seconds:.0f} s"
        )
        versus = "onnxruntime vs PyTorch float32"
        return [head] + [f"  {versus}, {c.line()}" for c in self.checks]


def _require_onnx() -> Any:
    try:
        import onnx
        import onnxscript  # noqa: F401  (torch's ONNX exporter needs it)
    except ImportError:
        raise ImportError(
            "mask2former export needs the onnx extra: pip install 'mask2former[onnx]'"
        ) from None
    require_onnxruntime()
    return onnx


def check_standard_operators(proto: Any) -> None:
    """Raise ExportError if any node (also in functions and subgraphs) is outside the
    standard ONNX domain."""
    found = set()

    def visit(nodes: Any) -> None:
        for node in nodes:
            if node.domain not in STANDARD_DOMAINS:
                found.add(f"{node.domain}::{node.op_type}")
            for attribute in node.attribute:
                if attribute.g is not None:
                    visit(attribute.g.node)
                for graph in attribute.graphs:
                    visit(graph.node)

    visit(proto.graph.node)
    for function in proto.functions:
        visit(function.node)
    if found:
        raise ExportError(f"the graph holds non-standard operators: {sorted(found)}")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters' progress lines, notes on optional torchvision ops and deprecation
    warnings of their internals are not the user's concern; errors still raise."""
    names = ("torch.onnx", "torch._dynamo", "torch.export", "onnxscript", "onnx_ir")
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _to_onnx(model: Any, bounds: InputBounds, opset: int) -> Any:
    """The ONNX ModelProto of ``model``, checked; errors name the stage that failed."""
    with _quiet():
        return _convert(model, bounds, opset)


def _convert(model: Any, bounds: InputBounds, opset: int) -> Any:
    onnx = _require_onnx()
    try:
        program = export_program(model, bounds)
    except Exception as e:  # torch.export's errors are long; the first line names the cause
        raise ExportError(f"torch.export failed: {str(e).splitlines()[0]}") from e
    try:
        converted = torch.onnx.export(
            program,
            dynamo=True,
            opset_version=opset,
            input_names=["pixel_values"],
            output_names=list(OUTPUT_NAMES),
            verbose=False,
        )
    except Exception as e:
        raise ExportError(f"conversion to ONNX failed: {str(e).splitlines()[0]}") from e
    proto = converted.model_proto
    try:
        onnx.checker.check_model(proto)
    except Exception as e:
        raise ExportError(f"onnx.checker refused the graph: {e}") from e
    check_standard_operators(proto)
    return proto


def _check_sizes(bounds: InputBounds) -> List[Tuple[int, int, int, int]]:
    """Two sizes inside ``bounds``: a batch of 2 at sides that are not multiples of 32, and
    one larger image."""

    def side(value: int) -> int:
        return min(max(value, bounds.min_side), bounds.max_side)

    first = (min(2, bounds.max_batch), 3, side(226), side(298))
    return [first, (1, 3, side(384), side(512))]


def _compare(folder: str, model: Any, shapes: List[Tuple[int, int, int, int]]) -> List[SizeCheck]:
    """Run the written graph and PyTorch on the same random inputs."""
    runner = load_onnx_runner(folder)
    module = QueryLogitsModule(model).eval()
    checks = []
    for shape in shapes:
        pixels = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            expected = module(pixels)
        got = runner(pixels)
        errors = []
        for ref, out in zip(expected, (got.class_queries_logits, got.masks_queries_logits)):
            scale = float(ref.max() - ref.min()) or 1.0
            errors.append(float((out - ref).abs().max()) / scale)
        checks.append(SizeCheck(tuple(shape), errors[0], errors[1]))
    return checks


def export_onnx(
    model: Union[str, os.PathLike] = "shapes",
    out_dir: Union[str, os.PathLike] = "onnx",
    opset: int = MIN_OPSET,
    dtype: str = "float32",
    bounds: Optional[InputBounds] = None,
    overwrite: bool = False,
    log: Optional[Callable[[str], None]] = None,
) -> ExportReport:
    """Export ``model`` (built-in name, checkpoint folder or hub id) to ``out_dir`` (see the
    module docstring) in ``dtype`` ("float32", or "float16": compared with the float32 model,
    the check reports its accuracy cost) for inputs within ``bounds`` (default :class:`InputBounds`); an existing
    ``out_dir`` is replaced only with ``overwrite``."""
    from ..hub import resolve_file
    from ..modeling.mask2former import Mask2FormerForUniversalSegmentation
    from ..processing.image_processor import CONFIG_NAME, Mask2FormerImageProcessor

    bounds = bounds or InputBounds()
    onnx = _require_onnx()
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise ExportError(f"opset {opset}: this exporter writes opsets {MIN_OPSET}..{newest}")
    out_dir = os.fspath(out_dir)
    if os.path.lexists(out_dir) and not overwrite:
        raise ExportError(f"--out {out_dir} exists (use --overwrite to replace it)")
    start = time.perf_counter()
    if dtype not in EXPORT_DTYPES:
        raise ExportError(
            f"dtype {dtype!r}: the graph can be {' or '.join(EXPORT_DTYPES)} (onnxruntime's CPU "
            "kernels have no bfloat16 convolution)"
        )
    net = Mask2FormerForUniversalSegmentation.from_pretrained(model).float().eval()
    processor_file = resolve_file(model, CONFIG_NAME, required=False)
    processor = (
        Mask2FormerImageProcessor.from_pretrained(processor_file)
        if processor_file
        else Mask2FormerImageProcessor()
    )
    (log or print)(f"exporting {os.fspath(model)} (this takes a minute or more)")
    graph_net = copy.deepcopy(net).half() if dtype == "float16" else net
    data = _to_onnx(graph_net, bounds, opset).SerializeToString()
    with atomic_directory(out_dir, replace=overwrite) as tmp:
        write_bytes(os.path.join(tmp, ONNX_NAME), data)
        net.config.to_json_file(os.path.join(tmp, "config.json"))
        processor.to_json_file(os.path.join(tmp, CONFIG_NAME))
        checks = _compare(tmp, net, _check_sizes(bounds))
        worst = max(max(c.class_error, c.mask_error) for c in checks)
        if worst > TOLERANCE[dtype]:
            raise ExportError(
                f"the ONNX graph differs from PyTorch by {worst:.1e} of the output range "
                f"(limit {TOLERANCE[dtype]}); nothing was written"
            )
        info = {
            "input_bounds": bounds.to_dict(),
            "opset": opset,
            "dtype": dtype,
            "source": os.fspath(model),
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "checks": [c.__dict__ for c in checks],
        }
        write_json(os.path.join(tmp, EXPORT_INFO_NAME), info, indent=2)
    seconds = time.perf_counter() - start
    return ExportReport(out_dir, opset, len(data), seconds, checks, dtype)
