"""Training: data pipeline, optimiser and schedules, checkpoints, the trainer and its
objectives, backbone pretraining."""

from .data import RandomBatchSampler, ResumableBatchSampler, TrainSamples, collate
from .divergence import TrainingDiverged
from .objective import Mask2FormerObjective, Objective, StepLoss
from .optim import build_optimizer, build_scheduler, lr_factor
from .settings import TrainConfig
from .trainer import Trainer

__all__ = [
    "Mask2FormerObjective",
    "Objective",
    "RandomBatchSampler",
    "ResumableBatchSampler",
    "StepLoss",
    "TrainConfig",
    "TrainSamples",
    "Trainer",
    "TrainingDiverged",
    "build_optimizer",
    "build_scheduler",
    "collate",
    "lr_factor",
]
