"""Training loss: Hungarian matching and point-sampled (or dense) mask losses (see
``criterion``)."""

from .criterion import (
    MASK_LOSS_SAMPLING,
    Mask2FormerLoss,
    average_num_masks,
    dense_targets,
    validate_targets,
    weight_losses,
)
from .matcher import HungarianMatcher, NonFiniteCostError
from .point_sampling import point_sample, sample_uncertain_points, uncertainty

__all__ = [
    "MASK_LOSS_SAMPLING",
    "HungarianMatcher",
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
