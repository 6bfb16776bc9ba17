"""``mask2former train``: train from scratch or fine-tune, on a dataset folder or on shapes.

Runs in one process, or in several under ``torchrun --nproc_per_node N -m mask2former train``.

The output folder holds one run: an existing non-empty ``--out`` needs ``--resume`` (continue
its run) or ``--overwrite`` (start over), and is refused before anything is loaded otherwise.

Only argument parsing lives here; the work is :func:`mask2former.training.train`.
"""

from __future__ import annotations

import argparse

from .common import (
    add_device_argument,
    add_loading_arguments,
    add_output_arguments,
    add_progress_argument,
    add_training_data_arguments,
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
)

COMMAND = "train"


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    model = parser.add_argument_group("model")
    model.add_argument(
        "--model-config",
        default="shapes-tiny",
        help="architecture to train from scratch: a preset (shapes-tiny, swin-tiny) or "
        "config.json (whose id2label names the classes of a dataset that does not)",
    )
    model.add_argument(
        "--init",
        default=None,
        help="fine-tune this model (folder, name, hub id); a dataset of other classes gets a "
        "new class head",
    )
    model.add_argument(
        "--decoder-layers",
        type=positive_int,
        default=None,
        help="change the transformer decoder to N-1 layers (N predictions, the config's "
        "decoder_layers); with --init the layers it adds start from random weights",
    )
    model.add_argument(
        "--num-queries", type=positive_int, default=None, help="change the number of object queries"
    )
    model.add_argument(
        "--num-points", type=positive_int, default=None, help="points per mask in the loss"
    )
    model.add_argument(
        "--matcher-class-cost",
        type=nonnegative_float,
        default=None,
        help="class-cost weight of the Hungarian matcher (the original recipe: 2.0, the class "
        "loss weight; transformers: 1.0, the default when the config has none)",
    )
    model.add_argument(
        "--mask-loss",
        default=None,
        choices=["points", "dense"],
        help="mask loss and matching on points chosen by uncertainty (the original) or on every "
        "cell of the predicted masks (cheaper for small inputs; default: the model's setting)",
    )


def _optimisation_arguments(parser: argparse.ArgumentParser) -> None:
    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--steps", type=positive_int, default=1000)
    add_loading_arguments(opt, batch_size=8, batch_help="per process", workers=True)
    opt.add_argument("--grad-accum", type=positive_int, default=1)
    opt.add_argument("--lr", type=positive_float, default=1e-4)
    opt.add_argument("--weight-decay", type=nonnegative_float, default=0.05)
    opt.add_argument("--backbone-multiplier", type=nonnegative_float, default=0.1)
    opt.add_argument(
        "--clip",
        type=nonnegative_float,
        default=0.01,
        help="full-model gradient norm clip (0: off)",
    )
    opt.add_argument("--schedule", default="step", choices=["step", "poly", "constant"])
    opt.add_argument("--warmup", type=nonnegative_int, default=0, help="warm-up steps")
    opt.add_argument("--warmup-factor", type=nonnegative_float, default=1.0)
    opt.add_argument("--amp", default="none", choices=["none", "bfloat16", "float16"])
    opt.add_argument("--seed", type=int, default=0)
    add_device_argument(opt)


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    run_ = parser.add_argument_group("run")
    run_.add_argument(
        "--eval-every", type=nonnegative_int, default=0, help="evaluate every N steps (0: never)"
    )
    run_.add_argument(
        "--eval-images", type=nonnegative_int, default=50, help="images per evaluation (0: none)"
    )
    run_.add_argument(
        "--log-every", type=positive_int, default=20, help="log the loss every N steps"
    )
    run_.add_argument(
        "--checkpoint-every",
        type=nonnegative_int,
        default=500,
        help="write a checkpoint every N steps (0: only at the end)",
    )
    run_.add_argument("--keep", type=positive_int, default=2, help="checkpoints to keep")
    add_progress_argument(run_)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_training_data_arguments(
        parser,
        num_train=2000,
        cache_help="keep every training sample in memory after its first read (about 0.35 MB "
        "per 256x256 image; with --workers 0): each image is generated or decoded once",
        scales=True,
    )
    _model_arguments(parser)
    add_output_arguments(
        parser,
        out_help="output folder (checkpoints, logs, final model)",
        resume_help="continue the run in --out from its newest checkpoint, with the same "
        "optimisation options (--lr, --batch-size, --grad-accum, --schedule, --seed, ...: a "
        "change is refused; --steps may grow, which stretches the schedule from there on); an "
        "empty or missing --out starts a new run",
        overwrite_help="start over in a non-empty --out: its previous run (step-* checkpoints, "
        "latest, log.jsonl, final/) is deleted once the new one is ready to train; other files "
        "are kept",
    )
    _optimisation_arguments(parser)
    _run_arguments(parser)


def settings(args: argparse.Namespace):
    """The :class:`~mask2former.training.TrainSettings` of the parsed options."""
    from ..training import DataSettings, ModelSettings, TrainConfig, TrainSettings

    data = DataSettings(
        data=args.data, task=args.task, num_train=args.num_train, cache=args.cache,
        data_seed=args.data_seed, image_size=args.image_size, crop=args.crop,
        min_scale=args.min_scale, max_scale=args.max_scale, eval_images=args.eval_images,
    )  # fmt: skip
    model = ModelSettings(
        model_config=args.model_config, init=args.init, decoder_layers=args.decoder_layers,
        num_queries=args.num_queries, num_points=args.num_points,
        matcher_class_cost=args.matcher_class_cost, mask_loss=args.mask_loss,
    )  # fmt: skip
    run_ = TrainConfig(
        output_dir=args.out, max_steps=args.steps, batch_size=args.batch_size,
        grad_accum=args.grad_accum, lr=args.lr, weight_decay=args.weight_decay,
        backbone_multiplier=args.backbone_multiplier, clip_norm=args.clip,
        schedule=args.schedule, warmup_steps=args.warmup, warmup_factor=args.warmup_factor,
        amp=args.amp, seed=args.seed, num_workers=args.workers, eval_every=args.eval_every,
        log_every=args.log_every, checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep, device=args.device, progress=not args.no_progress,
    )  # fmt: skip
    return TrainSettings(
        run=run_, data=data, model=model, resume=args.resume, overwrite=args.overwrite
    )


def run(args: argparse.Namespace) -> int:
    from ..training import train
    from ..training.console import one_line_warnings

    with one_line_warnings(COMMAND):
        result = train(settings(args))
    if result.final is not None:
        print(f"final model written to {result.final}; last values: {result.last}")
    return 0
