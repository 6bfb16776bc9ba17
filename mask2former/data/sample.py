"""The sample format shared by every dataset (:class:`Sample`), and conversions between its
views.

A sample is a dict (a ``TypedDict``: the readers, the cache, the augmentation and the trainer
all pass it on as a plain dict)::

    image        (H, W, 3) uint8 RGB
    masks        (N, H, W) bool, one per segment / instance
    labels       (N,) int64 contiguous class indices (position of the category in the
                 dataset's category list sorted by id)
    file_name    str, the image's file name
    isthing      (N,) bool     (panoptic and instance data)
    iscrowd      (N,) bool     (panoptic and instance data)
    segment_ids  (N,) int64    (panoptic data: the ids in the PNG)
    ...          see :class:`Sample` for the keys of single formats
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, TypedDict

import numpy as np

from ..coco import category_to_label

__all__ = [
    "Sample",
    "SegmentArrays",
    "segments_to_sample",
    "sample_to_semantic",
    "sample_to_panoptic",
]


class _SampleCore(TypedDict):
    image: np.ndarray  # (H, W, 3) uint8 RGB
    masks: np.ndarray  # (N, H, W) bool
    labels: np.ndarray  # (N,) int64 contiguous class indices
    file_name: str


class Sample(_SampleCore, total=False):
    """One sample of any dataset of this package (the keys above the line are always there).

    ``isthing``/``iscrowd`` (N,) bool: panoptic, instance and shapes data. ``segment_ids`` (N,)
    int64: panoptic and shapes data. ``annotation_ids`` (N,) int64 (-1 where the JSON has none):
    instance data. ``image_id``: the JSON's image id (COCO readers). ``semantic`` (H, W) int64
    class map, ignore_index where void: semantic data. ``panoptic`` (H, W) int64 segment ids and
    ``segments_info`` (``[{"id", "category_id", "isthing", "area", "bbox", "iscrowd"}]``): shapes.
    """

    isthing: np.ndarray
    iscrowd: np.ndarray
    segment_ids: np.ndarray
    annotation_ids: np.ndarray
    image_id: Any
    semantic: np.ndarray
    panoptic: np.ndarray
    segments_info: List[Dict[str, Any]]


class SegmentArrays(TypedDict):
    """The per-segment arrays of a panoptic sample (see :func:`segments_to_sample`)."""

    masks: np.ndarray  # (N, H, W) bool
    labels: np.ndarray  # (N,) int64
    isthing: np.ndarray  # (N,) bool
    iscrowd: np.ndarray  # (N,) bool
    segment_ids: np.ndarray  # (N,) int64


def segments_to_sample(
    panoptic: np.ndarray,
    segments_info: Sequence[Dict[str, Any]],
    categories: Sequence[Dict[str, Any]],
) -> SegmentArrays:
    """Turn a panoptic id map and its segments into masks and per-mask arrays.

    Args:
        panoptic: (H, W) integer segment ids.
        segments_info: dicts with ``id``, ``category_id`` and optionally ``iscrowd``.
        categories: dicts with ``id`` and ``isthing``.

    Returns:
        ``masks`` (N, H, W) bool, ``labels`` (N,) int64, ``isthing`` (N,) bool, ``iscrowd`` (N,)
        bool and ``segment_ids`` (N,) int64, in the order of ``segments_info``.
    """
    to_label = category_to_label(categories)
    isthing_of = {int(c["id"]): bool(c.get("isthing", 1)) for c in categories}
    seg_ids = np.array([int(s["id"]) for s in segments_info], dtype=np.int64)
    cats = [int(s["category_id"]) for s in segments_info]
    h, w = panoptic.shape
    masks = (
        panoptic[None, :, :] == seg_ids[:, None, None]
        if seg_ids.size
        else np.zeros((0, h, w), bool)
    )
    return {
        "masks": masks,
        "labels": np.array([to_label[c] for c in cats], dtype=np.int64),
        "isthing": np.array([isthing_of[c] for c in cats], dtype=bool),
        "iscrowd": np.array([bool(s.get("iscrowd", 0)) for s in segments_info], dtype=bool),
        "segment_ids": seg_ids,
    }


def sample_to_semantic(sample: Sample, ignore_index: int = 255) -> np.ndarray:
    """(H, W) int64 class map of a sample; pixels of no mask (and crowd pixels) = ignore_index.

    Later masks win where masks overlap (instance data may overlap).
    """
    masks = sample["masks"]
    h, w = sample["image"].shape[:2]
    out = np.full((h, w), ignore_index, dtype=np.int64)
    crowd = sample.get("iscrowd", np.zeros(len(masks), bool))
    for m, label, c in zip(masks, sample["labels"], crowd):
        out[m] = ignore_index if c else label
    return out


def sample_to_panoptic(sample: Sample) -> List[Any]:
    """``[id_map, segments]`` for the panoptic evaluator: (H, W) int64 ids 1..N (0 = void) and
    ``[{"id", "category_id" (the contiguous label), "iscrowd"}]``."""
    masks = sample["masks"]
    h, w = sample["image"].shape[:2]
    ids = np.zeros((h, w), dtype=np.int64)
    segments = []
    crowd = sample.get("iscrowd", np.zeros(len(masks), bool))
    for k, (m, label, c) in enumerate(zip(masks, sample["labels"], crowd)):
        ids[m] = k + 1
        segments.append({"id": k + 1, "category_id": int(label), "iscrowd": int(c)})
    return [ids, segments]
