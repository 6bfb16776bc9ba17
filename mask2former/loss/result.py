"""What the loss returns: the terms of each prediction, kept apart, and their weighted total.

Every prediction of the decoder (the final one and one per intermediate layer) has three terms,
``loss_mask``, ``loss_dice`` and ``loss_cross_entropy`` in the reference's names. The reference
returns them as one flat dict whose keys carry the prediction (``loss_dice_3`` is the fourth
intermediate prediction's dice term); here the final and the auxiliary terms are fields of
their own, and the flat dict is only a view (:meth:`LossResult.terms`) for the places that
speak the reference's names (the model's ``loss_dict``, the training log).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, Mapping, Tuple

from torch import Tensor

__all__ = ["LossTerms", "LossWeights", "LossResult", "weight_losses"]


@dataclass(frozen=True)
class LossWeights:
    """The weight of each term (``config.class_weight``, ``mask_weight``, ``dice_weight``)."""

    cross_entropy: float
    mask: float
    dice: float


@dataclass(frozen=True)
class LossTerms:
    """The terms of one prediction, 0-d tensors each.

    - mask: sigmoid BCE of the matched masks (mean over each mask's points, summed over the
      masks, divided by the batch's number of targets).
    - dice: dice loss of the matched masks, normalised alike.
    - cross_entropy: class cross-entropy over every query ("no object" for the unmatched).
    """

    mask: Tensor
    dice: Tensor
    cross_entropy: Tensor

    def named(self, suffix: str = "") -> Dict[str, Tensor]:
        """The terms under the reference's names, in its order (mask, dice, cross-entropy)."""
        return {
            f"loss_mask{suffix}": self.mask,
            f"loss_dice{suffix}": self.dice,
            f"loss_cross_entropy{suffix}": self.cross_entropy,
        }

    def weighted(self, weights: LossWeights) -> LossTerms:
        return LossTerms(
            mask=self.mask * weights.mask,
            dice=self.dice * weights.dice,
            cross_entropy=self.cross_entropy * weights.cross_entropy,
        )


@dataclass(frozen=True)
class LossResult:
    """The loss of one batch.

    - final: the unweighted terms of the final prediction.
    - auxiliary: the unweighted terms of each intermediate prediction, the first decoder
      layer's first (empty without auxiliary loss).
    - weights: the weight of each term.
    - total: 0-d, the weighted sum of every term (what is back-propagated).
    """

    final: LossTerms
    auxiliary: Tuple[LossTerms, ...]
    weights: LossWeights
    total: Tensor

    @classmethod
    def combine(
        cls, final: LossTerms, auxiliary: Tuple[LossTerms, ...], weights: LossWeights
    ) -> LossResult:
        """The result of these terms; ``total`` sums the weighted terms in the reference's
        order (final, then each auxiliary prediction), so it rounds as the reference does."""
        weighted = [t.weighted(weights) for t in (final, *auxiliary)]
        total = sum(v for terms in weighted for v in terms.named().values())
        return cls(final=final, auxiliary=tuple(auxiliary), weights=weights, total=total)

    def terms(self, weighted: bool = False) -> Dict[str, Tensor]:
        """Every term in one dict, as the reference names and orders them: the final
        prediction's ``loss_mask``, ``loss_dice``, ``loss_cross_entropy``, then auxiliary
        prediction ``k``'s with the suffix ``_k``. ``weighted``: multiplied by the weights."""
        out: Dict[str, Tensor] = {}
        for k, terms in enumerate((self.final, *self.auxiliary)):
            if weighted:
                terms = terms.weighted(self.weights)
            out.update(terms.named("" if k == 0 else f"_{k - 1}"))
        return out

    def final_weighted(self) -> Dict[str, float]:
        """The final prediction's weighted terms as numbers, by the reference's names (what the
        training log shows next to the total)."""
        return {k: float(v.detach()) for k, v in self.final.weighted(self.weights).named().items()}


_INDEX_SUFFIX = re.compile(r"_\d+$")


def weight_losses(
    loss_dict: Mapping[str, Tensor], weight_dict: Mapping[str, float]
) -> Tuple[Tensor, Dict[str, Tensor]]:
    """Weight each term of a flat, reference-style loss dict and sum them.

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
