"""``mask2former train``: train from scratch or fine-tune, on a dataset folder or on shapes.

Runs in one process, or in several under ``torchrun --nproc_per_node N -m mask2former train``.
"""

from __future__ import annotations

import argparse
import os
from typing import List


def add_arguments(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("data")
    data.add_argument("--data", default="shapes", help="dataset folder or 'shapes' (generated)")
    data.add_argument(
        "--task",
        default="panoptic",
        choices=["panoptic", "instance", "semantic"],
        help="what the model is for: chooses the annotations and the default inference task",
    )
    data.add_argument("--num-train", type=int, default=2000, help="generated training images")
    data.add_argument(
        "--cache",
        action="store_true",
        help="keep every training sample in memory after its first read (about 0.35 MB per "
        "256x256 image; with --workers 0): each image is generated or decoded once",
    )
    data.add_argument("--data-seed", type=int, default=0, help="seed of the generated images")
    data.add_argument("--image-size", type=int, default=256, help="side of generated images")
    data.add_argument("--crop", type=int, default=256, help="training crop size (256)")
    data.add_argument("--min-scale", type=float, default=0.1, help="jitter scale range (0.1)")
    data.add_argument("--max-scale", type=float, default=2.0, help="(2.0)")
    model = parser.add_argument_group("model")
    model.add_argument(
        "--model-config",
        default="shapes-tiny",
        help="architecture to train from scratch: a preset (shapes-tiny, swin-tiny) or config.json",
    )
    model.add_argument("--init", default=None, help="fine-tune this model (folder, name, hub id)")
    model.add_argument(
        "--decoder-layers",
        type=int,
        default=None,
        help="change the transformer decoder to N-1 layers (N predictions, the config's "
        "decoder_layers); with --init the layers it adds start from random weights",
    )
    model.add_argument(
        "--num-queries", type=int, default=None, help="change the number of object queries"
    )
    model.add_argument("--num-points", type=int, default=None, help="points per mask in the loss")
    model.add_argument(
        "--matcher-class-cost",
        type=float,
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
    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--out", required=True, help="output folder (checkpoints, logs, final model)")
    opt.add_argument("--steps", type=int, default=1000)
    opt.add_argument("--batch-size", type=int, default=8, help="per process")
    opt.add_argument("--grad-accum", type=int, default=1)
    opt.add_argument("--lr", type=float, default=1e-4)
    opt.add_argument("--weight-decay", type=float, default=0.05)
    opt.add_argument("--backbone-multiplier", type=float, default=0.1)
    opt.add_argument("--clip", type=float, default=0.01, help="full-model gradient norm clip")
    opt.add_argument("--schedule", default="step", choices=["step", "poly", "constant"])
    opt.add_argument("--warmup", type=int, default=0, help="warm-up steps")
    opt.add_argument("--warmup-factor", type=float, default=1.0)
    opt.add_argument("--amp", default="none", choices=["none", "bfloat16", "float16"])
    opt.add_argument("--seed", type=int, default=0)
    opt.add_argument("--workers", type=int, default=0, help="data-loading processes")
    opt.add_argument("--device", default="cpu")
    run_ = parser.add_argument_group("run")
    run_.add_argument("--eval-every", type=int, default=0, help="evaluate every N steps")
    run_.add_argument("--eval-images", type=int, default=50, help="images per evaluation")
    run_.add_argument("--log-every", type=int, default=20, help="log the loss every N steps")
    run_.add_argument("--checkpoint-every", type=int, default=500)
    run_.add_argument("--keep", type=int, default=2, help="checkpoints to keep")
    run_.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    run_.add_argument("--no-progress", action="store_true")


def _id2label(dataset, config_labels=None):
    cats = getattr(dataset, "categories", None)
    if cats:
        return {i: str(c["name"]) for i, c in enumerate(sorted(cats, key=lambda c: int(c["id"])))}
    names = getattr(dataset, "label_names", None)
    if names:
        return dict(enumerate(names))
    if config_labels:
        return config_labels
    raise ValueError("the dataset names no classes; pass --model-config with an id2label")


def _set_task(config, dataset, task: str) -> List[int]:
    """Record the task and the stuff labels in ``config``; returns the thing labels."""
    cats = sorted(getattr(dataset, "categories", None) or [], key=lambda c: int(c["id"]))
    config.task = task
    config.stuff_label_ids = [i for i, c in enumerate(cats) if not c.get("isthing", 1)]
    return [i for i, c in enumerate(cats) if c.get("isthing", 1)]


# The generated split scored during training and pretraining: never a training seed (0 by
# default) nor the split the figures are reported on (12345).
VALIDATION_SEED = 99991


def _validation_set(args: argparse.Namespace):
    """The held-out images scored while training: ``--eval-images`` of the data's validation
    split (a generated one for ``shapes``)."""
    from ..data.loading import open_dataset

    return open_dataset(
        args.data,
        task=args.task,
        num=args.eval_images,
        seed=VALIDATION_SEED,
        image_size=args.image_size,
    )


def _training_processor(crop: int):
    """The image processor saved with a trained model: inputs resized as the training crops."""
    from ..processing.image_processor import Mask2FormerImageProcessor

    return Mask2FormerImageProcessor(size={"shortest_edge": crop, "longest_edge": 4 * crop})


def run(args: argparse.Namespace) -> int:
    import torch

    from ..data.cache import CachedDataset
    from ..data.loading import open_dataset
    from ..data.transforms import LargeScaleJitter, ResizeShortestEdgeCrop
    from ..evaluation.runner import evaluate_model
    from ..modeling.mask2former import Mask2FormerForUniversalSegmentation
    from ..training.data import TrainSamples
    from ..training.presets import model_config
    from ..training.trainer import TrainConfig, Trainer

    torch.manual_seed(args.seed)
    train_set = open_dataset(
        args.data,
        task=args.task,
        num=args.num_train,
        seed=args.data_seed,
        image_size=args.image_size,
    )
    id2label = _id2label(train_set)
    if args.cache:
        train_set = CachedDataset(train_set)
    # Config fields set from the command line. They are applied before the model is built, as
    # the criterion and matcher read their weights and point counts at construction.
    options = {
        "decoder_layers": args.decoder_layers,
        "num_queries": args.num_queries,
        "train_num_points": args.num_points,
        "matcher_class_cost": args.matcher_class_cost,
        "mask_loss_sampling": args.mask_loss,
    }
    overrides = {key: value for key, value in options.items() if value is not None}
    # Only a new decoder depth adds or removes tensors (new query counts are size mismatches,
    # which ignore_mismatched_sizes covers); any other missing tensor stays an error.
    reshaped = "decoder_layers" in overrides
    if args.init:
        model = Mask2FormerForUniversalSegmentation.from_pretrained(
            args.init,
            ignore_mismatched_sizes=True,
            reinit_missing=reshaped,
            id2label=id2label,
            **overrides,
        )
        config = model.config
    else:
        config = model_config(args.model_config, id2label)
        if overrides:
            config = type(config).from_dict({**config.to_dict(), **overrides})
        model = None
    _set_task(config, train_set, args.task)
    if model is None:
        model = Mask2FormerForUniversalSegmentation(config)
    processor = _training_processor(args.crop)
    if args.task == "semantic":
        transform = ResizeShortestEdgeCrop(args.crop, ignore_index=config.ignore_value)
    else:
        transform = LargeScaleJitter(args.crop, args.min_scale, args.max_scale)
    train_data = TrainSamples(train_set, transform, seed=args.seed)

    evaluate = None
    if args.eval_every or args.eval_images:
        val_set = _validation_set(args)
        tasks = ["panoptic", "instance", "semantic"] if args.task == "panoptic" else [args.task]

        def evaluate(m):
            results = evaluate_model(
                m, processor, val_set, tasks=tasks, batch_size=4, max_images=args.eval_images
            )
            flat = {}
            for key, task in (("PQ", "panoptic"), ("AP", "instance"), ("mIoU", "semantic")):
                if task in results:
                    flat[key] = round(float(results[task][key]), 2)
            return flat

    config_t = TrainConfig(
        output_dir=args.out,
        max_steps=args.steps,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        lr=args.lr,
        weight_decay=args.weight_decay,
        backbone_multiplier=args.backbone_multiplier,
        clip_norm=args.clip,
        schedule=args.schedule,
        warmup_steps=args.warmup,
        warmup_factor=args.warmup_factor,
        amp=args.amp,
        seed=args.seed,
        num_workers=args.workers,
        eval_every=args.eval_every,
        log_every=args.log_every,
        checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep,
        device=args.device,
        progress=not args.no_progress,
    )
    trainer = Trainer(model, train_data, config_t, evaluate=evaluate, image_processor=processor)
    if args.resume and trainer.resume():
        print(f"resumed at step {trainer.step}")
    last = trainer.fit()
    if trainer.dist.is_main:
        final = os.path.join(args.out, "final")
        model.save_pretrained(final)
        processor.save_pretrained(final)
        print(f"final model written to {final}; last values: {last}")
    trainer.dist.close()
    return 0
