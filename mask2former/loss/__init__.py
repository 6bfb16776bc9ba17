"""Training loss: Hungarian matching and point-sampled mask losses (see ``criterion``)."""

from .criterion import Mask2FormerLoss, average_num_masks, validate_targets, weight_losses
from .matcher import HungarianMatcher, NonFiniteCostError
from .point_sampling import point_sample, sample_uncertain_points, uncertainty

__all__ = [
    "HungarianMatcher",
    "Mask2FormerLoss",
    "NonFiniteCostError",
    "average_num_masks",
    "point_sample",
    "sample_uncertain_points",
    "uncertainty",
    "validate_targets",
    "weight_losses",
]
