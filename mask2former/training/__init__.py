"""Training: data pipeline, optimiser and schedules, checkpoints, the trainer."""

from .data import ResumableBatchSampler, TrainSamples, collate
from .optim import build_optimizer, build_scheduler, lr_factor
from .trainer import TrainConfig, Trainer, TrainingDiverged

__all__ = [
    "ResumableBatchSampler",
    "TrainConfig",
    "TrainSamples",
    "Trainer",
    "TrainingDiverged",
    "build_optimizer",
    "build_scheduler",
    "collate",
    "lr_factor",
]
