"""COCO mask AP (COCOeval "segm"), on in-memory ground truth and predictions.

The COCOeval that runs is chosen in :mod:`.backends` (hotcoco when installed, else pycocotools,
the reference; they agree to the last bit) and
imported only when :meth:`CocoMaskAPEvaluator.compute` runs, so that importing the evaluation
package stays light. Masks are kept as compressed RLE from the moment they arrive (a few hundred
bytes per mask), with their areas and boxes in arrays, so a 5,000-image set costs tens of
megabytes, not a dict per annotation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from ..coco import decode_rle, encode_masks
from .backends import rle_facts, run_cocoeval, summary_metrics
from .report import format_table

__all__ = ["CocoMaskAPEvaluator"]

_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")

Masks = Union[np.ndarray, Sequence[Dict[str, Any]]]


@dataclass
class _Instances:
    """One image's ground truth or detections: RLEs (bytes counts), category ids, areas, COCO
    boxes, and ``extra``: scores (detections) or crowd flags (ground truth)."""

    rles: List[Dict[str, Any]]
    labels: np.ndarray
    areas: np.ndarray
    boxes: np.ndarray
    extra: np.ndarray

    def annotations(self, image_id: int, known: set, key: str, first_id: int) -> List[Dict]:
        """COCO annotation dicts of the known categories, ids from ``first_id``."""
        out = []
        for k, label in enumerate(self.labels.tolist()):
            if label not in known:
                continue
            extra = self.extra[k]
            out.append(
                {
                    "id": first_id + len(out),
                    "image_id": image_id,
                    "category_id": label,
                    "segmentation": self.rles[k],
                    "area": float(self.areas[k]),
                    "bbox": [float(v) for v in self.boxes[k]],
                    key: float(extra) if key == "score" else int(extra),
                }
            )
        return out


@dataclass
class _ImageRecord:
    height: int
    width: int
    gt: _Instances
    dt: _Instances


def _instances(masks: Masks, labels: Sequence[int], extra: Any, hw: List[int], what: str):
    """Masks (dense or RLE) -> :class:`_Instances`; RLEs are checked (size, well-formed runs)."""
    if isinstance(masks, np.ndarray) or (len(masks) and not isinstance(masks[0], dict)):
        dense = np.asarray(masks, dtype=bool).reshape(-1, hw[0], hw[1])
        if dense.shape[1:] != tuple(hw):
            raise ValueError(f"mask size {list(dense.shape[1:])} != image size {list(hw)}")
        rles = encode_masks(dense)
        from pycocotools import mask as mask_api

        areas = mask_api.area(rles).astype(np.float64) if rles else np.zeros(0)
        boxes = mask_api.toBbox(rles) if rles else np.zeros((0, 4))
    else:
        # Uncompressed (list) counts, as COCO writes crowd regions, are compressed first.
        masks = [
            m
            if not isinstance(m, dict) or not isinstance(m.get("counts"), list)
            else encode_masks(decode_rle(m)[None])[0]
            for m in masks
        ]
        rles, areas, boxes = rle_facts(masks, hw, what)
    return _Instances(
        rles=rles,
        labels=np.asarray([int(v) for v in labels], dtype=np.int64),
        areas=areas,
        boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
        extra=np.asarray(extra, dtype=np.float64).reshape(-1),
    )


class CocoMaskAPEvaluator:
    """Accumulates instance predictions and ground truth; ``compute()`` runs COCOeval ("segm").

    Args:
        categories: dicts with ``id`` and ``name`` of the evaluated (thing) classes. Labels passed
            to :meth:`update` are these ids. ``None``: every label seen, named by its value.
        max_dets: detections per image kept by COCOeval for AP (COCO: 100).
        backend: the COCOeval implementation (see :mod:`.backends`): "auto" (the fastest
            installed), "hotcoco" or "pycocotools".
    """

    def __init__(
        self,
        categories: Optional[Sequence[Dict[str, Any]]] = None,
        max_dets: int = 100,
        backend: str = "auto",
    ) -> None:
        self.categories = (
            None
            if categories is None
            else [{"id": int(c["id"]), "name": str(c.get("name", c["id"]))} for c in categories]
        )
        self.max_dets = int(max_dets)
        self.backend = backend
        self.reset()

    def reset(self) -> None:
        # One record per image (no ids yet: ids are given at compute time, so that records from
        # several processes can be merged).
        self._images: List[_ImageRecord] = []

    def update(
        self,
        gt_masks: Masks,
        gt_labels: Sequence[int],
        pred_masks: Masks,
        pred_labels: Sequence[int],
        pred_scores: Sequence[float],
        gt_iscrowd: Optional[Sequence[bool]] = None,
        image_size: Optional[Sequence[int]] = None,
    ) -> None:
        """Add one image.

        Args:
            gt_masks: (N, H, W) bool, or N COCO RLE dicts.
            gt_labels: (N,) category ids.
            pred_masks: (M, H, W) bool, or M COCO RLE dicts (e.g. from
                ``post_process_instance_segmentation(..., return_coco_annotation=True)`` or a
                COCO results file).
            pred_labels: (M,) category ids.
            pred_scores: (M,) confidences.
            gt_iscrowd: (N,) bool; crowd regions are matched but never counted (COCO rules).
            image_size: (H, W); required only when both mask lists are RLE-free and empty.

        Raises:
            ValueError: lengths that differ, or a mask of another size or a malformed RLE.
        """
        hw = self._size(gt_masks, pred_masks, image_size)
        n, m = len(gt_labels), len(pred_labels)
        if len(gt_masks) != n or len(pred_masks) != m or len(pred_scores) != m:
            raise ValueError("masks, labels and scores must have matching lengths")
        crowd = np.zeros(n, bool) if gt_iscrowd is None else np.asarray(gt_iscrowd, bool)
        gt = _instances(gt_masks, gt_labels, crowd, hw, "ground-truth mask")
        dt = _instances(pred_masks, pred_labels, pred_scores, hw, "predicted mask")
        self._images.append(_ImageRecord(height=hw[0], width=hw[1], gt=gt, dt=dt))

    @staticmethod
    def _size(gt_masks: Any, pred_masks: Any, image_size: Optional[Sequence[int]]) -> List[int]:
        if image_size is not None:
            return [int(image_size[0]), int(image_size[1])]
        for masks in (gt_masks, pred_masks):
            if isinstance(masks, np.ndarray) and masks.ndim == 3:
                return [int(masks.shape[1]), int(masks.shape[2])]
            if len(masks) and isinstance(masks[0], dict):
                return [int(v) for v in masks[0]["size"]]
            if len(masks):
                return list(np.asarray(masks[0]).shape[:2])
        raise ValueError("image_size is needed when there are no masks")

    def merge(self, other: CocoMaskAPEvaluator) -> None:
        """Append another evaluator's images (e.g. from another process)."""
        self._images.extend(other._images)

    def _categories(self) -> List[Dict[str, Any]]:
        if self.categories is not None:
            return self.categories
        ids = sorted(
            {int(v) for r in self._images for v in np.concatenate([r.gt.labels, r.dt.labels])}
        )
        return [{"id": i, "name": str(i)} for i in ids]

    def compute(self) -> Dict[str, Any]:
        """Returns ``AP, AP50, AP75, APs, APm, APl`` (percent; NaN when undefined, e.g. no
        ground truth of that size), ``per_class`` ``{name: AP}``, ``num_images`` and
        ``backend`` (the COCOeval that ran)."""
        cats = self._categories()
        known = {c["id"] for c in cats}
        images, gts, dts = [], [], []
        for image_id, rec in enumerate(self._images, start=1):
            images.append({"id": image_id, "height": rec.height, "width": rec.width})
            # COCOeval uses annotation id 0 to mean "unmatched": ids start at 1.
            gts += rec.gt.annotations(image_id, known, "iscrowd", len(gts) + 1)
            dts += rec.dt.annotations(image_id, known, "score", len(dts) + 1)
        nan = float("nan")
        if not gts:
            return {**{k: nan for k in _METRICS}, "per_class": {c["name"]: nan for c in cats}}
        tables = run_cocoeval(images, gts, dts, cats, self.max_dets, self.backend)
        del gts, dts
        stats = summary_metrics(tables)
        result: Dict[str, Any] = {
            k: (float(100 * v) if v >= 0 else nan) for k, v in zip(_METRICS, stats)
        }
        # precision: (iou thresholds, recall points, categories, area ranges, max dets); -1 marks
        # "no ground truth", excluded from the mean as in detectron2.
        per_class = {}
        names = {c["id"]: c["name"] for c in cats}
        for k, cat_id in enumerate(tables.cat_ids):
            p = tables.precision[:, :, k, 0, -1]
            p = p[p > -1]
            per_class[names[cat_id]] = float(100 * p.mean()) if p.size else nan
        result["per_class"] = per_class
        result["num_images"] = len(images)
        result["backend"] = tables.backend
        return result

    @staticmethod
    def format_table(result: Dict[str, Any], per_class: bool = True) -> str:
        """Summary row, then per-class AP."""
        text = format_table(list(_METRICS), [[result[k] for k in _METRICS]], "COCO mask AP")
        if per_class and result.get("per_class"):
            rows = [[name, ap] for name, ap in result["per_class"].items()]
            text += "\n\n" + format_table(["category", "AP"], rows)
        return text
