"""Training loss: Hungarian matching and point-sampled (or dense) mask losses (see
``criterion``); the result's types in ``result``."""

from .criterion import MASK_LOSS_SAMPLING, Mask2FormerLoss
from .matcher import HungarianMatcher, NonFiniteCostError
from .point_sampling import point_sample, sample_uncertain_points, uncertainty
from .result import LossResult, LossTerms, LossWeights, weight_losses
from .targets import average_num_masks, dense_targets, validate_targets

__all__ = [
    "MASK_LOSS_SAMPLING",
    "HungarianMatcher",
    "LossResult",
    "LossTerms",
    "LossWeights",
    "Mask2FormerLoss",
    "NonFiniteCostError",
    "average_num_masks",
    "dense_targets",
    "point_sample",
    "sample_uncertain_points",
    "uncertainty",
    "validate_targets",
    "weight_losses",
]
