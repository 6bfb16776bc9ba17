"""One call that pretrains a backbone: :func:`pretrain` with :class:`PretrainSettings` (what
``mask2former pretrain-backbone`` does, from Python).

It writes a complete model folder (config, preprocessor config, weights, and
``pretrain_log.jsonl``) whose backbone is pretrained by mask-pooled classification (see
:mod:`mask2former.training.pretrain`) and whose other parts are freshly initialised, for
``train`` with ``ModelSettings(init=folder)``. A non-empty output folder is refused before
anything is loaded unless ``overwrite`` is set.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch

from ..data.augment import LargeScaleJitter
from ..data.cache import CachedDataset
from ..modeling.mask2former import Mask2FormerForUniversalSegmentation
from ..processing.image_processor import Mask2FormerImageProcessor
from .checkpointing import EVENTS_DIR, save_model_files
from .console import note
from .data import collate
from .divergence import TrainingDiverged
from .labels import dataset_labels, set_task
from .presets import model_config
from .pretrain import LOG_FILE, MaskPooledClassifier, PretrainConfig, pretrain_backbone
from .recipe import (
    DataSettings,
    open_training_set,
    open_validation_set,
    training_processor,
    training_samples,
)
from .run_folder import output_mode

__all__ = ["PretrainResult", "PretrainSettings", "pretrain"]

COMMAND = "pretrain-backbone"


@dataclass
class PretrainSettings:
    """A pretraining: its optimisation (``pretrain.output_dir`` is the model folder to
    write), its data (crops at scale 1; the scale range is not used), the architecture
    ``model_config`` (a preset name or config.json), and ``overwrite`` to write into a
    non-empty folder (its old log is deleted once the new run is ready)."""

    pretrain: PretrainConfig
    data: DataSettings = field(
        default_factory=lambda: DataSettings(num_train=20000, eval_images=64)
    )
    model_config: str = "shapes-tiny"
    overwrite: bool = False


@dataclass
class PretrainResult:
    """``folder``: the model folder written; ``last``: the last log record."""

    folder: str
    last: Dict[str, Any]


def pretrain(settings: PretrainSettings) -> PretrainResult:
    """Pretrain the backbone of a new ``model_config`` model on ``data`` and write the model.

    Raises:
        FileExistsError, NotADirectoryError: the output folder may not be used so (before
            anything is loaded).
        ValueError, DatasetError: the data or its classes do not fit.
        TrainingDiverged: the loss, gradients or weights became NaN or infinite; nothing is
            saved.
    """
    out, data, seed = settings.pretrain.output_dir, settings.data, settings.pretrain.seed
    # Before anything is loaded: a mistake here costs nothing.
    mode = output_mode(out, resume=None, overwrite=settings.overwrite)
    torch.manual_seed(seed)
    train_set = open_training_set(data)
    id2label = dataset_labels(train_set, None, settings.model_config, COMMAND)
    if data.cache:
        train_set = CachedDataset(train_set)
    config = model_config(settings.model_config, id2label)
    thing_labels = set_task(config, train_set, data.task)
    model = Mask2FormerForUniversalSegmentation(config)
    processor = training_processor(data.crop)
    # Scale 1 keeps objects at their size in the data; flips are free variety.
    samples = training_samples(train_set, LargeScaleJitter(data.crop, 1.0, 1.0), processor, seed)
    held_out = _held_out(data, processor)
    classifier = MaskPooledClassifier(model.model.pixel_level_module.encoder, config.num_labels)
    if mode == "overwrite":
        _remove_old_log(out)
    last = pretrain_backbone(
        classifier, samples, settings.pretrain, held_out=held_out, thing_labels=thing_labels or None
    )
    model.cpu()
    if any(v.is_floating_point() and not v.isfinite().all() for v in model.state_dict().values()):
        raise TrainingDiverged("pretraining made NaN or infinite weights; nothing was saved")
    save_model_files(out, model, processor)
    return PretrainResult(folder=out, last=last)


def _remove_old_log(out: str) -> None:
    """Delete the previous pretraining's log and event files in ``out``: only now, with the
    new run ready, as the old ones would mix with the new."""
    log_path = os.path.join(out, LOG_FILE)
    if os.path.lexists(log_path):
        os.unlink(log_path)
        note(COMMAND, f"--overwrite: removed the previous {log_path}")
    events = os.path.join(out, EVENTS_DIR)
    if os.path.isdir(events) and not os.path.islink(events):
        shutil.rmtree(events)
    elif os.path.lexists(events):
        os.unlink(events)


def _held_out(
    data: DataSettings, processor: Mask2FormerImageProcessor
) -> Optional[List[Dict[str, Any]]]:
    """Collated batches of 16 validation images, cropped at scale 1 without flips; None
    with ``eval_images`` 0."""
    if not data.eval_images:
        return None
    crop = LargeScaleJitter(data.crop, 1.0, 1.0, flip_prob=0.0)
    val = training_samples(open_validation_set(data), crop, processor, seed=0)
    items = [val[(0, i)] for i in range(min(data.eval_images, len(val)))]
    return [collate(items[k : k + 16]) for k in range(0, len(items), 16)]
