"""Hungarian matching between predicted queries and target segments.

For each image, every (query, target) pair gets a cost

    cost = cost_class * (-p(target class)) + cost_mask * BCE + cost_dice * dice

where the mask terms are computed on ``num_points`` uniformly random points shared by the
predictions and the targets of that image, and ``scipy.optimize.linear_sum_assignment`` picks the
one-to-one assignment of least total cost. Queries left unassigned are "no object".
:meth:`HungarianMatcher.forward_dense` computes the mask terms on every cell of the predicted
masks instead (the criterion's ``mask_loss_sampling="dense"``).

The costs of the whole batch are computed with batched tensor ops and moved to the CPU once;
only the assignment itself runs per image. Random points are drawn per image, one
``torch.rand(1, num_points, 2)`` after another, because that is the order transformers 4.37.2
uses and the losses must agree for the same seed.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from .point_sampling import point_sample, shared_point_sample

__all__ = ["HungarianMatcher", "NonFiniteCostError"]


class NonFiniteCostError(ValueError):
    """The matching cost of an image contains NaN or inf (usually NaN/inf logits)."""

    def __init__(self, message: str, image_index: int):
        super().__init__(message)
        self.image_index = image_index


def _pairwise_costs(
    pred_points: Tensor, class_probs: Tensor, target_points: Tensor, target_classes: Tensor
) -> Tuple[Tensor, Tensor, Tensor]:
    """Class, mask-BCE and dice costs of every (query, target) pair of every image.

    Args:
        pred_points: ``(B, Q, P)`` mask logits at the sampled points.
        class_probs: ``(B, Q, C+1)`` softmax class probabilities.
        target_points: ``(B, N, P)`` target mask values at the same points (zero-padded to the
            largest target count ``N``).
        target_classes: ``(B, N)`` target class ids (padding entries must be valid ids).

    Returns:
        Three ``(B, Q, N)`` cost tensors.
    """
    num_queries = pred_points.shape[1]
    num_points = pred_points.shape[-1]
    index = target_classes.unsqueeze(1).expand(-1, num_queries, -1)
    cost_class = -class_probs.gather(2, index)

    # Mean BCE over points for all pairs. With softplus(-x) = softplus(x) - x, the sum
    # pos @ t^T + neg @ (1-t)^T reduces to neg.sum() - x @ t^T: one matmul instead of two.
    # neg, the BCE against 0, is softplus(x) itself; softplus is several times faster than
    # the general BCE kernel (~2 against ~12 ms a call at 100 queries x 12544 points).
    neg = F.softplus(pred_points)
    cost_mask = (
        neg.sum(-1, keepdim=True) - pred_points @ target_points.transpose(1, 2)
    ) / num_points

    probs = pred_points.sigmoid()
    numerator = 2 * (probs @ target_points.transpose(1, 2))  # (exact: 2 is a power of two)
    denominator = probs.sum(-1).unsqueeze(-1) + target_points.sum(-1).unsqueeze(1)
    cost_dice = 1 - (numerator + 1) / (denominator + 1)
    return cost_class, cost_mask, cost_dice


class HungarianMatcher(nn.Module):
    """One-to-one assignment of queries to targets, per image.

    Args:
        cost_class: weight of the classification cost (``-p(target class)``). The reference fixes
            it at 1.0; the original recipe uses the class loss weight (2.0).
        cost_mask: weight of the sigmoid-BCE mask cost.
        cost_dice: weight of the dice cost.
        num_points: points sampled per image to compare masks.
    """

    def __init__(
        self,
        cost_class: float = 1.0,
        cost_mask: float = 1.0,
        cost_dice: float = 1.0,
        num_points: int = 12544,
    ):
        super().__init__()
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("HungarianMatcher: at least one of the cost weights must be non-zero")
        if num_points < 1:
            raise ValueError(f"HungarianMatcher: num_points must be positive, got {num_points}")
        self.cost_class = float(cost_class)
        self.cost_mask = float(cost_mask)
        self.cost_dice = float(cost_dice)
        self.num_points = int(num_points)

    def extra_repr(self) -> str:
        return (
            f"cost_class={self.cost_class}, cost_mask={self.cost_mask}, "
            f"cost_dice={self.cost_dice}, num_points={self.num_points}"
        )

    @torch.no_grad()
    def forward(
        self,
        masks_queries_logits: Tensor,
        class_queries_logits: Tensor,
        mask_labels: Sequence[Tensor],
        class_labels: Sequence[Tensor],
    ) -> List[Tuple[Tensor, Tensor]]:
        """Match the queries of each image to its targets.

        Args:
            masks_queries_logits: ``(B, Q, h, w)`` predicted mask logits.
            class_queries_logits: ``(B, Q, C+1)`` predicted class logits.
            mask_labels: ``B`` tensors ``(n_i, H_i, W_i)`` of binary target masks.
            class_labels: ``B`` long tensors ``(n_i,)`` of target class ids.

        Returns:
            For each image a pair ``(query_indices, target_indices)`` of CPU int64 tensors of
            length ``min(Q, n_i)``; ``query_indices`` is sorted ascending.

        Raises:
            NonFiniteCostError: an image's cost matrix contains NaN or inf.
        """
        batch_size = masks_queries_logits.shape[0]
        device = masks_queries_logits.device
        dtype = masks_queries_logits.dtype
        counts = [int(labels.shape[0]) for labels in class_labels]
        max_targets = max(counts, default=0)

        # Same points for the predictions and targets of an image; one draw per image, in order.
        coords = torch.cat(
            [torch.rand(1, self.num_points, 2, device=device) for _ in range(batch_size)]
        )
        if max_targets == 0:
            empty = torch.empty(0, dtype=torch.int64)
            return [(empty, empty) for _ in range(batch_size)]

        # Queries are channels here, all read at the same points: (B, Q, P).
        pred_points = shared_point_sample(masks_queries_logits, coords)
        target_points = masks_queries_logits.new_zeros(batch_size, max_targets, self.num_points)
        for i, masks in enumerate(mask_labels):
            if counts[i]:
                # Targets of different images may differ in size, so they are sampled per image.
                masks = masks.to(device=device, dtype=dtype)
                target_points[i, : counts[i]] = point_sample(masks[None], coords[i : i + 1])[0]
        return self._assign(
            pred_points, class_queries_logits, masks_queries_logits, target_points, class_labels
        )

    @torch.no_grad()
    def forward_dense(
        self,
        masks_queries_logits: Tensor,
        class_queries_logits: Tensor,
        dense_targets: Sequence[Tensor],
        class_labels: Sequence[Tensor],
    ) -> List[Tuple[Tensor, Tensor]]:
        """:meth:`forward` with the mask costs over every pixel of the predicted masks instead of
        random points (no random numbers are drawn).

        Args:
            masks_queries_logits: ``(B, Q, h, w)`` predicted mask logits.
            class_queries_logits: ``(B, Q, C+1)``.
            dense_targets: ``B`` tensors ``(n_i, h * w)``: the target masks reduced to the
                predictions' grid (:func:`~mask2former.loss.criterion.dense_targets`, the share
                of each cell that a target covers).
            class_labels: ``B`` long tensors ``(n_i,)``.
        """
        batch_size, _, h, w = masks_queries_logits.shape
        counts = [int(labels.shape[0]) for labels in class_labels]
        max_targets = max(counts, default=0)
        if max_targets == 0:
            empty = torch.empty(0, dtype=torch.int64)
            return [(empty, empty) for _ in range(batch_size)]
        pred_points = masks_queries_logits.flatten(2)
        target_points = pred_points.new_zeros(batch_size, max_targets, h * w)
        for i, targets in enumerate(dense_targets):
            if counts[i]:
                target_points[i, : counts[i]] = targets.to(pred_points.dtype)
        return self._assign(
            pred_points, class_queries_logits, masks_queries_logits, target_points, class_labels
        )

    def _assign(
        self,
        pred_points: Tensor,
        class_queries_logits: Tensor,
        masks_queries_logits: Tensor,
        target_points: Tensor,
        class_labels: Sequence[Tensor],
    ) -> List[Tuple[Tensor, Tensor]]:
        """Costs of every pair from mask values at shared locations, then one assignment per
        image. pred_points (B, Q, P); target_points (B, N, P), zero-padded to the largest
        target count N."""
        batch_size = pred_points.shape[0]
        device = pred_points.device
        counts = [int(labels.shape[0]) for labels in class_labels]
        max_targets = target_points.shape[1]
        target_classes = torch.zeros(batch_size, max_targets, dtype=torch.int64, device=device)
        for i, labels in enumerate(class_labels):
            if counts[i]:
                target_classes[i, : counts[i]] = labels.to(device)

        class_probs = class_queries_logits.softmax(-1)
        cost_class, cost_mask, cost_dice = _pairwise_costs(
            pred_points, class_probs, target_points, target_classes
        )
        cost = (
            self.cost_mask * cost_mask + self.cost_class * cost_class + self.cost_dice * cost_dice
        )

        # Check finiteness on the device, ignoring the padded target columns, before scipy.
        valid = (
            torch.arange(max_targets, device=device)[None]
            < torch.tensor(counts, device=device)[:, None]
        )
        finite = (torch.isfinite(cost) | ~valid[:, None, :]).flatten(1).all(1)
        cost_cpu = cost.float().cpu()  # one device-to-host copy for the whole batch
        bad = (~finite).nonzero().flatten().tolist()
        if bad:
            raise self._non_finite_error(bad[0], masks_queries_logits, class_queries_logits)

        indices: List[Tuple[Tensor, Tensor]] = []
        for i in range(batch_size):
            rows, cols = linear_sum_assignment(cost_cpu[i, :, : counts[i]].numpy())
            indices.append(
                (torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64))
            )
        return indices

    @staticmethod
    def _non_finite_error(
        image: int, masks_queries_logits: Tensor, class_queries_logits: Tensor
    ) -> NonFiniteCostError:
        culprits = []
        if not bool(torch.isfinite(class_queries_logits[image]).all()):
            culprits.append("class_queries_logits")
        if not bool(torch.isfinite(masks_queries_logits[image]).all()):
            culprits.append("masks_queries_logits")
        cause = (
            f"{' and '.join(culprits)} of image {image} contain NaN or inf"
            if culprits
            else f"the target masks of image {image} may contain NaN or inf"
        )
        return NonFiniteCostError(
            f"Hungarian matching failed for image {image} of the batch: its cost matrix is not "
            f"finite ({cause}). Check the inputs and the learning rate (diverged training).",
            image_index=image,
        )
