"""``mask2former plot``: the training curves of one or more runs in one PNG (needs the plot
extra; see mask2former.training.curves)."""

from __future__ import annotations

import argparse

from .common import add_output_arguments, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "runs",
        nargs="+",
        metavar="RUN",
        help="run folder (its log.jsonl, training_log.jsonl or pretrain_log.jsonl) or .jsonl file",
    )
    add_output_arguments(
        parser,
        out_help="the PNG to write: loss, loss terms, learning rate, gradient norm and "
        "evaluation metrics, one line per run",
        overwrite_help="replace an existing --out file",
        metavar="FILE",
    )
    size = parser.add_argument_group("size")
    size.add_argument(
        "--width", type=positive_int, default=1500, metavar="PX", help="width in pixels (1500)"
    )
    size.add_argument(
        "--height",
        type=positive_int,
        default=None,
        metavar="PX",
        help="height in pixels (default: 300 per row of panels)",
    )


def run(args: argparse.Namespace) -> int:
    from ..training.curves import plot_curves

    logs = plot_curves(
        args.runs, args.out, overwrite=args.overwrite, width=args.width, height=args.height
    )
    print(
        f"curves of {len(logs)} run(s) written to {args.out}: {', '.join(log.name for log in logs)}"
    )
    return 0
