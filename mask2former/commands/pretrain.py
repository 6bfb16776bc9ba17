"""``mask2former pretrain-backbone``: teach a from-scratch backbone the classes of its masks.

Writes a complete model folder (config, preprocessor config, weights) whose backbone is
pretrained and whose other parts are freshly initialised, for ``mask2former train --init``.
See :mod:`mask2former.training.pretrain` for why and how.

A non-empty ``--out`` is refused before anything is loaded unless ``--overwrite`` is given.

Only argument parsing lives here; the work is :func:`mask2former.training.pretrain`.
"""

from __future__ import annotations

import argparse

from .common import (
    add_device_argument,
    add_loading_arguments,
    add_output_arguments,
    add_progress_argument,
    add_training_data_arguments,
    nonnegative_int,
    positive_float,
    positive_int,
)

COMMAND = "pretrain-backbone"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_output_arguments(
        parser,
        out_help="output model folder",
        overwrite_help="write into a non-empty --out: its pretrain_log.jsonl is deleted once "
        "the new run is ready to train, and its model files are replaced at the end; other "
        "files are kept",
    )
    add_training_data_arguments(
        parser,
        num_train=20000,
        cache_help="keep every training sample in memory after its first read (about 0.35 MB "
        "per 256x256 image): each image is generated or decoded once",
        scales=False,
    )
    model = parser.add_argument_group("model")
    model.add_argument(
        "--model-config",
        default="shapes-tiny",
        help="a preset (shapes-tiny, ...) or config.json (whose id2label names the classes of a "
        "dataset that does not)",
    )
    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--steps", type=positive_int, default=2500)
    add_loading_arguments(opt, batch_size=8)
    opt.add_argument("--lr", type=positive_float, default=1e-3)
    opt.add_argument(
        "--schedule",
        default="constant",
        choices=["constant", "poly"],
        help="learning rate: constant, or polynomial decay to zero",
    )
    opt.add_argument("--seed", type=int, default=0)
    add_device_argument(opt)
    run_ = parser.add_argument_group("run")
    run_.add_argument(
        "--eval-images", type=nonnegative_int, default=64, help="held-out images (0: none)"
    )
    run_.add_argument(
        "--eval-every",
        type=positive_int,
        default=500,
        help="score the held-out images every N steps",
    )
    add_progress_argument(run_)


def settings(args: argparse.Namespace):
    """The :class:`~mask2former.training.PretrainSettings` of the parsed options."""
    from ..training import DataSettings, PretrainConfig, PretrainSettings

    data = DataSettings(
        data=args.data, task=args.task, num_train=args.num_train, cache=args.cache,
        data_seed=args.data_seed, image_size=args.image_size, crop=args.crop,
        eval_images=args.eval_images,
    )  # fmt: skip
    optimisation = PretrainConfig(
        output_dir=args.out, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
        schedule=args.schedule, seed=args.seed, eval_every=args.eval_every,
        progress=not args.no_progress, device=args.device,
    )  # fmt: skip
    return PretrainSettings(
        pretrain=optimisation, data=data, model_config=args.model_config, overwrite=args.overwrite
    )


def run(args: argparse.Namespace) -> int:
    import json
    import os

    from ..training import pretrain
    from ..training.console import one_line_warnings

    with one_line_warnings(COMMAND):
        result = pretrain(settings(args))
    print(
        f"model with a pretrained backbone written to {result.folder}; last values: "
        f"{json.dumps(result.last)}"
    )
    print(f"fine-tune it with: mask2former train --init {os.path.abspath(result.folder)} ...")
    return 0
