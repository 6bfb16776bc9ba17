"""What the :class:`~mask2former.training.Trainer` minimises: an objective turns a model and a
batch into a :class:`StepLoss`.

Two objectives exist: :class:`Mask2FormerObjective`, the Mask2Former loss (the default), and
the mask-pooled classification of backbone pretraining
(:class:`~mask2former.training.mask_pooling.MaskPooledObjective`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Protocol

from torch import Tensor, nn

__all__ = ["Batch", "Mask2FormerObjective", "Objective", "StepLoss"]

#: A collated training batch (:func:`~mask2former.training.data.collate`):
#: ``pixel_values`` (B, 3, H, W) float, ``mask_labels`` B tensors (n_i, H, W) float,
#: ``class_labels`` B tensors (n_i,) int64; on the trainer's device.
Batch = Dict[str, Any]


@dataclass
class StepLoss:
    """The loss of one batch, as the trainer uses it.

    - total: 0-d, what is back-propagated.
    - logged: numbers averaged over each log window and written to the log under their
      names (the Mask2Former objective: the final prediction's weighted terms).
    """

    total: Tensor
    logged: Dict[str, float] = field(default_factory=dict)


class Objective(Protocol):
    """``loss(model, batch)``: the loss of ``model`` (possibly wrapped for distributed
    training) on ``batch``, or None when the batch has nothing to learn from (the step then
    still counts, without an update)."""

    def loss(self, model: nn.Module, batch: Batch) -> Optional[StepLoss]: ...


class Mask2FormerObjective:
    """The Mask2Former loss of a :class:`~mask2former.Mask2FormerForUniversalSegmentation`
    (the weighted class, mask and dice terms of every prediction)."""

    def loss(self, model: nn.Module, batch: Batch) -> StepLoss:
        out = model(
            batch["pixel_values"],
            mask_labels=batch["mask_labels"],
            class_labels=batch["class_labels"],
            return_dict=True,  # whatever the config's return_dict says
        )
        # The final prediction's terms one by one, and the auxiliary predictions' share of the
        # total as one term, so that final and auxiliary show apart.
        logged = out.losses.final_weighted()
        if out.losses.auxiliary:
            logged["loss_aux"] = float(out.loss.detach()) - sum(logged.values())
        return StepLoss(out.loss, logged)
