"""Turning label maps into the model's targets: one binary mask and one class per segment."""

from __future__ import annotations

from typing import Mapping, Optional, Tuple

import numpy as np

__all__ = ["segmentation_map_to_binary_masks", "check_instance_mapping"]


def segmentation_map_to_binary_masks(
    segmentation_map: np.ndarray,
    instance_id_to_semantic_id: Optional[Mapping[int, int]] = None,
    ignore_index: Optional[int] = None,
    reduce_labels: bool = False,
    what: str = "segmentation map",
) -> Tuple[np.ndarray, np.ndarray]:
    """Binary masks (N, H, W) float32 and classes (N,) int64 of an (H, W) integer map.

    Each distinct value of the map except ``ignore_index`` gives one mask, in increasing order of
    value. Without ``instance_id_to_semantic_id`` the value is the class; with it the value is an
    instance id and the mapping gives its class. ``reduce_labels`` first turns 0 into
    ``ignore_index`` and lowers every other value by one (for datasets whose 0 is "background");
    mapping keys are then the original (unreduced) instance ids and their classes are lowered by
    one too. A map with no label left gives (0, H, W) masks and no classes (the reference raises).
    """
    seg = np.asarray(segmentation_map)
    if reduce_labels:
        if ignore_index is None:
            raise ValueError(
                "reduce_labels=True needs an ignore_index to give the 0 (background) label"
            )
        seg = np.where(seg == 0, ignore_index, seg - 1)
    values = np.unique(seg)
    if ignore_index is not None:
        values = values[values != ignore_index]
    masks = (seg[None, :, :] == values[:, None, None]).astype(np.float32)
    if instance_id_to_semantic_id is None:
        return masks, values.astype(np.int64)
    classes = np.empty(len(values), dtype=np.int64)
    for i, value in enumerate(values.tolist()):
        key = value + 1 if reduce_labels else value
        class_id = _lookup(instance_id_to_semantic_id, key)
        if class_id is None:
            raise ValueError(
                f"{what}: instance id {key} has no entry in instance_id_to_semantic_id"
            )
        classes[i] = class_id - 1 if reduce_labels else class_id
    return masks, classes


def _lookup(mapping: Mapping[int, int], key: int) -> Optional[int]:
    # Mappings read from JSON have string keys; accept both.
    if key in mapping:
        return int(mapping[key])
    if str(key) in mapping:
        return int(mapping[str(key)])
    return None


def check_instance_mapping(mapping, num_maps: int) -> list:
    """One mapping (or None) per map, from None, one dict for all, or a list of dicts."""
    if mapping is None or isinstance(mapping, Mapping):
        return [mapping] * num_maps
    if isinstance(mapping, (list, tuple)):
        if len(mapping) != num_maps:
            raise ValueError(
                f"instance_id_to_semantic_id has {len(mapping)} entries for {num_maps} "
                "segmentation maps"
            )
        for i, m in enumerate(mapping):
            if m is not None and not isinstance(m, Mapping):
                raise TypeError(
                    f"instance_id_to_semantic_id[{i}] must be a dict, got {type(m).__name__}"
                )
        return list(mapping)
    raise TypeError(
        "instance_id_to_semantic_id must be a dict or a list of dicts, got "
        f"{type(mapping).__name__}"
    )
