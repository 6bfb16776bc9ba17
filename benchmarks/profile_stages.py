"""Where the time of our forward pass goes: per stage time, FLOPs and the share of the
machine's matrix speed each stage reaches.

Stages: backbone (Swin-T), pixel decoder (deformable encoder + FPN step + mask projection),
transformer decoder (9 masked-attention layers with their attention masks), mask head (the final
full-size mask logits) and panoptic post-processing at the input size. FLOPs are counted by
``torch.utils.flop_counter`` (matrix products and convolutions; elementwise work is not
counted). The matrix speed is a large square matrix product measured in this process, in the
stage's dtype; "of peak" is the stage's FLOPs / time / that speed, so 100% would mean the stage
is nothing but perfectly efficient matrix products.

Usage: python benchmarks/profile_stages.py [--threads 2] [--repeats 5] [--sizes 800x1088,384x384]
       [--dtype float32|bfloat16] [--folder DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from typing import Callable, Dict, List, Tuple

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_postprocess import trained_like  # noqa: E402
from common import build_reference, load_ours  # noqa: E402


def matrix_speed(dtype: torch.dtype, n: int = 2048, repeats: int = 8) -> float:
    """GFLOP/s of an n x n matrix product in ``dtype`` (best of ``repeats``)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def flops(fn: Callable[[], object]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    # The counter tracks modules through autograd hooks, so it runs with gradients on.
    with torch.enable_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def stage_functions(model, pixels: torch.Tensor) -> Dict[str, Callable[[], object]]:
    """Each stage as a call on the previous stage's (precomputed) outputs."""
    from mask2former import Mask2FormerImageProcessor

    net = model.model
    encoder, decoder = net.pixel_level_module.encoder, net.pixel_level_module.decoder
    with torch.no_grad():  # not inference_mode: the FLOP counter runs these again with autograd
        features = encoder(pixels)
        pixel = decoder(features)
        dec = net.transformer_module(
            pixel.multi_scale_features, pixel.mask_features, False, auxiliary_masks=False
        )
    # Post-processing of logits shaped like a trained model's (random weights give no segments).
    mask_h, mask_w = pixel.mask_features.shape[-2:]
    out = trained_like(h=int(mask_h), w=int(mask_w))
    predictor = net.transformer_module.decoder.mask_predictor
    queries, masks = dec.intermediate[-1], pixel.mask_features
    small = torch.zeros(masks.shape[0], masks.shape[1], 1, dtype=masks.dtype)
    processor = Mask2FormerImageProcessor()
    size = [tuple(pixels.shape[-2:])] * pixels.shape[0]
    return {
        "backbone": lambda: encoder(pixels),
        "pixel decoder": lambda: decoder(features),
        "transformer decoder + mask head": lambda: net.transformer_module(
            pixel.multi_scale_features, pixel.mask_features, False, auxiliary_masks=False
        ),
        "mask head (final logits)": lambda: predictor.predict(queries, masks, small),
        "panoptic post-processing": lambda: processor.post_process_panoptic_segmentation(
            out, target_sizes=size
        ),
    }


def timed(fn: Callable[[], object], repeats: int) -> float:
    with torch.inference_mode():
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def profile(model, size: Tuple[int, int], dtype: torch.dtype, repeats: int) -> List[tuple]:
    pixels = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0)).to(dtype)
    stages = stage_functions(model, pixels)
    rows = []
    for name, fn in stages.items():
        work = 0.0 if "post" in name else flops(fn)
        rows.append((name, timed(fn, repeats), work))
    total = (
        "forward (model call)",
        timed(lambda: model(pixels), repeats),
        flops(lambda: model(pixels)),
    )
    return rows + [total]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", default="800x1088,384x384")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--folder", help="reuse/write the Swin-T checkpoint here")
    parser.add_argument(
        "--memory-reuse", action="store_true", help="keep freed blocks, as the command does"
    )
    args = parser.parse_args()
    if args.memory_reuse:
        from mask2former import enable_memory_reuse

        enable_memory_reuse()  # as the mask2former command does
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    folder = args.folder or tempfile.mkdtemp(prefix="m2f_profile_")
    if not os.path.isfile(os.path.join(folder, "config.json")):
        build_reference(folder)
    model = load_ours(folder, dtype)
    peak = matrix_speed(dtype)
    print(f"torch {torch.__version__}, {args.threads} threads, {args.dtype}")
    print(f"matrix speed (2048^3 product): {peak:.0f} GFLOP/s\n")
    for item in args.sizes.split(","):
        h, w = (int(v) for v in item.split("x"))
        print(f"### {h}x{w}, {args.dtype}\n")
        print("| stage | ms | GFLOP | GFLOP/s | of peak |")
        print("|---|---:|---:|---:|---:|")
        for name, seconds, work in profile(model, (h, w), dtype, args.repeats):
            speed = work / seconds / 1e9
            share = f"{100 * speed / peak:.0f}%" if work else "-"
            gflop = f"{work / 1e9:.1f}" if work else "-"
            rate = f"{speed:.0f}" if work else "-"
            print(f"| {name} | {seconds * 1000:.0f} | {gflop} | {rate} | {share} |")
        print()


if __name__ == "__main__":
    main()
