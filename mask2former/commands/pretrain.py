"""``mask2former pretrain-backbone``: teach a from-scratch backbone the classes of its masks.

Writes a complete model folder (config, preprocessor config, weights) whose backbone is
pretrained and whose other parts are freshly initialised, for ``mask2former train --init``.
See :mod:`mask2former.training.pretrain` for why and how.

A non-empty ``--out`` is refused before anything is loaded unless ``--overwrite`` is given.
"""

from __future__ import annotations

import argparse

from .common import device, nonnegative_int, positive_float, positive_int

COMMAND = "pretrain-backbone"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output model folder")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty --out: its pretrain_log.jsonl is deleted once the new run "
        "is ready to train, and its model files are replaced at the end; other files are kept",
    )
    parser.add_argument("--data", default="shapes", help="dataset folder or 'shapes' (generated)")
    parser.add_argument("--task", default="panoptic", choices=["panoptic", "instance", "semantic"])
    parser.add_argument(
        "--num-train", type=positive_int, default=20000, help="generated training images"
    )
    parser.add_argument(
        "--cache",
        action="store_true",
        help="keep every training sample in memory after its first read (about 0.35 MB per "
        "256x256 image): each image is generated or decoded once",
    )
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the generated images")
    parser.add_argument(
        "--image-size", type=positive_int, default=256, help="side of generated images"
    )
    parser.add_argument("--crop", type=positive_int, default=256, help="training crop size (256)")
    parser.add_argument(
        "--model-config",
        default="shapes-tiny",
        help="a preset (shapes-tiny, ...) or config.json (whose id2label names the classes of a "
        "dataset that does not)",
    )
    parser.add_argument("--steps", type=positive_int, default=2500)
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--lr", type=positive_float, default=1e-3)
    parser.add_argument(
        "--schedule",
        default="constant",
        choices=["constant", "poly"],
        help="learning rate: constant, or polynomial decay to zero",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--eval-images", type=nonnegative_int, default=64, help="held-out images (0: none)"
    )
    parser.add_argument(
        "--eval-every",
        type=positive_int,
        default=500,
        help="score the held-out images every N steps",
    )
    parser.add_argument("--device", type=device, default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--no-progress", action="store_true")


def _held_out(args: argparse.Namespace):
    """Collated batches of the validation images, or None with --eval-images 0."""
    from ..data.augment import LargeScaleJitter
    from ..training.data import TrainSamples, collate
    from .train import _validation_set

    if not args.eval_images:
        return None
    val = TrainSamples(_validation_set(args), LargeScaleJitter(args.crop, 1.0, 1.0, flip_prob=0.0))
    items = [val[(0, i)] for i in range(min(args.eval_images, len(val)))]
    return [collate(items[k : k + 16]) for k in range(0, len(items), 16)]


def run(args: argparse.Namespace) -> int:
    from ..training.console import one_line_warnings
    from ..training.run_folder import output_mode

    # Before anything is loaded: a mistake here costs nothing.
    mode = output_mode(args.out, resume=None, overwrite=args.overwrite)
    with one_line_warnings(COMMAND):
        return _pretrain(args, mode)


def _pretrain(args: argparse.Namespace, mode: str) -> int:
    import json
    import os

    import torch

    from ..data.cache import CachedDataset
    from ..data.loading import open_dataset
    from ..data.augment import LargeScaleJitter
    from ..modeling.mask2former import Mask2FormerForUniversalSegmentation
    from ..training.checkpointing import save_model_files
    from ..training.console import note
    from ..training.data import TrainSamples
    from ..training.presets import model_config
    from ..training.pretrain import (
        LOG_FILE,
        MaskPooledClassifier,
        PretrainConfig,
        pretrain_backbone,
    )
    from ..training.trainer import TrainingDiverged
    from .train import _id2label, _set_task, _training_processor

    config_p = PretrainConfig(
        output_dir=args.out,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        schedule=args.schedule,
        seed=args.seed,
        eval_every=args.eval_every,
        progress=not args.no_progress,
        device=args.device,
    )
    torch.manual_seed(args.seed)
    open_args = dict(task=args.task, image_size=args.image_size)
    train_set = open_dataset(args.data, num=args.num_train, seed=args.data_seed, **open_args)
    id2label, source = _id2label(train_set, model_config=args.model_config)
    if source != "the dataset":
        note(
            COMMAND, f"the dataset names no classes: using the {len(id2label)} classes of {source}"
        )
        train_set.num_labels = len(id2label)
    if args.cache:
        train_set = CachedDataset(train_set)
    config = model_config(args.model_config, id2label)
    thing_labels = _set_task(config, train_set, args.task)
    model = Mask2FormerForUniversalSegmentation(config)
    backbone = model.model.pixel_level_module.encoder

    # Scale 1 keeps objects at their size in the data; flips are free variety.
    train_data = TrainSamples(train_set, LargeScaleJitter(args.crop, 1.0, 1.0), seed=args.seed)
    held_out = _held_out(args)
    classifier = MaskPooledClassifier(backbone, config.num_labels)
    log_path = os.path.join(args.out, LOG_FILE)
    if mode == "overwrite" and os.path.lexists(log_path):
        # Only now, with the new run ready: the old log would mix with the new one.
        os.unlink(log_path)
        note(COMMAND, f"--overwrite: removed the previous {log_path}")
    last = pretrain_backbone(
        classifier, train_data, config_p, held_out=held_out, thing_labels=thing_labels or None
    )
    model.cpu()
    if any(v.is_floating_point() and not v.isfinite().all() for v in model.state_dict().values()):
        raise TrainingDiverged("pretraining made NaN or infinite weights; nothing was saved")
    save_model_files(args.out, model, _training_processor(args.crop))
    print(
        f"model with a pretrained backbone written to {args.out}; last values: {json.dumps(last)}"
    )
    print(f"fine-tune it with: mask2former train --init {os.path.abspath(args.out)} ...")
    return 0
