"""One call that trains a model: :func:`train` with :class:`TrainSettings` (what
``mask2former train`` does, from Python).

Example::

    from mask2former.training import DataSettings, TrainConfig, TrainSettings, train

    result = train(TrainSettings(
        run=TrainConfig(output_dir="runs/a", max_steps=2000, batch_size=4),
        data=DataSettings(data="path/to/coco-panoptic-folder", crop=512),
    ))
    print(result.final)  # runs/a/final: config.json, model.safetensors, preprocessor_config.json

The output folder holds one run: a non-empty one needs ``resume`` (continue its run) or
``overwrite`` (start over), and is refused before anything is loaded otherwise. Messages name
the command's options (``--resume``, ``--lr``, ...), as the command's are these.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import torch

from ..data.cache import CachedDataset
from .checkpointing import (
    FINAL,
    latest_checkpoint,
    load_training_state,
    remove_run,
    save_model_folder,
)
from .console import note
from .recipe import (
    DataSettings,
    ModelSettings,
    augmentation,
    build_model,
    open_training_set,
    training_processor,
    training_samples,
    validation_evaluator,
    validation_previews,
)
from .run_folder import check_resume, output_mode
from .settings import TrainConfig
from .trainer import Trainer

__all__ = ["TrainResult", "TrainSettings", "build_trainer", "train"]

COMMAND = "train"


@dataclass
class TrainSettings:
    """A training run: its optimisation and run settings (``run.output_dir`` is the run
    folder), its data and its model; ``resume`` continues the run in a non-empty
    ``output_dir``, ``overwrite`` starts over there (deleting only the old run's files, once
    the new run is ready)."""

    run: TrainConfig
    data: DataSettings = field(default_factory=DataSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    resume: bool = False
    overwrite: bool = False


@dataclass
class TrainResult:
    """``final``: the trained model's folder (None in the processes of a multi-process run
    other than the main one); ``last``: the last logged values (and final metrics)."""

    final: Optional[str]
    last: Dict[str, Any]


def train(settings: TrainSettings) -> TrainResult:
    """Train (or fine-tune, or resume) as ``settings`` say; write checkpoints, the log and
    ``output_dir/final``.

    Raises:
        FileExistsError, NotADirectoryError: the output folder may not be used so (before
            anything is loaded).
        ValueError: a setting a resumed run must keep differs, or the data or the classes
            do not fit.
        CheckpointError, DatasetError: a damaged checkpoint or dataset, naming the file.
        TrainingDiverged: the loss, gradients or weights became NaN or infinite.
    """
    out = settings.run.output_dir
    # Before anything is loaded: a mistake here costs nothing.
    mode = output_mode(out, settings.resume, settings.overwrite)
    settings.data.check()
    checkpoint = state = None
    if mode == "resume":  # its options are checked before the data and the model are loaded
        checkpoint = latest_checkpoint(out)
        state = load_training_state(checkpoint)
        check_resume(state, settings.run, checkpoint, COMMAND)
    torch.manual_seed(settings.run.seed)
    trainer = build_trainer(settings)
    if mode == "overwrite" and trainer.dist.is_main:
        # Only now, with the new run ready: a mistake above leaves the old run as it was.
        if remove_run(out):
            note(COMMAND, f"--overwrite: removed the previous run in {out}")
    trainer.dist.barrier()
    if checkpoint is not None:
        trainer.resume(checkpoint, state)
        print(f"resumed at step {trainer.step}")
    elif settings.resume:
        note(COMMAND, f"--resume: no checkpoint in {out} yet; starting a new run")
    last = trainer.fit()
    final = None
    if trainer.dist.is_main:
        final = os.path.join(out, FINAL)
        trainer.check_weights()
        save_model_folder(final, trainer.model, trainer.image_processor)
    trainer.dist.close()
    return TrainResult(final=final, last=last)


def build_trainer(settings: TrainSettings) -> Trainer:
    """The :class:`Trainer` of ``settings`` (datasets opened, model built or loaded for their
    classes, the image processor to save with it), before any step or resume."""
    data = settings.data
    train_set = open_training_set(data)
    model = build_model(settings.model, train_set, data.task, COMMAND)
    if data.cache:
        train_set = CachedDataset(train_set)
    processor = training_processor(data.crop)
    transform = augmentation(data, ignore_index=model.config.ignore_value)
    samples = training_samples(train_set, transform, processor, seed=settings.run.seed)
    evaluate = validation_evaluator(data, processor, settings.run.eval_every)
    previews = validation_previews(data, processor) if evaluate else None
    return Trainer(
        model, samples, settings.run, evaluate=evaluate, image_processor=processor,
        previews=previews,
    )  # fmt: skip
