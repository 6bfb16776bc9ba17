"""Per-image results (:class:`SegmentationResult`) from a batch's query logits.

One segment-id rule for every task: 0 means "no segment", and each id in ``segments`` is the
value of its pixels in ``segmentation`` (panoptic: 1..N; instance: 1..N by decreasing score,
each pixel showing the best instance on it; semantic: ``label_id + 1``, the same in every image).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..coco import encode_masks_json, mask_bbox
from ..processing import postprocess
from .options import ModelInfo, TaskOptions
from .runner import QueryLogits

__all__ = ["SegmentationResult", "to_results"]


@dataclass
class SegmentationResult:
    """The segmentation of one image.

    Attributes:
        task: "panoptic", "instance" or "semantic".
        image_size: (height, width) of the input image.
        segmentation: (H, W) int32 segment ids, 0 = no segment.
        segments: one dict per segment: ``id``, ``label_id``, ``label`` (class name), ``score``
            (float; for semantic the mean class probability over the segment), ``area`` (pixels),
            ``bbox`` ([x, y, w, h] of the mask), ``was_fused``.
        masks: (N, H, W) bool, one per segment, in the order of ``segments``. Instance masks are
            whole (overlaps included, as post-processing found them), so ``area``/``bbox`` and
            the RLE describe them; panoptic and semantic masks are ``segmentation == id``.
    """

    task: str
    image_size: tuple
    segmentation: np.ndarray
    segments: List[Dict[str, Any]]
    _masks: Optional[np.ndarray] = field(default=None, repr=False)

    @property
    def masks(self) -> np.ndarray:
        if self._masks is not None:
            return self._masks
        ids = np.array([s["id"] for s in self.segments], dtype=np.int64)
        return self.segmentation[None] == ids[:, None, None]

    def rles(self) -> List[Dict[str, Any]]:
        """COCO RLE per segment (``counts`` as str, column-major, pycocotools-compatible)."""
        return encode_masks_json(self.masks)


def to_results(
    logits: QueryLogits, sizes: Sequence[Tuple[int, int]], options: TaskOptions, info: ModelInfo
) -> List[SegmentationResult]:
    """One result per image of the batch, at its ``sizes[i]`` = (height, width)."""
    sizes = [tuple(int(v) for v in s) for s in sizes]
    if options.task == "semantic":
        maps = postprocess.post_process_semantic_segmentation(logits, target_sizes=sizes)
        return [_semantic(logits, b, m.cpu().numpy(), info) for b, m in enumerate(maps)]
    common = dict(
        threshold=options.threshold,
        mask_threshold=options.mask_threshold,
        overlap_mask_area_threshold=options.overlap_mask_area_threshold,
        target_sizes=sizes,
    )
    if options.task == "panoptic":
        preds = postprocess.post_process_panoptic_segmentation(
            logits, label_ids_to_fuse=set(options.label_ids_to_fuse), merge_fused=True, **common
        )
        return [_panoptic(p, size, info) for p, size in zip(preds, sizes)]
    preds = postprocess.post_process_instance_segmentation(
        logits, return_binary_maps=True, top_k=options.top_k, **common
    )
    return [_instance(p, size, info) for p, size in zip(preds, sizes)]


def _segment(
    info: ModelInfo, seg_id: int, label: int, score: float, mask: np.ndarray, fused: bool
) -> Dict[str, Any]:
    return {
        "id": int(seg_id),
        "label_id": int(label),
        "label": info.label(label),
        "score": round(float(score), 6),
        "area": int(mask.sum()),
        "bbox": mask_bbox(mask),
        "was_fused": bool(fused),
    }


def _panoptic(pred: Dict[str, Any], size, info: ModelInfo) -> SegmentationResult:
    seg = pred["segmentation"].cpu().numpy().astype(np.int32)
    present = set(np.unique(seg).tolist())
    segments = [
        _segment(info, s["id"], s["label_id"], s["score"], seg == s["id"], s["was_fused"])
        for s in sorted(pred["segments_info"], key=lambda s: s["id"])
        if s["id"] in present  # a segment may vanish when resized to a small photo
    ]
    keep = [s["id"] for s in segments]
    seg[~np.isin(seg, keep)] = 0
    return SegmentationResult("panoptic", tuple(size), seg, segments)


def _instance(pred: Dict[str, Any], size, info: ModelInfo) -> SegmentationResult:
    masks = pred["segmentation"].cpu().numpy().astype(bool)  # (N, H, W), sorted by score
    seg = np.zeros(tuple(size), dtype=np.int32)
    for j in range(len(masks) - 1, -1, -1):  # paint low scores first: the best one shows
        seg[masks[j]] = j + 1
    segments = [
        _segment(info, j + 1, s["label_id"], s["score"], masks[j], False)
        for j, s in enumerate(pred["segments_info"])
    ]
    return SegmentationResult("instance", tuple(size), seg, segments, _masks=masks)


def _semantic(
    logits: QueryLogits, index: int, classes: np.ndarray, info: ModelInfo
) -> SegmentationResult:
    seg = (classes + 1).astype(np.int32)
    labels = np.unique(classes).tolist()
    masks = [classes == c for c in labels]  # one (H, W) mask per class present
    scores = _semantic_scores(logits, index, masks, labels)
    segments = [
        _segment(info, c + 1, c, score, mask, False)
        for c, score, mask in zip(labels, scores, masks)
    ]
    return SegmentationResult("semantic", classes.shape, seg, segments)


def _semantic_scores(
    logits: QueryLogits, index: int, masks: List[np.ndarray], labels: List[int]
) -> List[float]:
    """Per class of ``labels`` (its (H, W) pixels in ``masks``), the mean over its pixels of
    its normalised per-pixel class probability.

    Computed on the low-resolution mask grid and nearest-sampled at the class map's pixels,
    which is plenty for one number per segment and keeps this cheap on big photos.
    """
    probs = logits.class_queries_logits[index].float().softmax(-1)[:, :-1]  # (Q, C)
    query_masks = logits.masks_queries_logits[index].float().sigmoid()  # (Q, h, w)
    scores = torch.einsum("qc,qhw->chw", probs[:, labels], query_masks)  # (K, h, w)
    total = torch.einsum("qc,qhw->hw", probs, query_masks).clamp_min(1e-12)
    norm = (scores / total).cpu().numpy()
    h, w = query_masks.shape[-2:]
    H, W = masks[0].shape
    ys = np.minimum((np.arange(H) + 0.5) * h / H, h - 1).astype(int)
    xs = np.minimum((np.arange(W) + 0.5) * w / W, w - 1).astype(int)
    out = []
    for k, mask in enumerate(masks):
        yy, xx = np.nonzero(mask)
        out.append(float(norm[k][ys[yy], xs[xx]].mean()))
    return out
