"""The Mask2Former training loss.

Per prediction (the final one and, with ``config.use_auxiliary_loss``, every intermediate one):

1. Hungarian matching of queries to targets (:class:`HungarianMatcher`).
2. ``loss_cross_entropy``: cross-entropy of every query's class logits against its matched
   target's class, or "no object" (weighted ``config.no_object_weight``) if unmatched.
3. ``loss_mask`` / ``loss_dice``: sigmoid BCE and dice between each matched mask and its target on
   ``train_num_points`` points chosen by uncertainty, each summed and divided by ``num_masks``.

With ``config.mask_loss_sampling = "dense"`` the matcher and the mask losses compare masks on every
cell of the predicted (stride-4) masks instead, against the targets reduced to that grid by area
(each cell's target is the share of it the mask covers). For small inputs that is cheaper than the
point sampling and gives every small object all of its cells; no random numbers are drawn.

``num_masks`` is the number of targets in the batch, averaged over processes under
``torch.distributed`` and clamped to >= 1 (the reference does neither, so a batch without targets
gives NaN there). The result is a :class:`~mask2former.loss.result.LossResult`: the final and the
auxiliary predictions' terms apart, and their sum weighted by ``class_weight``/``mask_weight``/
``dice_weight``.

Random numbers are drawn in the reference's order (matcher points per image, then the uncertainty
candidates and the extra random points of the matched masks, prediction after prediction), so for
the same seed the loss equals transformers 4.37.2's.

Target masks: the loss samples masks at normalized coordinates, so targets need not have the size
of the predictions. Masks of the model input size (the usual case) or any other size with the
same aspect ratio as the predicted masks (within one predicted-mask pixel) are accepted and are
thereby implicitly resized; a different aspect ratio would stretch the targets against the
predictions and is rejected. Images of one batch may have masks of different sizes (each is
sampled on its own; the reference zero-pads them to the largest, which shifts the smaller ones).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .matcher import HungarianMatcher, NonFiniteCostError
from .point_sampling import point_sample, sample_uncertain_points
from .result import LossResult, LossTerms, LossWeights
from .targets import average_num_masks, dense_targets, validate_targets

__all__ = ["Mask2FormerLoss", "MASK_LOSS_SAMPLING"]

#: How the mask losses and the matcher compare masks: on ``train_num_points`` points chosen by
#: uncertainty (the original), or on every cell of the predicted masks.
MASK_LOSS_SAMPLING = ("points", "dense")


class Mask2FormerLoss(nn.Module):
    """Mask2Former criterion: Hungarian matching, then class, mask-BCE and dice losses.

    Args:
        config: a ``Mask2FormerConfig``; reads ``num_labels``, ``no_object_weight``,
            ``class_weight``, ``mask_weight``, ``dice_weight``, ``train_num_points``,
            ``oversample_ratio``, ``importance_sample_ratio``, ``use_auxiliary_loss`` and
            ``mask_loss_sampling`` (both read at every call; the latter is an extra key of
            config.json, "points" when absent) and the optional ``matcher_class_cost``.
        cost_class: class-cost weight of the matcher. ``None`` takes
            ``config.matcher_class_cost`` if the config has it, else 1.0 as in the reference
            (the original recipe uses ``class_weight``, 2.0). An extra ``matcher_class_cost``
            keyword of ``Mask2FormerConfig`` is kept in ``config.json``, so the choice travels
            with the checkpoint.

    The buffer ``empty_weight`` ``(num_labels + 1,)`` holds the cross-entropy class weights (1,
    and ``no_object_weight`` for the last, "no object", class); checkpoints store it as
    ``criterion.empty_weight``.
    """

    empty_weight: Tensor

    def __init__(self, config: Any, cost_class: Optional[float] = None):
        super().__init__()
        self.config = config
        self.num_labels = int(config.num_labels)
        empty_weight = torch.ones(self.num_labels + 1)
        empty_weight[-1] = config.no_object_weight
        self.register_buffer("empty_weight", empty_weight)

        self.num_points = int(config.train_num_points)
        self._sampling()  # fail at construction on a bad setting
        self.oversample_ratio = float(config.oversample_ratio)
        self.importance_sample_ratio = float(config.importance_sample_ratio)
        if self.oversample_ratio < 1 or not 0 <= self.importance_sample_ratio <= 1:
            raise ValueError(
                "Mask2FormerLoss: oversample_ratio must be >= 1 and importance_sample_ratio in "
                f"[0, 1], got {self.oversample_ratio} and {self.importance_sample_ratio}"
            )
        self.weights = LossWeights(
            cross_entropy=float(config.class_weight),
            mask=float(config.mask_weight),
            dice=float(config.dice_weight),
        )
        if cost_class is None:
            cost_class = config.matcher_class_cost
        self.matcher = HungarianMatcher(
            cost_class=cost_class,
            cost_mask=config.mask_weight,
            cost_dice=config.dice_weight,
            num_points=self.num_points,
        )

    def forward(
        self,
        masks_queries_logits: Tensor,
        class_queries_logits: Tensor,
        mask_labels: Sequence[Tensor],
        class_labels: Sequence[Tensor],
        auxiliary_predictions: Optional[Sequence[Mapping[str, Tensor]]] = None,
    ) -> LossResult:
        """The loss terms of every prediction and their weighted total.

        Args:
            masks_queries_logits: ``(B, Q, h, w)`` final mask logits.
            class_queries_logits: ``(B, Q, num_labels + 1)`` final class logits.
            mask_labels: per image ``(n_i, H, W)`` binary masks (float, or anything castable).
            class_labels: per image ``(n_i,)`` integer class ids.
            auxiliary_predictions: per intermediate prediction a dict with
                ``masks_queries_logits`` and ``class_queries_logits`` of the shapes above; used
                only if ``config.use_auxiliary_loss``.

        Returns:
            A :class:`LossResult`: the unweighted terms of the final prediction and of each
            auxiliary one, the weights (``class_weight``, ``mask_weight``, ``dice_weight``) and
            the weighted total.
        """
        predictions = [(masks_queries_logits, class_queries_logits)]
        if auxiliary_predictions is not None and self.config.use_auxiliary_loss:
            predictions += _auxiliary(auxiliary_predictions)
        for k, (masks, classes) in enumerate(predictions):
            self._check_prediction_shapes(masks, classes, masks_queries_logits, k)
        batch_size = masks_queries_logits.shape[0]
        validate_targets(
            mask_labels, class_labels, batch_size, self.num_labels, masks_queries_logits.shape[-2:]
        )

        # Computed once (one collective under torch.distributed) and shared by all predictions.
        num_masks = average_num_masks(class_labels, masks_queries_logits.device)
        targets = None
        if self._sampling() == "dense":  # every prediction has the final one's grid
            targets = dense_targets(mask_labels, masks_queries_logits.shape[-2:])
        terms = [
            self._prediction_terms(k, masks, classes, mask_labels, class_labels, targets, num_masks)
            for k, (masks, classes) in enumerate(predictions)
        ]
        return LossResult.combine(terms[0], tuple(terms[1:]), self.weights)

    def _prediction_terms(
        self,
        k: int,
        masks: Tensor,
        classes: Tensor,
        mask_labels: Sequence[Tensor],
        class_labels: Sequence[Tensor],
        targets: Optional[List[Tensor]],
        num_masks: Tensor,
    ) -> LossTerms:
        """The terms of prediction ``k`` (0: the final one): matching, then the mask terms
        (which draw the random points), then the class term. ``targets``: the dense targets,
        or None to sample points."""
        try:
            if targets is None:
                indices = self.matcher(masks, classes, mask_labels, class_labels)
            else:
                indices = self.matcher.forward_dense(masks, classes, targets, class_labels)
        except NonFiniteCostError as e:
            if k == 0:
                raise
            raise NonFiniteCostError(f"auxiliary prediction {k - 1}: {e}", e.image_index) from e
        if targets is None:
            mask, dice = self.loss_masks(masks, mask_labels, indices, num_masks)
        else:
            mask, dice = self.loss_masks_dense(masks, targets, indices, num_masks)
        cross_entropy = self.loss_labels(classes, class_labels, indices)
        return LossTerms(mask=mask, dice=dice, cross_entropy=cross_entropy)

    @property
    def weight_dict(self) -> Dict[str, float]:
        """The weights by the reference's term names (its criterion's ``weight_dict``)."""
        return {
            "loss_cross_entropy": self.weights.cross_entropy,
            "loss_mask": self.weights.mask,
            "loss_dice": self.weights.dice,
        }

    def _sampling(self) -> str:
        """``config.mask_loss_sampling`` (read at every call, like ``use_auxiliary_loss``)."""
        sampling = self.config.mask_loss_sampling
        if sampling not in MASK_LOSS_SAMPLING:
            raise ValueError(
                f"Mask2FormerLoss: mask_loss_sampling must be one of {MASK_LOSS_SAMPLING}, got "
                f"{sampling!r}"
            )
        return sampling

    def loss_labels(
        self,
        class_queries_logits: Tensor,
        class_labels: Sequence[Tensor],
        indices: List[Tuple[Tensor, Tensor]],
    ) -> Tensor:
        """The class term: weighted mean cross-entropy over all ``B*Q`` queries (0-d).

        Args:
            class_queries_logits: ``(B, Q, num_labels + 1)``.
            class_labels: per image ``(n_i,)`` class ids.
            indices: the matcher's ``(query_indices, target_indices)`` per image.
        """
        batch_size, num_queries = class_queries_logits.shape[:2]
        device = class_queries_logits.device
        image_idx, query_idx = _prediction_index(indices, device)
        matched_classes = torch.cat(
            [labels.to(device)[tgt.to(device)] for labels, (_, tgt) in zip(class_labels, indices)]
        )
        # Unmatched queries are trained towards "no object", the last class.
        targets = torch.full(
            (batch_size, num_queries), self.num_labels, dtype=torch.int64, device=device
        )
        targets[image_idx, query_idx] = matched_classes.long()
        loss = F.cross_entropy(
            class_queries_logits.transpose(1, 2),
            targets,
            weight=self.empty_weight.to(class_queries_logits.dtype),
        )
        return loss

    def loss_masks(
        self,
        masks_queries_logits: Tensor,
        mask_labels: Sequence[Tensor],
        indices: List[Tuple[Tensor, Tensor]],
        num_masks: Tensor,
    ) -> Tuple[Tensor, Tensor]:
        """The mask (sigmoid BCE) and dice terms of the matched masks on sampled points.

        Args:
            masks_queries_logits: ``(B, Q, h, w)``.
            mask_labels: per image ``(n_i, H, W)`` target masks.
            indices: the matcher's ``(query_indices, target_indices)`` per image.
            num_masks: 0-d normalizer.
        """
        device = masks_queries_logits.device
        image_idx, query_idx = _prediction_index(indices, device)
        # (N, 1, h, w): N matched masks of the batch, image-major, as the reference orders them
        # (the random points are assigned to masks in that order).
        pred_masks = masks_queries_logits[image_idx, query_idx].unsqueeze(1)

        with torch.no_grad():
            coords = sample_uncertain_points(
                pred_masks, self.num_points, self.oversample_ratio, self.importance_sample_ratio
            )  # (N, P, 2)
            point_labels = self._sample_targets(mask_labels, indices, coords, pred_masks.dtype)
        point_logits = point_sample(pred_masks, coords)[:, 0]  # (N, P)
        return _bce_and_dice(point_logits, point_labels, num_masks)

    def loss_masks_dense(
        self,
        masks_queries_logits: Tensor,
        targets: Sequence[Tensor],
        indices: List[Tuple[Tensor, Tensor]],
        num_masks: Tensor,
    ) -> Tuple[Tensor, Tensor]:
        """:meth:`loss_masks` over every cell of the predicted masks (``mask_loss_sampling``
        "dense"): BCE against the share of each cell a target covers, and dice.

        Args:
            masks_queries_logits: ``(B, Q, h, w)``.
            targets: per image ``(n_i, h * w)`` from :func:`dense_targets`.
            indices: the matcher's ``(query_indices, target_indices)`` per image.
            num_masks: 0-d normalizer.
        """
        device = masks_queries_logits.device
        image_idx, query_idx = _prediction_index(indices, device)
        logits = masks_queries_logits[image_idx, query_idx].flatten(1)  # (N, h * w)
        labels = torch.cat([t[tgt.to(t.device)] for t, (_, tgt) in zip(targets, indices)]).to(
            device=device, dtype=logits.dtype
        )
        return _bce_and_dice(logits, labels, num_masks)

    @staticmethod
    def _sample_targets(
        mask_labels: Sequence[Tensor],
        indices: List[Tuple[Tensor, Tensor]],
        coords: Tensor,
        dtype: torch.dtype,
    ) -> Tensor:
        """Matched target masks at ``coords`` ``(N, P, 2)`` -> ``(N, P)``, one call per image."""
        chunks = []
        start = 0
        for masks, (_, tgt) in zip(mask_labels, indices):
            if tgt.numel() == 0:
                continue
            matched = masks[tgt.to(masks.device)].to(device=coords.device, dtype=dtype)
            chunk = coords[start : start + tgt.numel()]
            chunks.append(point_sample(matched.unsqueeze(1), chunk)[:, 0])
            start += tgt.numel()
        if not chunks:
            return coords.new_zeros(0, coords.shape[1], dtype=dtype)
        return torch.cat(chunks)

    def _check_prediction_shapes(
        self, masks: Tensor, classes: Tensor, final_masks: Tensor, k: int
    ) -> None:
        name = "final prediction" if k == 0 else f"auxiliary prediction {k - 1}"
        if masks.dim() != 4:
            raise ValueError(
                f"{name}: masks_queries_logits must be (B, Q, h, w), got {tuple(masks.shape)}"
            )
        expected = (*masks.shape[:2], self.num_labels + 1)
        if tuple(classes.shape) != expected:
            raise ValueError(
                f"{name}: class_queries_logits must be (B, Q, num_labels + 1) = {expected}, got "
                f"{tuple(classes.shape)}"
            )
        if masks.shape[:2] != final_masks.shape[:2]:
            raise ValueError(
                f"{name}: {tuple(masks.shape[:2])} (batch, queries) differ from the final "
                f"prediction's {tuple(final_masks.shape[:2])}"
            )


def _prediction_index(
    indices: List[Tuple[Tensor, Tensor]], device: torch.device
) -> Tuple[Tensor, Tensor]:
    """``(image_idx, query_idx)`` of all matched queries, image-major, on ``device``."""
    image_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
    query_idx = torch.cat([src for src, _ in indices])
    return image_idx.to(device), query_idx.to(device)


def _bce_and_dice(logits: Tensor, labels: Tensor, num_masks: Tensor) -> Tuple[Tensor, Tensor]:
    """The mask term (BCE averaged over the values of each mask) and the dice term, each summed
    over the ``N`` masks and divided by ``num_masks``; logits and labels ``(N, P)``."""
    bce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    probs = logits.sigmoid()
    numerator = 2 * (probs * labels).sum(-1)
    denominator = probs.sum(-1) + labels.sum(-1)
    dice = 1 - (numerator + 1) / (denominator + 1)
    return bce.mean(1).sum() / num_masks, dice.sum() / num_masks


def _auxiliary(predictions: Sequence[Mapping[str, Tensor]]) -> List[Tuple[Tensor, Tensor]]:
    """``(masks_queries_logits, class_queries_logits)`` of each auxiliary prediction, given as
    the reference's ``auxiliary_logits`` dicts."""
    out = []
    for k, aux in enumerate(predictions):
        if "masks_queries_logits" not in aux or "class_queries_logits" not in aux:
            raise ValueError(
                f"auxiliary_predictions[{k}] needs masks_queries_logits and class_queries_logits"
            )
        out.append((aux["masks_queries_logits"], aux["class_queries_logits"]))
    return out
