"""``mask2former shapes``: write the synthetic shapes dataset to disk."""

from __future__ import annotations

import argparse
import time

from .common import positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--num", type=positive_int, default=100, help="number of images (default 100)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--size", type=positive_int, default=256, help="image side in pixels (32-4096; 256)"
    )
    parser.add_argument(
        "--formats",
        nargs="+",
        default=["panoptic", "instances", "semantic"],
        choices=["panoptic", "instances", "semantic"],
        help="annotation formats to write (default: all)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the dataset in a non-empty --out folder (default: refuse)",
    )


def run(args: argparse.Namespace) -> int:
    from ..data.export import export_panoptic_dataset, prepare_dataset_folder
    from ..data.shapes import SHAPES_CATEGORIES, ShapesConfig, ShapesDataset

    if not 32 <= args.size <= 4096:
        raise ValueError(f"--size must be between 32 and 4096, got {args.size}")
    prepare_dataset_folder(args.out, args.overwrite)
    start = time.perf_counter()
    dataset = ShapesDataset(args.num, seed=args.seed, config=ShapesConfig(args.size, args.size))
    samples = (dataset[i] for i in range(len(dataset)))
    out = export_panoptic_dataset(samples, SHAPES_CATEGORIES, args.out, formats=args.formats)
    print(
        f"wrote {args.num} shapes images (seed {args.seed}, {args.size}x{args.size}, "
        f"{', '.join(args.formats)}) to {out} in {time.perf_counter() - start:.1f}s"
    )
    return 0
