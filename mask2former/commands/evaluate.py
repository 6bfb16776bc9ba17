"""``mask2former evaluate``: PQ, mask AP and mIoU of a model on a dataset."""

from __future__ import annotations

import argparse
import os
import time

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
        choices=["panoptic", "instance", "semantic"],
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
    import torch

    from ..data.loading import check_labels, open_dataset
    from ..evaluation.coco_ap import CocoMaskAPEvaluator
    from ..evaluation.miou import SemanticSegmentationEvaluator
    from ..evaluation.pq import PanopticQualityEvaluator
    from ..evaluation.report import write_json
    from ..evaluation.runner import TASKS, evaluate_model
    from ..modeling.mask2former import Mask2FormerForUniversalSegmentation
    from ..predictor import model_threshold
    from ..processing.image_processor import Mask2FormerImageProcessor

    _check_outputs(args)
    start = time.perf_counter()
    dtype = getattr(torch, args.dtype)
    model = Mask2FormerForUniversalSegmentation.from_pretrained(args.model, torch_dtype=dtype)
    processor = _processor(args.model, Mask2FormerImageProcessor)
    threshold = args.threshold
    if threshold is None:
        threshold = model_threshold(model.config, 0.8)
    tasks = args.task or _default_tasks(args.data)
    dataset = open_dataset(
        args.data,
        task=tasks[0],
        num=args.num,
        seed=args.seed,
        num_labels=model.config.num_labels,
    )
    check_labels(model.config.id2label, dataset)
    results = evaluate_model(
        model,
        processor,
        dataset,
        tasks=[t for t in TASKS if t in tasks],
        device=args.device,
        batch_size=args.batch_size,
        threshold=threshold,
        detections=args.detections,
        max_images=args.max_images,
        save_predictions=args.save_predictions,
        progress=True,
    )
    tables = {
        "panoptic": PanopticQualityEvaluator.format_table,
        "instance": CocoMaskAPEvaluator.format_table,
        "semantic": SemanticSegmentationEvaluator.format_table,
    }
    for task, result in results.items():
        print(tables[task](result, per_class=args.per_class))
        print()
    summary = {
        "model": str(args.model),
        "data": str(args.data),
        "seed": args.seed if args.data == "shapes" else None,
        "dtype": args.dtype,
        "panoptic_threshold": threshold,
        "instance_detections": args.detections,
        "results": results,
    }
    if args.json:
        write_json(args.json, summary, overwrite=args.overwrite)
        print(f"results written to {args.json}")
    headline = []
    if "panoptic" in results:
        headline.append(f"PQ {results['panoptic']['PQ']:.1f} (threshold {threshold:g})")
    if "instance" in results:
        headline.append(f"mask AP {results['instance']['AP']:.1f}")
    if "semantic" in results:
        headline.append(f"mIoU {results['semantic']['mIoU']:.1f}")
    print(f"{', '.join(headline)} ({time.perf_counter() - start:.0f}s)")
    return 0


def _check_outputs(args: argparse.Namespace) -> None:
    """Output problems are found before the model runs, not after the whole evaluation."""
    if args.json:
        if os.path.isdir(args.json):
            raise IsADirectoryError(f"--json {args.json} is a folder; give a file name")
        if os.path.lexists(args.json) and not args.overwrite:
            raise FileExistsError(f"--json {args.json} exists (use --overwrite to replace it)")
        parent = os.path.dirname(os.path.abspath(args.json))
        if os.path.exists(parent) and not os.path.isdir(parent):
            raise NotADirectoryError(f"--json {args.json}: {parent} is a file")
    folder = args.save_predictions
    if folder:
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise NotADirectoryError(f"--save-predictions {folder} is a file")
        if os.path.isdir(folder) and os.listdir(folder) and not args.overwrite:
            raise FileExistsError(
                f"--save-predictions {folder} is not empty (use --overwrite to replace its files)"
            )


def _processor(model: str, cls):
    from ..hub import resolve_file

    path = resolve_file(model, "preprocessor_config.json", required=False)
    return cls.from_pretrained(path) if path else cls()


def _default_tasks(data: str):
    from pathlib import Path

    if data == "shapes" or (Path(data) / "panoptic.json").is_file():
        return ["panoptic", "instance", "semantic"]
    if (Path(data) / "semantic").is_dir():
        return ["semantic"]
    return ["instance"]
