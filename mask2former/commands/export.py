"""``mask2former export``: a model folder for plain onnxruntime (see mask2former.export)."""

from __future__ import annotations

import argparse

from .common import add_output_arguments, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default="shapes", help="model folder, built-in name or hub id (shapes)"
    )
    add_output_arguments(
        parser,
        out_help="folder to write: model.onnx, config.json, preprocessor_config.json, "
        "onnx_export.json (usable as --model DIR by segment and evaluate)",
        overwrite_help="replace an existing --out folder",
    )
    graph = parser.add_argument_group("graph")
    graph.add_argument(
        "--opset", type=positive_int, default=18, help="ONNX opset (18, the exporter's lowest)"
    )
    graph.add_argument(
        "--dtype",
        choices=("float32", "float16"),
        default="float32",
        help="weights and activations (float32); float16 keeps float32 inputs and outputs, "
        "the export reports its difference from float32",
    )
    graph.add_argument(
        "--max-batch", type=positive_int, default=64, help="largest batch the graph takes (64)"
    )
    graph.add_argument(
        "--min-side", type=positive_int, default=64, help="smallest image side in pixels (64)"
    )
    graph.add_argument(
        "--max-side", type=positive_int, default=4096, help="largest image side in pixels (4096)"
    )


def run(args: argparse.Namespace) -> int:
    from ..export import InputBounds, export_onnx

    bounds = InputBounds(args.max_batch, args.min_side, args.max_side)
    report = export_onnx(
        args.model,
        args.out,
        opset=args.opset,
        dtype=args.dtype,
        bounds=bounds,
        overwrite=args.overwrite,
    )
    print("\n".join(report.lines()))
    return 0
