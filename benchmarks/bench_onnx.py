"""onnxruntime against our PyTorch path against transformers 4.37.2, same weights, same inputs.

Builds the Swin-T Mask2Former (133 classes, 100 queries) with random weights in the reference,
saves it with the reference's ``save_pretrained``, loads it with our ``from_pretrained``, exports
it with ``mask2former export`` (float32, dynamic sizes) and times one forward pass of each at
every size, alternating the three in one process (medians after a warm-up call). Ratios are
reference time / other time (higher is better). The outputs are compared too.

Usage: python benchmarks/bench_onnx.py [--repeats 5] [--threads 2] [--sizes 384x384,800x1088]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import alternate, build_reference, load_ours, median  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", default="384x384,800x1088")
    parser.add_argument(
        "--memory-reuse", action="store_true", help="keep freed blocks, as the command does"
    )
    args = parser.parse_args()
    if args.memory_reuse:
        from mask2former import enable_memory_reuse

        enable_memory_reuse()  # as the mask2former command does
    torch.set_num_threads(args.threads)
    from mask2former.export import InputBounds, export_onnx
    from mask2former.inference.onnx_runner import load_onnx_runner

    sizes = [tuple(int(v) for v in item.split("x")) for item in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        reference = build_reference(os.path.join(tmp, "ref"))
        ours = load_ours(os.path.join(tmp, "ref"))
        bounds = InputBounds(max_batch=8, max_side=max(max(s) for s in sizes) + 64)
        report = export_onnx(os.path.join(tmp, "ref"), os.path.join(tmp, "onnx"), bounds=bounds)
        print("\n".join(report.lines()))
        runner = load_onnx_runner(os.path.join(tmp, "onnx"), threads=args.threads)
        print(f"threads {args.threads}, repeats {args.repeats}, torch {torch.__version__}")
        for h, w in sizes:
            pixels = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0))

            def run_reference(pixels=pixels):
                with torch.inference_mode():
                    return reference(pixel_values=pixels)

            def run_ours(pixels=pixels):
                with torch.inference_mode():
                    return ours(pixel_values=pixels)

            def run_onnx(pixels=pixels):
                return runner(pixels)

            times = alternate(
                {"reference": run_reference, "ours": run_ours, "onnx": run_onnx},
                repeats=args.repeats,
            )
            ref_ms = median(times["reference"]) * 1000
            ours_ms = median(times["ours"]) * 1000
            onnx_ms = median(times["onnx"]) * 1000
            expected = run_reference().masks_queries_logits
            error = (runner(pixels).masks_queries_logits - expected).abs().max()
            scale = float(expected.max() - expected.min())
            print(
                f"forward {h}x{w}: transformers {ref_ms:.0f} ms, ours (torch) {ours_ms:.0f} ms "
                f"({ref_ms / ours_ms:.2f}x), onnxruntime {onnx_ms:.0f} ms ({ref_ms / onnx_ms:.2f}x"
                f" transformers, {ours_ms / onnx_ms:.2f}x ours); onnx mask logits max error "
                f"{float(error) / scale:.1e} of range"
            )


if __name__ == "__main__":
    main()
