"""``mask2former segment``: segment images and write overlays, id maps and JSON.

Only argument parsing lives here; the work is :func:`mask2former.segment`.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from ..config import TASKS
from .common import (
    add_inference_model_arguments,
    add_loading_arguments,
    add_output_arguments,
    add_progress_argument,
    probability,
)


def _label_ids(values: Optional[List[str]]) -> Optional[List[int]]:
    """``--label-ids-to-fuse 5 6 7`` or ``5,6,7``; ``none`` (or nothing) fuses no class."""
    if values is None:
        return None
    ids: List[int] = []
    for value in values:
        for part in value.replace(",", " ").split():
            if part.lower() == "none":
                continue
            try:
                ids.append(int(part))
            except ValueError:
                raise ValueError(
                    f"--label-ids-to-fuse takes integer class ids, got {part!r}"
                ) from None
    return ids


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image files, folders (searched recursively) or glob patterns (quote them)",
    )
    model = add_inference_model_arguments(parser)
    add_loading_arguments(
        model,
        batch_size=1,
        metavar="N",
        batch_help="images per forward pass; only same-size inputs are batched together "
        "(default: 1)",
    )
    task = parser.add_argument_group("segmentation")
    task.add_argument(
        "--task", choices=TASKS, help="default: the task the model was trained for, else panoptic"
    )
    task.add_argument(
        "--threshold",
        type=probability,
        default=None,
        metavar="F",
        help="minimum segment score, panoptic and instance (default: the model's "
        "object_mask_threshold, else 0.5)",
    )
    task.add_argument(
        "--label-ids-to-fuse",
        nargs="*",
        metavar="ID",
        help="panoptic: classes merged into one segment per image (default: the model's stuff "
        "classes; 'none' for no class)",
    )
    output = add_output_arguments(
        parser,
        out_help="output folder (default: out)",
        overwrite_help="replace existing outputs (default: skip them)",
        default="out",
        metavar="DIR",
    )
    add_progress_argument(output, help="no progress bar (default: on a terminal)")


def run(args: argparse.Namespace) -> int:
    from ..inference.segment_files import segment

    report = segment(
        args.inputs,
        args.out,
        model=args.model,
        task=args.task,
        threshold=args.threshold,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        backend=args.backend,
        label_ids_to_fuse=_label_ids(args.label_ids_to_fuse),
        overwrite=args.overwrite,
        progress=False if args.no_progress else None,
    )
    print(f"mask2former segment: {report.summary()}; outputs in {args.out}", file=sys.stdout)
    return 0 if report.ok else 1
