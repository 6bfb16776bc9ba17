"""Checks and preparation of the training targets, shared by every prediction of a batch.

- :func:`validate_targets`: one clear ``ValueError`` naming the image for malformed targets,
  before any of them reaches the matcher.
- :func:`average_num_masks`: the normaliser of the mask terms (the batch's number of targets,
  averaged over processes).
- :func:`dense_targets`: targets reduced to the predicted masks' grid, for the "dense" mask loss.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

__all__ = ["validate_targets", "average_num_masks", "dense_targets"]


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
