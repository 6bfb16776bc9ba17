"""Point sampling for the point-based mask losses (PointRend style).

Mask losses are not computed on full masks but on a set of points in normalized ``[0, 1]^2``
coordinates. Because the coordinates are normalized, predictions (at 1/4 of the input size) and
targets (at the input size) can be sampled at the same physical locations without resizing
either one.

The random draws here are part of the training recipe *and* of the parity contract with
transformers 4.37.2: the number, order and shapes of ``torch.rand`` calls must stay as they are
for the same seed to give the same loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["point_sample", "uncertainty", "sample_uncertain_points"]


def point_sample(features: Tensor, coords: Tensor) -> Tensor:
    """Bilinearly sample ``features`` at normalized point coordinates.

    Args:
        features: ``(N, C, H, W)`` maps.
        coords: ``(N, P, 2)`` points as ``(x, y)`` in ``[0, 1]``; 0 and 1 are the outer edges of
            the map (``align_corners=False``), points outside read zeros.

    Returns:
        ``(N, C, P)`` sampled values.
    """
    # grid_sample wants a 4-D grid in [-1, 1]; a (N, P, 1, 2) grid gives a (N, C, P, 1) result.
    # The grid follows the features' dtype so that half-precision logits can be sampled with
    # float32 random coordinates.
    grid = (2.0 * coords - 1.0).unsqueeze(2).to(features.dtype)
    return F.grid_sample(features, grid, mode="bilinear", align_corners=False).squeeze(3)


def uncertainty(logits: Tensor) -> Tensor:
    """Uncertainty of binary mask logits: ``-|logit|``, highest where the prediction is closest
    to the decision boundary. Any shape in, same shape out."""
    return -logits.abs()


@torch.no_grad()
def sample_uncertain_points(
    mask_logits: Tensor,
    num_points: int,
    oversample_ratio: float,
    importance_sample_ratio: float,
) -> Tensor:
    """Choose ``num_points`` points per mask, biased towards uncertain regions.

    ``int(num_points * oversample_ratio)`` candidates are drawn uniformly; the
    ``int(importance_sample_ratio * num_points)`` most uncertain candidates are kept and the rest
    of the budget is filled with fresh uniform points (so confident regions still get some
    supervision).

    Args:
        mask_logits: ``(N, 1, h, w)`` mask logits, one map per matched prediction.
        num_points: points per mask ``P``.
        oversample_ratio: candidates per kept point (>= 1).
        importance_sample_ratio: share of the ``P`` points chosen by uncertainty, in ``[0, 1]``.

    Returns:
        ``(N, P, 2)`` normalized ``(x, y)`` coordinates.
    """
    num_masks = mask_logits.shape[0]
    device = mask_logits.device
    num_candidates = int(num_points * oversample_ratio)
    num_uncertain = int(importance_sample_ratio * num_points)
    num_random = num_points - num_uncertain

    candidates = torch.rand(num_masks, num_candidates, 2, device=device)
    scores = uncertainty(point_sample(mask_logits, candidates))[:, 0]  # (N, num_candidates)
    top = scores.topk(num_uncertain, dim=1).indices  # (N, num_uncertain)
    coords = candidates.gather(1, top.unsqueeze(-1).expand(-1, -1, 2))
    if num_random > 0:
        # Drawn only when needed, after the candidates: this is the reference's RNG order.
        extra = torch.rand(num_masks, num_random, 2, device=device)
        coords = torch.cat([coords, extra], dim=1)
    return coords
