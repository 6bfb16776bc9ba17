"""``mask2former train``: train from scratch or fine-tune, on a dataset folder or on shapes.

Runs in one process, or in several under ``torchrun --nproc_per_node N -m mask2former train``.

The output folder holds one run: an existing non-empty ``--out`` needs ``--resume`` (continue
its run) or ``--overwrite`` (start over), and is refused before anything is loaded otherwise.
"""

from __future__ import annotations

import argparse
import os
import warnings
from typing import Any, Dict, List, Optional, Tuple

from .common import (
    device,
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
)

COMMAND = "train"


def _data_arguments(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("data")
    data.add_argument("--data", default="shapes", help="dataset folder or 'shapes' (generated)")
    data.add_argument(
        "--task",
        default="panoptic",
        choices=["panoptic", "instance", "semantic"],
        help="what the model is for: chooses the annotations and the default inference task",
    )
    data.add_argument(
        "--num-train", type=positive_int, default=2000, help="generated training images"
    )
    data.add_argument(
        "--cache",
        action="store_true",
        help="keep every training sample in memory after its first read (about 0.35 MB per "
        "256x256 image; with --workers 0): each image is generated or decoded once",
    )
    data.add_argument("--data-seed", type=int, default=0, help="seed of the generated images")
    data.add_argument(
        "--image-size", type=positive_int, default=256, help="side of generated images"
    )
    data.add_argument("--crop", type=positive_int, default=256, help="training crop size (256)")
    data.add_argument(
        "--min-scale", type=positive_float, default=0.1, help="jitter scale range (0.1)"
    )
    data.add_argument("--max-scale", type=positive_float, default=2.0, help="(2.0)")


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
    opt.add_argument("--out", required=True, help="output folder (checkpoints, logs, final model)")
    opt.add_argument("--steps", type=positive_int, default=1000)
    opt.add_argument("--batch-size", type=positive_int, default=8, help="per process")
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
    opt.add_argument("--workers", type=nonnegative_int, default=0, help="data-loading processes")
    opt.add_argument("--device", type=device, default="cpu", help="cpu, cuda or cuda:N")


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
    start = run_.add_mutually_exclusive_group()
    start.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its newest checkpoint, with the same optimisation "
        "options (--lr, --batch-size, --grad-accum, --schedule, --seed, ...: a change is "
        "refused; --steps may grow, which stretches the schedule from there on); an empty or "
        "missing --out starts a new run",
    )
    start.add_argument(
        "--overwrite",
        action="store_true",
        help="start over in a non-empty --out: its previous run (step-* checkpoints, latest, "
        "log.jsonl, final/) is deleted once the new one is ready to train; other files are "
        "kept",
    )
    run_.add_argument("--no-progress", action="store_true")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _data_arguments(parser)
    _model_arguments(parser)
    _optimisation_arguments(parser)
    _run_arguments(parser)


# -- classes --------------------------------------------------------------------------------


def _config_labels(spec: str) -> Optional[Dict[int, str]]:
    """The named classes of a --model-config config.json (None for a preset or no names)."""
    from ..config import Mask2FormerConfig
    from ..data.loading import _named
    from ..training.presets import PRESETS

    if spec in PRESETS:
        return None
    labels = Mask2FormerConfig.from_json_file(spec).id2label
    return labels if _named(labels) else None


def _id2label(
    dataset, init_labels: Optional[Dict[int, str]] = None, model_config: Optional[str] = None
) -> Tuple[Dict[int, str], str]:
    """The classes to train and where they come from: the dataset's own (its categories, or a
    semantic folder's categories.json) first, then the --init model's, then those of the
    --model-config config.json."""
    from ..data.loading import dataset_id2label

    labels = dataset_id2label(dataset)
    if labels:
        return labels, "the dataset"
    if init_labels:
        return dict(init_labels), "--init"
    labels = _config_labels(model_config) if model_config else None
    if labels:
        return labels, "--model-config"
    raise ValueError(
        "the dataset names no classes: add a categories.json (id, name) beside its images/, or "
        "pass --init MODEL or --model-config CONFIG.json with an id2label"
    )


def _set_task(config, dataset, task: str) -> List[int]:
    """Record the task and the stuff labels in ``config``; returns the thing labels. A dataset
    without categories keeps the config's stuff labels (the --init model's)."""
    cats = sorted(getattr(dataset, "categories", None) or [], key=lambda c: int(c["id"]))
    config.task = task
    if not cats:
        stuff = set(getattr(config, "stuff_label_ids", None) or [])
        return [i for i in range(config.num_labels) if i not in stuff]
    config.stuff_label_ids = [i for i, c in enumerate(cats) if not c.get("isthing", 1)]
    return [i for i, c in enumerate(cats) if c.get("isthing", 1)]


def _note_label_change(init: str, init_labels: Dict[int, str], id2label: Dict[int, str]) -> bool:
    """Say in one line how the --init model's classes differ from the dataset's; True when
    its class head is re-initialised (the counts differ)."""
    from ..data.loading import describe_label_mismatch
    from ..training.console import note, warn

    problem = describe_label_mismatch(init_labels, id2label)
    if problem is None:
        return False
    if len(init_labels) != len(id2label):
        note(COMMAND, f"--init {init}: {problem}; fine-tuning with a new class head")
        return True
    warn(
        COMMAND,
        f"--init {init}: {problem}; its class head is kept, so each class is fine-tuned as the "
        "dataset's class of the same number",
    )
    return False


