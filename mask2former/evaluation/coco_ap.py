"""COCO mask AP through pycocotools' ``COCOeval``, on in-memory ground truth and predictions.

pycocotools' evaluator is imported only when :meth:`CocoMaskAPEvaluator.compute` runs, so that
importing the evaluation package stays light. Masks are stored as compressed RLE as soon as they
arrive (a few hundred bytes per mask), so accumulating a whole validation set is cheap.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from ..coco import decode_rle, encode_mask, mask_bbox
from .report import format_table

__all__ = ["CocoMaskAPEvaluator"]

_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def _to_rle(mask: Union[np.ndarray, Dict[str, Any]], hw: Sequence[int]) -> Dict[str, Any]:
    if isinstance(mask, dict):
        rle = dict(mask)
        if isinstance(rle.get("counts"), bytes):
            rle["counts"] = rle["counts"].decode("ascii")
    else:
        rle = encode_mask(np.asarray(mask, dtype=bool))
    if [int(v) for v in rle["size"]] != [int(hw[0]), int(hw[1])]:
        raise ValueError(f"mask size {rle['size']} != image size {list(hw)}")
    return rle


def _area_bbox(mask: Union[np.ndarray, Dict[str, Any]]) -> tuple:
    if isinstance(mask, dict):
        mask = decode_rle(mask)
    mask = np.asarray(mask, dtype=bool)
    return int(mask.sum()), mask_bbox(mask)


class CocoMaskAPEvaluator:
    """Accumulates instance predictions and ground truth; ``compute()`` runs COCOeval ("segm").

    Args:
        categories: dicts with ``id`` and ``name`` of the evaluated (thing) classes. Labels passed
            to :meth:`update` are these ids. ``None``: every label seen, named by its value.
        max_dets: detections per image kept by COCOeval for AP (COCO: 100).
    """

    def __init__(
        self, categories: Optional[Sequence[Dict[str, Any]]] = None, max_dets: int = 100
    ) -> None:
        self.categories = (
            None
            if categories is None
            else [{"id": int(c["id"]), "name": str(c.get("name", c["id"]))} for c in categories]
        )
        self.max_dets = int(max_dets)
        self.reset()

    def reset(self) -> None:
        # One record per image: its size, ground-truth and detection annotations (no ids yet;
        # ids are given at compute time so that records from several processes can be merged).
        self._images: List[Dict[str, Any]] = []

    def update(
        self,
        gt_masks: Union[np.ndarray, Sequence[Dict[str, Any]]],
        gt_labels: Sequence[int],
        pred_masks: Union[np.ndarray, Sequence[Dict[str, Any]]],
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
                ``post_process_instance_segmentation(..., return_coco_annotation=True)``).
            pred_labels: (M,) category ids.
            pred_scores: (M,) confidences.
            gt_iscrowd: (N,) bool; crowd regions are matched but never counted (COCO rules).
            image_size: (H, W); required only when both mask lists are RLE-free and empty.
        """
        hw = self._size(gt_masks, pred_masks, image_size)
        n, m = len(gt_labels), len(pred_labels)
        if len(gt_masks) != n or len(pred_masks) != m or len(pred_scores) != m:
            raise ValueError("masks, labels and scores must have matching lengths")
        crowd = np.zeros(n, bool) if gt_iscrowd is None else np.asarray(gt_iscrowd, bool)
        gts = []
        for mask, label, c in zip(gt_masks, gt_labels, crowd):
            area, bbox = _area_bbox(mask)
            gts.append(
                {
                    "category_id": int(label),
                    "segmentation": _to_rle(mask, hw),
                    "area": area,
                    "bbox": bbox,
                    "iscrowd": int(c),
                }
            )
        dts = []
        for mask, label, score in zip(pred_masks, pred_labels, pred_scores):
            area, bbox = _area_bbox(mask)
            dts.append(
                {
                    "category_id": int(label),
                    "segmentation": _to_rle(mask, hw),
                    "area": area,
                    "bbox": bbox,
                    "score": float(score),
                }
            )
        self._images.append({"height": hw[0], "width": hw[1], "gt": gts, "dt": dts})

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
        ids = sorted({a["category_id"] for r in self._images for a in r["gt"] + r["dt"]})
        return [{"id": i, "name": str(i)} for i in ids]

    def compute(self) -> Dict[str, Any]:
        """Returns ``AP, AP50, AP75, APs, APm, APl`` (percent; None-like NaN when undefined, e.g.
        no ground truth of that size) and ``per_class`` ``{name: AP}``."""
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        cats = self._categories()
        known = {c["id"] for c in cats}
        images, gts, dts = [], [], []
        for image_id, rec in enumerate(self._images, start=1):
            images.append({"id": image_id, "height": rec["height"], "width": rec["width"]})
            # COCOeval uses annotation id 0 to mean "unmatched": ids start at 1.
            for a in rec["gt"]:
                if a["category_id"] in known:
                    gts.append(dict(a, id=len(gts) + 1, image_id=image_id))
            for a in rec["dt"]:
                if a["category_id"] in known:
                    dts.append(dict(a, id=len(dts) + 1, image_id=image_id))
        nan = float("nan")
        if not gts:
            return {**{k: nan for k in _METRICS}, "per_class": {c["name"]: nan for c in cats}}

        def make(anns: List[Dict[str, Any]]) -> Any:
            coco = COCO()
            coco.dataset = {"images": images, "annotations": anns, "categories": cats}
            with contextlib.redirect_stdout(io.StringIO()):
                coco.createIndex()
            return coco

        coco_gt, coco_dt = make(gts), make(dts)
        ev = COCOeval(coco_gt, coco_dt, iouType="segm")
        ev.params.maxDets = [1, 10, self.max_dets]
        with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints progress and a table
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        stats = ev.stats[:6]
        result: Dict[str, Any] = {
            k: (float(100 * v) if v >= 0 else nan) for k, v in zip(_METRICS, stats)
        }
        # precision: (iou thresholds, recall points, categories, area ranges, max dets); -1 marks
        # "no ground truth", excluded from the mean as in detectron2.
        precision = ev.eval["precision"]
        per_class = {}
        for k, cat_id in enumerate(ev.params.catIds):
            p = precision[:, :, k, 0, -1]
            p = p[p > -1]
            name = next(c["name"] for c in cats if c["id"] == cat_id)
            per_class[name] = float(100 * p.mean()) if p.size else nan
        result["per_class"] = per_class
        result["num_images"] = len(images)
        return result

    @staticmethod
    def format_table(result: Dict[str, Any], per_class: bool = True) -> str:
        """Summary row, then per-class AP."""
        text = format_table(list(_METRICS), [[result[k] for k in _METRICS]], "COCO mask AP")
        if per_class and result.get("per_class"):
            rows = [[name, ap] for name, ap in result["per_class"].items()]
            text += "\n\n" + format_table(["category", "AP"], rows)
        return text
