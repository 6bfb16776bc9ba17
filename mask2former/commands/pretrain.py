"""``mask2former pretrain-backbone``: teach a from-scratch backbone the classes of its masks.

Writes a complete model folder (config, preprocessor config, weights) whose backbone is
pretrained and whose other parts are freshly initialised, for ``mask2former train --init``.
See :mod:`mask2former.training.pretrain` for why and how.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output model folder")
    parser.add_argument("--data", default="shapes", help="dataset folder or 'shapes' (generated)")
    parser.add_argument("--task", default="panoptic", choices=["panoptic", "instance", "semantic"])
    parser.add_argument("--num-train", type=int, default=20000, help="generated training images")
    parser.add_argument(
        "--cache",
        action="store_true",
        help="keep every training sample in memory after its first read (about 0.35 MB per "
        "256x256 image): each image is generated or decoded once",
    )
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the generated images")
    parser.add_argument("--image-size", type=int, default=256, help="side of generated images")
    parser.add_argument("--crop", type=int, default=256, help="training crop size (256)")
    parser.add_argument(
        "--model-config", default="shapes-tiny", help="a preset (shapes-tiny, ...) or config.json"
    )
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument(
        "--schedule",
        default="constant",
        choices=["constant", "poly"],
        help="learning rate: constant, or polynomial decay to zero",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-images", type=int, default=64, help="held-out images (0: none)")
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    import json
    import os

    import torch

    from ..data.cache import CachedDataset
    from ..data.loading import open_dataset
    from ..data.transforms import LargeScaleJitter
    from ..modeling.mask2former import Mask2FormerForUniversalSegmentation
    from ..training.data import TrainSamples, collate
    from ..training.presets import model_config
    from ..training.pretrain import MaskPooledClassifier, PretrainConfig, pretrain_backbone
    from .train import _id2label, _set_task, _training_processor, _validation_set

    torch.manual_seed(args.seed)
    open_args = dict(task=args.task, image_size=args.image_size)
    train_set = open_dataset(args.data, num=args.num_train, seed=args.data_seed, **open_args)
    id2label = _id2label(train_set)
    if args.cache:
        train_set = CachedDataset(train_set)
    config = model_config(args.model_config, id2label)
    thing_labels = _set_task(config, train_set, args.task)
    model = Mask2FormerForUniversalSegmentation(config)
    backbone = model.model.pixel_level_module.encoder

    # Scale 1 keeps objects at their size in the data; flips are free variety.
    transform = LargeScaleJitter(args.crop, 1.0, 1.0)
    train_data = TrainSamples(train_set, transform, seed=args.seed)
    held_out = None
    if args.eval_images:
        val = TrainSamples(
            _validation_set(args),
            LargeScaleJitter(args.crop, 1.0, 1.0, flip_prob=0.0),
        )
        items = [val[(0, i)] for i in range(min(args.eval_images, len(val)))]
        held_out = [collate(items[k : k + 16]) for k in range(0, len(items), 16)]
    classifier = MaskPooledClassifier(backbone, config.num_labels)
    last = pretrain_backbone(
        classifier,
        train_data,
        PretrainConfig(
            output_dir=args.out,
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            schedule=args.schedule,
            seed=args.seed,
            eval_every=args.eval_every,
            progress=not args.no_progress,
        ),
        held_out=held_out,
        thing_labels=thing_labels or None,
    )
    model.save_pretrained(args.out)
    _training_processor(args.crop).save_pretrained(args.out)
    print(
        f"model with a pretrained backbone written to {args.out}; last values: {json.dumps(last)}"
    )
    print(f"fine-tune it with: mask2former train --init {os.path.abspath(args.out)} ...")
    return 0
