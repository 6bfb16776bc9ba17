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
gives NaN there). The weighted sum (``class_weight``/``mask_weight``/``dice_weight``) is computed
by :func:`weight_losses`.

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

import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from .matcher import HungarianMatcher, NonFiniteCostError
from .point_sampling import point_sample, sample_uncertain_points

__all__ = [
    "Mask2FormerLoss",
    "MASK_LOSS_SAMPLING",
    "dense_targets",
    "validate_targets",
    "average_num_masks",
    "weight_losses",
]

#: How the mask losses and the matcher compare masks: on ``train_num_points`` points chosen by
#: uncertainty (the original), or on every cell of the predicted masks.
MASK_LOSS_SAMPLING = ("points", "dense")

_INDEX_SUFFIX = re.compile(r"_\d+$")


def validate_targets(
    mask_labels: Sequence[Tensor],
    class_labels: Sequence[Tensor],
    batch_size: int,
    num_labels: int,
    mask_size: Tuple[int, int],
) -> None:
    """Check training targets before they reach the loss; raise ``ValueError`` naming the image.

    Args:
        mask_labels: per image a ``(n_i, H_i, W_i)`` tensor of binary masks.
        class_labels: per image an integer ``(n_i,)`` tensor of class ids in ``[0, num_labels)``.
        batch_size: number of images ``B`` of the predictions.
        num_labels: number of classes, without "no object".
        mask_size: ``(h, w)`` of the predicted masks; target masks must have its aspect ratio.
    """
    for name, labels in (("mask_labels", mask_labels), ("class_labels", class_labels)):
        if not isinstance(labels, (list, tuple)) and not (
            isinstance(labels, Tensor) and labels.dim() >= 1
        ):
            raise ValueError(f"{name} must be a list with one tensor per image")
        if len(labels) != batch_size:
            raise ValueError(
                f"{name} has {len(labels)} entries but the batch has {batch_size} images; give "
                "one entry per image (an image without targets gets an empty tensor)"
            )
    h, w = mask_size
    for i, (masks, classes) in enumerate(zip(mask_labels, class_labels)):
        if not isinstance(masks, Tensor) or masks.dim() != 3:
            shape = tuple(masks.shape) if isinstance(masks, Tensor) else type(masks).__name__
            raise ValueError(
                f"mask_labels[{i}] must be a 3-D (num_targets, height, width) tensor, got {shape}"
            )
        if not isinstance(classes, Tensor) or classes.dim() != 1:
            shape = tuple(classes.shape) if isinstance(classes, Tensor) else type(classes).__name__
            raise ValueError(f"class_labels[{i}] must be a 1-D (num_targets,) tensor, got {shape}")
        if classes.is_floating_point() or classes.is_complex() or classes.dtype == torch.bool:
            raise ValueError(f"class_labels[{i}] must hold integer class ids, got {classes.dtype}")
        if masks.shape[0] != classes.shape[0]:
            raise ValueError(
                f"image {i}: {masks.shape[0]} target masks but {classes.shape[0]} class labels"
            )
        height, width = masks.shape[1:]
        # Same aspect ratio within one predicted-mask pixel in both directions.
        if masks.shape[0] and (
            height == 0 or width == 0 or abs(height * w - h * width) > min(height, width)
        ):
            raise ValueError(
                f"image {i}: target masks are {height}x{width} but the predicted masks are {h}x{w} "
                f"(the model input is about {4 * h}x{4 * w}); target masks must have the size of "
                "the model input (or at least its aspect ratio): resize and pad them like the image"
            )
    _check_class_ids(class_labels, num_labels)


def _check_class_ids(class_labels: Sequence[Tensor], num_labels: int) -> None:
    nonempty = [(i, c) for i, c in enumerate(class_labels) if c.numel()]
    if not nonempty:
        return
    device = nonempty[0][1].device
    # One host sync for the whole batch; images are only searched when something is wrong.
    out_of_range = torch.stack(
        [((c < 0) | (c >= num_labels)).any().to(device) for _, c in nonempty]
    )
    if not bool(out_of_range.any()):
        return
    for i, classes in nonempty:
        bad = classes[(classes < 0) | (classes >= num_labels)]
        if bad.numel():
            raise ValueError(
                f"class_labels[{i}] contains class id {int(bad[0])}, outside [0, {num_labels}) "
                f"(num_labels={num_labels}; ids to ignore must be removed from the targets)"
            )