def _only_class_head(message: str) -> bool:
    """Whether a re-initialisation warning of from_pretrained names only the class head."""
    from ..checkpoint import HEAD_PREFIXES

    if not message.startswith("re-initialised") or ": " not in message:
        return False
    names = message.rsplit(": ", 1)[1].split(", ")
    return all(name.startswith(HEAD_PREFIXES) for name in names)


def _load_init(args, id2label, overrides: Dict[str, Any], head_noted: bool):
    """The --init model for these classes and config overrides. Its warning about a
    re-initialised class head is dropped when the label note already said so."""
    from ..modeling.mask2former import Mask2FormerForUniversalSegmentation

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = Mask2FormerForUniversalSegmentation.from_pretrained(
            args.init,
            ignore_mismatched_sizes=True,
            # Only a new decoder depth adds or removes tensors (new query counts are size
            # mismatches, which ignore_mismatched_sizes covers); any other missing tensor
            # stays an error.
            reinit_missing="decoder_layers" in overrides,
            id2label=id2label,
            **overrides,
        )
    for w in caught:
        if not (head_noted and _only_class_head(str(w.message))):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return model


# -- the run --------------------------------------------------------------------------------


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


def _train_config(args: argparse.Namespace):
    from ..training.trainer import TrainConfig

    return TrainConfig(
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


def _build_model(args: argparse.Namespace, train_set):
    """The model to train (from --init or --model-config) for the dataset's classes."""
    from ..config import Mask2FormerConfig
    from ..modeling.mask2former import Mask2FormerForUniversalSegmentation
    from ..training.console import note
    from ..training.presets import model_config

    init_labels = Mask2FormerConfig.from_pretrained(args.init).id2label if args.init else None
    id2label, source = _id2label(train_set, init_labels, args.model_config)
    if source != "the dataset":
        note(
            COMMAND, f"the dataset names no classes: using the {len(id2label)} classes of {source}"
        )
        # A label value past these classes is then a DatasetError naming its file.
        train_set.num_labels = len(id2label)
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
    if args.init:
        head_noted = _note_label_change(args.init, init_labels, id2label)
        model = _load_init(args, id2label, overrides, head_noted)
        _set_task(model.config, train_set, args.task)
        return model
    config = model_config(args.model_config, id2label)
    if overrides:
        config = type(config).from_dict({**config.to_dict(), **overrides})
    _set_task(config, train_set, args.task)
    return Mask2FormerForUniversalSegmentation(config)


def _evaluator(args: argparse.Namespace, processor):
    """``evaluate(model) -> {metric: value}`` on the validation images, or None."""
    from ..evaluation.runner import evaluate_model

    if not (args.eval_every or args.eval_images):
        return None
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

    return evaluate


def _open_training_set(args: argparse.Namespace):
    from ..data.loading import open_dataset

    return open_dataset(
        args.data,
        task=args.task,
        num=args.num_train,
        seed=args.data_seed,
        image_size=args.image_size,
    )


def run(args: argparse.Namespace) -> int:
    from ..training.console import one_line_warnings
    from ..training.run_folder import output_mode

    # Before anything is loaded: a mistake here costs nothing.
    mode = output_mode(args.out, args.resume, args.overwrite)
    if args.min_scale > args.max_scale:
        raise ValueError(f"--min-scale {args.min_scale} is above --max-scale {args.max_scale}")
    with one_line_warnings(COMMAND):
        return _train(args, mode)


def _train(args: argparse.Namespace, mode: str) -> int:
    import torch

    from ..data.cache import CachedDataset
    from ..data.augment import LargeScaleJitter, ResizeShortestEdgeCrop
    from ..training.checkpointing import (
        latest_checkpoint,
        load_training_state,
        remove_run,
        save_model_folder,
    )
    from ..training.console import note
    from ..training.data import TrainSamples
    from ..training.run_folder import check_resume
    from ..training.trainer import Trainer

    config_t = _train_config(args)
    checkpoint = state = None
    if mode == "resume":  # its options are checked before the data and the model are loaded
        checkpoint = latest_checkpoint(args.out)
        state = load_training_state(checkpoint)
        check_resume(state, config_t, checkpoint, COMMAND)
    torch.manual_seed(args.seed)
    train_set = _open_training_set(args)
    model = _build_model(args, train_set)
    if args.cache:
        train_set = CachedDataset(train_set)
    processor = _training_processor(args.crop)
    if args.task == "semantic":
        transform = ResizeShortestEdgeCrop(args.crop, ignore_index=model.config.ignore_value)
    else:
        transform = LargeScaleJitter(args.crop, args.min_scale, args.max_scale)
    train_data = TrainSamples(train_set, transform, seed=args.seed)
    evaluate = _evaluator(args, processor)
    trainer = Trainer(model, train_data, config_t, evaluate=evaluate, image_processor=processor)
    if mode == "overwrite" and trainer.dist.is_main:
        # Only now, with the new run ready: a mistake above leaves the old run as it was.
        removed = remove_run(args.out)
        if removed:
            note(COMMAND, f"--overwrite: removed the previous run in {args.out}")
    trainer.dist.barrier()
    if checkpoint is not None:
        trainer.resume(checkpoint, state)
        print(f"resumed at step {trainer.step}")
    elif args.resume:
        note(COMMAND, f"--resume: no checkpoint in {args.out} yet; starting a new run")
    last = trainer.fit()
    if trainer.dist.is_main:
        final = os.path.join(args.out, "final")
        trainer.check_weights()
        save_model_folder(final, model, processor)
        print(f"final model written to {final}; last values: {last}")
    trainer.dist.close()
    return 0
