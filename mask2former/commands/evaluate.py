"""``mask2former evaluate``: PQ, mask AP and mIoU of a model on a dataset, or of saved
predictions (``--predictions``: no model is loaded, and the model's options are refused)."""

from __future__ import annotations

import argparse

from ..config import TASKS
from .common import (
    add_loading_arguments,
    add_model_arguments,
    add_progress_argument,
    positive_int,
    probability,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    model = add_model_arguments(
        parser, model_help="model folder, built-in name or hub id (default: shapes)"
    )
    add_loading_arguments(model, batch_size=4, batch_help="images per forward pass (4)")
    # None = not given, so that --model with --predictions can be refused (default: shapes).
    parser.set_defaults(model=None)
    model.add_argument(
        "--predictions",
        default=None,
        metavar="PATH",
        help="score saved predictions instead of a model (no model is loaded): a folder "
        "written by --save-predictions, panopticapi's NAME.json (+ its PNG folder NAME/), or a "
        "COCO results JSON",
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data", default="shapes", help="dataset folder, or 'shapes' for a generated split"
    )
    data.add_argument(
        "--task",
        nargs="+",
        default=None,
        choices=TASKS,
        help="tasks to evaluate (default: all the data supports)",
    )
    data.add_argument(
        "--num", type=positive_int, default=200, help="images of a generated split (200)"
    )
    data.add_argument(
        "--seed",
        type=int,
        default=12345,
        help="seed of a generated split (12345, not a training seed)",
    )
    data.add_argument(
        "--max-images", type=positive_int, default=None, help="evaluate at most N images"
    )
    settings = parser.add_argument_group("test settings")
    settings.add_argument(
        "--threshold",
        type=probability,
        default=None,
        help="panoptic score threshold (default: the model's object_mask_threshold, else 0.8, "
        "the original's test setting)",
    )
    settings.add_argument(
        "--detections",
        type=positive_int,
        default=100,
        help="instance detections kept per image for mask AP: the top (query, class) pairs "
        "(100, the original's test setting and COCO's maximum)",
    )
    settings.add_argument(
        "--ap-backend",
        choices=("auto", "hotcoco", "pycocotools"),
        default="auto",
        help="COCOeval of mask AP: auto (hotcoco when installed, about 20x faster and equal to "
        "the last bit; else pycocotools)",
    )
    output = parser.add_argument_group("output")
    output.add_argument("--json", default=None, help="write the results to this JSON file")
    output.add_argument(
        "--plot",
        default=None,
        metavar="FILE",
        help="draw per-class PQ, mask AP and IoU as bar charts in this PNG (needs the plot extra)",
    )
    output.add_argument(
        "--save-predictions", default=None, metavar="DIR", help="also write the predictions"
    )
    output.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --json or --plot file and the files in a non-empty "
        "--save-predictions folder (default: refuse before evaluating)",
    )
    output.add_argument("--per-class", action="store_true", help="print per-class tables")
    add_progress_argument(output, help="no progress bar (default: on a terminal)")


# Options that only mean something when a model runs.
_MODEL_ONLY = ("model", "save_predictions", "threshold", "backend")


def run(args: argparse.Namespace) -> int:
    from ..evaluation.evaluate import evaluate, evaluate_predictions

    if args.predictions is not None:
        given = [name for name in _MODEL_ONLY if getattr(args, name) is not None]
        if given:
            option = "--" + given[0].replace("_", "-")
            raise ValueError(
                f"{option} applies to a model run; --predictions scores saved files and loads no model"
            )
        report = evaluate_predictions(
            args.predictions,
            data=args.data,
            tasks=args.task,
            json_path=args.json,
            overwrite=args.overwrite,
            num=args.num,
            seed=args.seed,
            max_images=args.max_images,
            detections=args.detections,
            ap_backend=args.ap_backend,
            progress=not args.no_progress,
            plot=args.plot,
        )
        return _print(args, report)
    report = evaluate(
        model=args.model or "shapes",
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
        backend=args.backend,
        progress=not args.no_progress,
        plot=args.plot,
        ap_backend=args.ap_backend,
    )
    return _print(args, report)


def _print(args: argparse.Namespace, report) -> int:
    print(report.tables(per_class=args.per_class))
    print()
    if args.json:
        print(f"results written to {args.json}")
    if args.plot:
        print(f"per-class chart written to {args.plot}")
    print(report.headline())
    return 0
