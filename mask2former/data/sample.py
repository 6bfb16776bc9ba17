"""The sample format shared by every dataset, and conversions between its views.

A sample is a dict::

    image        (H, W, 3) uint8 RGB
    masks        (N, H, W) bool, one per segment / instance
    labels       (N,) int64 contiguous class indices (position of the category in the
                 dataset's category list sorted by id)
    isthing      (N,) bool     (panoptic and instance data)
    iscrowd      (N,) bool     (panoptic and instance data)
    segment_ids  (N,) int64    (panoptic data: the ids in the PNG)
    file_name    str, the image's file name
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

import numpy as np

__all__ = [
    "category_to_label",
    "label_categories",
    "segments_to_sample",
    "sample_to_semantic",
    "sample_to_panoptic",
]


def category_to_label(categories: Sequence[Dict[str, Any]]) -> Dict[int, int]:
    """COCO category id -> contiguous label, in order of increasing id."""
    ids = sorted(int(c["id"]) for c in categories)
    return {cid: i for i, cid in enumerate(ids)}


def label_categories(categories: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The categories with ``id`` replaced by the contiguous label (and the COCO id kept as
    ``category_id``): what the evaluators need for samples and model outputs, which speak in
    labels. ``PanopticQualityEvaluator(label_categories(dataset.categories))``."""
    to_label = category_to_label(categories)
    out = [dict(c, id=to_label[int(c["id"])], category_id=int(c["id"])) for c in categories]
    return sorted(out, key=lambda c: c["id"])


def segments_to_sample(
    panoptic: np.ndarray,
    segments_info: Sequence[Dict[str, Any]],
    categories: Sequence[Dict[str, Any]],
) -> Dict[str, Any]:
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


def sample_to_semantic(sample: Dict[str, Any], ignore_index: int = 255) -> np.ndarray:
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


def sample_to_panoptic(sample: Dict[str, Any]) -> List[Any]:
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
