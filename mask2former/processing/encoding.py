"""Batching: padding, ``pixel_mask``, per-image label targets, and output types."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .batch import BatchFeature
from .labels import check_instance_mapping, segmentation_map_to_binary_masks
from .transforms import _data_format, _is_torch_tensor, pad_to

__all__ = ["as_list", "encode_batch"]


def as_list(items: Any, what: str) -> Tuple[List[Any], bool]:
    """(list of items, whether the input was a batch)."""
    if isinstance(items, (list, tuple)):
        if len(items) == 0:
            raise ValueError(f"{what} is an empty list")
        return list(items), True
    if (isinstance(items, np.ndarray) or _is_torch_tensor(items)) and items.ndim == 4:
        if items.shape[0] == 0:
            raise ValueError(f"{what} is an empty batch")
        return [items[i] for i in range(items.shape[0])], True
    return [items], False


def encode_batch(
    images: List[np.ndarray],
    maps: Optional[List[np.ndarray]],
    instance_id_to_semantic_id: Any,
    ignore_index: Optional[int],
    reduce_labels: bool,
    return_tensors: Optional[str],
    data_format: str,
    pad_size: Optional[Dict[str, int]] = None,
) -> BatchFeature:
    """Pad (H, W, C) images and (H, W) maps bottom/right to the largest image (or to
    ``pad_size``, {"height", "width"}); build ``pixel_values``, ``pixel_mask`` and, with maps,
    ``mask_labels``/``class_labels`` in the requested types (see
    ``Mask2FormerImageProcessor.preprocess``)."""
    if return_tensors not in (None, "pt", "np"):
        raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}")
    channels_first = _data_format(data_format) != "channels_last"
    pad_h, pad_w = _padded_size(images, pad_size)
    pixel_mask = []
    for im in images:
        mask = np.zeros((pad_h, pad_w), dtype=np.int64)
        mask[: im.shape[0], : im.shape[1]] = 1
        pixel_mask.append(mask)
    data: Dict[str, Any] = {
        "pixel_values": _pixel_batch(images, pad_h, pad_w, channels_first, return_tensors),
        "pixel_mask": _collate(pixel_mask, return_tensors),
    }
    if maps is not None:
        mappings = check_instance_mapping(instance_id_to_semantic_id, len(maps))
        mask_labels, class_labels = [], []
        for i, seg in enumerate(maps):
            masks, classes = segmentation_map_to_binary_masks(
                seg, mappings[i], ignore_index, reduce_labels, what=f"segmentation_maps[{i}]"
            )
            # Padding is "not this segment": 0 (the reference writes ignore_index here).
            masks = np.pad(masks, ((0, 0), (0, pad_h - seg.shape[0]), (0, pad_w - seg.shape[1])))
            mask_labels.append(_convert(masks, return_tensors))
            class_labels.append(_convert(classes, return_tensors))
        data["mask_labels"] = mask_labels
        data["class_labels"] = class_labels
    return BatchFeature(data)


def _pixel_batch(
    images: List[np.ndarray], pad_h: int, pad_w: int, channels_first: bool, return_tensors
) -> Any:
    """(H, W, C) images, zero-padded bottom/right, as one float32 (B, C, pad_h, pad_w) array
    (or (B, pad_h, pad_w, C)), each image copied once into its slot; a list of per-image
    arrays when ``return_tensors`` is None."""
    if return_tensors is None:
        padded = [pad_to(im.astype(np.float32, copy=False), pad_h, pad_w) for im in images]
        return [np.ascontiguousarray(p.transpose(2, 0, 1)) if channels_first else p for p in padded]
    channels = images[0].shape[2]
    if any(im.shape[2] != channels for im in images):
        raise ValueError("images have different numbers of channels")
    shape = (channels, pad_h, pad_w) if channels_first else (pad_h, pad_w, channels)
    batch = np.zeros((len(images),) + shape, dtype=np.float32)
    for slot, im in zip(batch, images):
        h, w = im.shape[:2]
        if channels_first:
            slot[:, :h, :w] = im.transpose(2, 0, 1)
        else:
            slot[:h, :w] = im
    return _convert(batch, return_tensors)


def _padded_size(images: List[np.ndarray], pad_size: Optional[Dict[str, int]]) -> Tuple[int, int]:
    """(height, width) of the padded batch: ``pad_size``, or the largest image."""
    if pad_size is None:
        return max(im.shape[0] for im in images), max(im.shape[1] for im in images)
    pad_h, pad_w = int(pad_size["height"]), int(pad_size["width"])
    for i, im in enumerate(images):
        if im.shape[0] > pad_h or im.shape[1] > pad_w:
            raise ValueError(
                f"images[{i}] is {im.shape[0]}x{im.shape[1]} after resizing, larger than "
                f"pad_size {pad_h}x{pad_w}"
            )
    return pad_h, pad_w


def _convert(array: np.ndarray, return_tensors: Optional[str]) -> Any:
    if return_tensors == "pt":
        import torch

        return torch.from_numpy(np.ascontiguousarray(array))
    return array


def _collate(arrays: List[np.ndarray], return_tensors: Optional[str]) -> Any:
    if return_tensors is None:
        return arrays
    stacked = np.stack(arrays, axis=0)
    return _convert(stacked, return_tensors)
