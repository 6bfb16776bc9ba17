"""Training: the recipe as functions (:func:`train`, :func:`pretrain` and their pieces in
``recipe``), the data pipeline, optimiser and schedules, checkpoints, the trainer and its
objectives, backbone pretraining."""

from .data import RandomBatchSampler, ResumableBatchSampler, TrainSamples, collate
from .divergence import TrainingDiverged
from .objective import Mask2FormerObjective, Objective, StepLoss
from .optim import build_optimizer, build_scheduler, lr_factor
from .pretrain import PretrainConfig, pretrain_backbone
from .pretrain_run import PretrainResult, PretrainSettings, pretrain
from .recipe import (
    DataSettings,
    ModelSettings,
    augmentation,
    build_model,
    open_training_set,
    open_validation_set,
    training_processor,
    training_samples,
    validation_evaluator,
)
from .run import TrainResult, TrainSettings, build_trainer, train
from .settings import TrainConfig
from .trainer import Trainer

__all__ = [
    "DataSettings",
    "Mask2FormerObjective",
    "ModelSettings",
    "Objective",
    "PretrainConfig",
    "PretrainResult",
    "PretrainSettings",
    "RandomBatchSampler",
    "ResumableBatchSampler",
    "StepLoss",
    "TrainConfig",
    "TrainResult",
    "TrainSamples",
    "TrainSettings",
    "Trainer",
    "TrainingDiverged",
    "augmentation",
    "build_model",
    "build_optimizer",
    "build_scheduler",
    "build_trainer",
    "collate",
    "lr_factor",
    "open_training_set",
    "open_validation_set",
    "pretrain",
    "pretrain_backbone",
    "train",
    "training_processor",
    "training_samples",
    "validation_evaluator",
]