def average_num_masks(class_labels: Sequence[Tensor], device: torch.device) -> Tensor:
    """Number of targets of the batch, averaged over processes, clamped to >= 1 (0-d float).

    Under ``torch.distributed`` every process normalizes by the same value, so that summing the
    gradients of all processes equals normalizing the global batch once.
    """
    num_masks = torch.tensor(float(sum(int(c.shape[0]) for c in class_labels)), device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(num_masks)
        num_masks = num_masks / dist.get_world_size()
    return num_masks.clamp(min=1.0)


def weight_losses(
    loss_dict: Mapping[str, Tensor], weight_dict: Mapping[str, float]
) -> Tuple[Tensor, Dict[str, Tensor]]:
    """Weight each loss term and sum them.

    Args:
        loss_dict: unweighted terms, e.g. ``loss_mask``, ``loss_dice_0``.
        weight_dict: weight per base name (``loss_cross_entropy``, ``loss_mask``, ``loss_dice``);
            a term ``<base>_<k>`` of auxiliary prediction ``k`` uses the weight of ``<base>``.

    Returns:
        The 0-d total and the dict of weighted terms (same keys and order as ``loss_dict``).
    """
    weighted: Dict[str, Tensor] = {}
    for key, value in loss_dict.items():
        base = key if key in weight_dict else _INDEX_SUFFIX.sub("", key)
        if base not in weight_dict:
            raise KeyError(
                f"no weight for loss term {key!r}; weights are given for {list(weight_dict)}"
            )
        weighted[key] = value * weight_dict[base]
    if not weighted:
        raise ValueError("weight_losses: no loss terms to sum")
    total = sum(weighted.values())  # in dict order, like the reference, for identical rounding
    return total, weighted


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
        self.weight_dict: Dict[str, float] = {
            "loss_cross_entropy": float(config.class_weight),
            "loss_mask": float(config.mask_weight),
            "loss_dice": float(config.dice_weight),
        }
        if cost_class is None:
            cost_class = getattr(config, "matcher_class_cost", 1.0)
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
    ) -> Dict[str, Tensor]:
        """Unweighted loss terms.

        Args:
            masks_queries_logits: ``(B, Q, h, w)`` final mask logits.
            class_queries_logits: ``(B, Q, num_labels + 1)`` final class logits.
            mask_labels: per image ``(n_i, H, W)`` binary masks (float, or anything castable).
            class_labels: per image ``(n_i,)`` integer class ids.
            auxiliary_predictions: per intermediate prediction a dict with
                ``masks_queries_logits`` and ``class_queries_logits`` of the shapes above; used
                only if ``config.use_auxiliary_loss``.

        Returns:
            ``loss_mask``, ``loss_dice``, ``loss_cross_entropy`` (0-d each) and, for auxiliary
            prediction ``k``, the same names with suffix ``_k``. Weight and sum them with
            :meth:`weighted_total`.
        """
        predictions = [(masks_queries_logits, class_queries_logits)]
        if auxiliary_predictions is not None and getattr(self.config, "use_auxiliary_loss", True):
            for k, aux in enumerate(auxiliary_predictions):
                if "masks_queries_logits" not in aux or "class_queries_logits" not in aux:
                    raise ValueError(
                        f"auxiliary_predictions[{k}] needs masks_queries_logits and "
                        "class_queries_logits"
                    )
                predictions.append((aux["masks_queries_logits"], aux["class_queries_logits"]))
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
        losses: Dict[str, Tensor] = {}
        for k, (masks, classes) in enumerate(predictions):
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
                mask_terms = self.loss_masks(masks, mask_labels, indices, num_masks)
            else:
                mask_terms = self.loss_masks_dense(masks, targets, indices, num_masks)
            terms = {**mask_terms, **self.loss_labels(classes, class_labels, indices)}
            suffix = "" if k == 0 else f"_{k - 1}"
            losses.update({f"{name}{suffix}": value for name, value in terms.items()})
        return losses

    def _sampling(self) -> str:
        """``config.mask_loss_sampling`` (read at every call, like ``use_auxiliary_loss``)."""
        sampling = getattr(self.config, "mask_loss_sampling", "points")
        if sampling not in MASK_LOSS_SAMPLING:
            raise ValueError(
                f"Mask2FormerLoss: mask_loss_sampling must be one of {MASK_LOSS_SAMPLING}, got "
                f"{sampling!r}"
            )
        return sampling

    def weighted_total(self, loss_dict: Mapping[str, Tensor]) -> Tuple[Tensor, Dict[str, Tensor]]:
        """``(total, weighted_terms)`` of :meth:`forward`'s output with the config's weights."""
        return weight_losses(loss_dict, self.weight_dict)

    def loss_labels(
        self,
        class_queries_logits: Tensor,
        class_labels: Sequence[Tensor],
        indices: List[Tuple[Tensor, Tensor]],
    ) -> Dict[str, Tensor]:
        """``loss_cross_entropy``: weighted mean cross-entropy over all ``B*Q`` queries.

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
        return {"loss_cross_entropy": loss}

    def loss_masks(
        self,
        masks_queries_logits: Tensor,
        mask_labels: Sequence[Tensor],
        indices: List[Tuple[Tensor, Tensor]],
        num_masks: Tensor,
    ) -> Dict[str, Tensor]:
        """``loss_mask`` (sigmoid BCE) and ``loss_dice`` of the matched masks on sampled points.

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
    ) -> Dict[str, Tensor]:
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


def _bce_and_dice(logits: Tensor, labels: Tensor, num_masks: Tensor) -> Dict[str, Tensor]:
    """``loss_mask`` (BCE averaged over the values of each mask) and ``loss_dice``, each summed
    over the ``N`` masks and divided by ``num_masks``; logits and labels ``(N, P)``."""
    bce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    probs = logits.sigmoid()
    numerator = 2 * (probs * labels).sum(-1)
    denominator = probs.sum(-1) + labels.sum(-1)
    dice = 1 - (numerator + 1) / (denominator + 1)
    return {"loss_mask": bce.mean(1).sum() / num_masks, "loss_dice": dice.sum() / num_masks}


def dense_targets(mask_labels: Sequence[Tensor], size: Sequence[int]) -> List[Tensor]:
    """Target masks reduced to the predictions' ``(h, w)`` grid: per image ``(n_i, h * w)``,
    the share of each cell a target covers (area averaging, exact block means when the masks
    are a multiple of the grid, as the model input is of its stride-4 masks)."""
    h, w = int(size[0]), int(size[1])
    out = []
    for masks in mask_labels:
        masks = masks.float() if not masks.is_floating_point() else masks
        if masks.shape[0] == 0:
            out.append(masks.new_zeros(0, h * w))
            continue
        out.append(F.adaptive_avg_pool2d(masks[None], (h, w))[0].flatten(1))
    return out
