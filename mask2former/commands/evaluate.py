"""``mask2former evaluate``: PQ, mask AP and mIoU of a model on a dataset."""

from __future__ import annotations

import argparse

from ..config import TASKS
from .common import device, positive_int, probability

_DTYPES = ("float32", "bfloat16", "float16")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="shapes", help="model folder, built-in name or hub id")
    parser.add_argument(
        "--data", default="shapes", help="dataset folder, or 'shapes' for a generated split"
    )
    parser.add_argument(
        "--task",
        nargs="+",
        default=None,
        choices=TASKS,
        help="tasks to evaluate (default: all the data supports)",
    )
    parser.add_argument("--json", default=None, help="write the results to this JSON file")
    parser.add_argument(
        "--save-predictions", default=None, metavar="DIR", help="also write the predictions"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --json file and the files in a non-empty --save-predictions "
        "folder (default: refuse before evaluating)",
    )
    parser.add_argument(
        "--num", type=positive_int, default=200, help="images of a generated split (200)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=12345,
        help="seed of a generated split (12345, not a training seed)",
    )
    parser.add_argument(
        "--max-images", type=positive_int, default=None, help="evaluate at most N images"
    )
    parser.add_argument("--batch-size", type=positive_int, default=4)
    parser.add_argument(
        "--threshold",
        type=probability,
        default=None,
        help="panoptic score threshold (default: the model's object_mask_threshold, else 0.8, "
        "the original's test setting)",
    )
    parser.add_argument(
        "--detections",
        type=positive_int,
        default=100,
        help="instance detections kept per image for mask AP: the top (query, class) pairs "
        "(100, the original's test setting and COCO's maximum)",
    )
    parser.add_argument("--device", default="cpu", type=device)
    parser.add_argument("--dtype", default="float32", choices=_DTYPES)
    parser.add_argument("--per-class", action="store_true", help="print per-class tables")


def run(args: argparse.Namespace) -> int:
    from ..evaluation.evaluate import evaluate

    report = evaluate(
        model=args.model,
        data=args.data,
        tasks=args.task,
        json_path=args.json,
        save_predictions=args.save_predictions,
        overwrite=args.overwrite,
        num=args.num,
        seed=args.seed,
        max_images=args.max_images,
        batch_size=args.batch_size,
        threshold=args.threshold,
        detections=args.detections,
        device=args.device,
        dtype=args.dtype,
    )
    print(report.tables(per_class=args.per_class))
    print()
    if args.json:
        print(f"results written to {args.json}")
    print(report.headline())
    return 0
