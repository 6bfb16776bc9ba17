"""Panoptic quality (PQ, SQ, RQ), the COCO panoptic metric, computed with numpy.

Follows panopticapi's ``pq_compute``: a predicted and a ground-truth segment of the same category
match when IoU > 0.5 (which makes matches unique); pixels with ground-truth id 0 are VOID and are
left out of the union; crowd ground truth is never matched, and an unmatched prediction more than
half inside VOID or a crowd region of its category is not a false positive. Per category
``PQ = sum IoU / (TP + FP/2 + FN/2)``, ``SQ = sum IoU / TP``, ``RQ = TP / (TP + FP/2 + FN/2)``;
the reported values are means over the categories that occur (TP + FP + FN > 0), in percent.

One deliberate difference: panopticapi remembers a single crowd region per category and image;
we count the prediction's overlap with all crowd regions of its category (identical on COCO,
which has at most one).
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

import numpy as np

from .report import format_table

__all__ = ["PanopticQualityEvaluator"]


def _segment_index(id_map: np.ndarray, seg_ids: np.ndarray, what: str) -> np.ndarray:
    """Map every pixel's segment id to its position in ``seg_ids`` (sorted, starting with 0 =
    VOID). A binary search per pixel over the few segment ids: several times faster than
    ``np.unique`` (a sort of all pixels) on a COCO-sized image.

    Raises:
        ValueError: a pixel id that is neither 0 nor a declared segment.
    """
    flat = np.asarray(id_map).reshape(-1)
    pos = np.searchsorted(seg_ids, flat)
    np.minimum(pos, len(seg_ids) - 1, out=pos)
    unknown = seg_ids[pos] != flat
    if unknown.any():
        ids = np.unique(flat[unknown])
        raise ValueError(f"{what}: id map has segment id(s) {ids[:10].tolist()} not in segments")
    return pos


class PanopticQualityEvaluator:
    """Accumulates PQ statistics over images.

    Args:
        categories: dicts with ``id``, ``isthing`` and ``name`` (e.g. a dataset's
            ``categories``). Segment ``category_id`` values refer to these ids.
    """

    def __init__(self, categories: Sequence[Dict[str, Any]]) -> None:
        self.categories = sorted(
            (
                {
                    "id": int(c["id"]),
                    "name": str(c.get("name", c["id"])),
                    "isthing": int(c.get("isthing", 1)),
                }
                for c in categories
            ),
            key=lambda c: c["id"],
        )
        self._index = {c["id"]: i for i, c in enumerate(self.categories)}
        self.reset()

    def reset(self) -> None:
        k = len(self.categories)
        self.tp = np.zeros(k, dtype=np.int64)
        self.fp = np.zeros(k, dtype=np.int64)
        self.fn = np.zeros(k, dtype=np.int64)
        self.iou = np.zeros(k, dtype=np.float64)
        self.num_images = 0

    def _categories_of(self, segments: Sequence[Dict[str, Any]], what: str) -> np.ndarray:
        cats = []
        for s in segments:
            cid = int(s["category_id"] if "category_id" in s else s["label_id"])
            if cid not in self._index:
                raise ValueError(f"{what}: segment {s['id']} has unknown category id {cid}")
            cats.append(self._index[cid])
        return np.array(cats, dtype=np.int64)

    def update(
        self,
        gt_panoptic: np.ndarray,
        gt_segments: Sequence[Dict[str, Any]],
        pred_panoptic: np.ndarray,
        pred_segments: Sequence[Dict[str, Any]],
    ) -> None:
        """Add one image.

        Args:
            gt_panoptic: (H, W) int ground-truth segment ids, 0 = VOID.
            gt_segments: ``[{"id", "category_id", "iscrowd"?}]`` for every non-zero id.
            pred_panoptic: (H, W) int predicted segment ids, 0 = no segment.
            pred_segments: ``[{"id", "category_id" or "label_id"}]`` for every non-zero id (the
                output of ``post_process_panoptic_segmentation`` qualifies).
        """
        gt_panoptic = np.asarray(gt_panoptic)
        pred_panoptic = np.asarray(pred_panoptic)
        if gt_panoptic.shape != pred_panoptic.shape:
            raise ValueError(
                f"shape mismatch: gt {gt_panoptic.shape} vs pred {pred_panoptic.shape}"
            )
        gt_segments = sorted(gt_segments, key=lambda s: int(s["id"]))
        pred_segments = sorted(pred_segments, key=lambda s: int(s["id"]))
        g_ids = np.array([0] + [int(s["id"]) for s in gt_segments], dtype=np.int64)
        p_ids = np.array([0] + [int(s["id"]) for s in pred_segments], dtype=np.int64)
        for ids, what in ((g_ids, "ground truth"), (p_ids, "prediction")):
            if ids.size > 1 and (ids[1] <= 0 or np.any(np.diff(ids) == 0)):
                raise ValueError(f"{what}: segment ids must be unique and > 0")
        g_cat = self._categories_of(gt_segments, "ground truth")
        p_cat = self._categories_of(pred_segments, "prediction")
        crowd = np.array([bool(s.get("iscrowd", 0)) for s in gt_segments], dtype=bool)

        # Intersection of every (gt, pred) segment pair in one bincount over combined indices;
        # row/column 0 is VOID / no prediction.
        g = _segment_index(gt_panoptic, g_ids, "ground truth")
        p = _segment_index(pred_panoptic, p_ids, "prediction")
        ng, npred = len(g_ids), len(p_ids)
        inter = np.bincount(g * npred + p, minlength=ng * npred).reshape(ng, npred)
        g_area = inter.sum(axis=1)[1:]
        p_area = inter.sum(axis=0)[1:]
        if np.any(p_area == 0):
            missing = p_ids[1:][p_area == 0].tolist()
            raise ValueError(f"prediction: segment id(s) {missing[:10]} are not in the id map")
        it = inter[1:, 1:].astype(np.float64)
        void_overlap = inter[0, 1:]

        # Matches: same category, gt not crowd, IoU > 0.5 with VOID pixels left out of the union.
        union = p_area[None, :] + g_area[:, None] - it - void_overlap[None, :]
        valid = (g_cat[:, None] == p_cat[None, :]) & ~crowd[:, None] & (it > 0)
        iou = np.where(valid, it / np.maximum(union, 1), 0.0)
        match = iou > 0.5
        gi, pi = np.nonzero(match)
        np.add.at(self.tp, g_cat[gi], 1)
        np.add.at(self.iou, g_cat[gi], iou[gi, pi])
        gt_matched = match.any(axis=1)
        pred_matched = match.any(axis=0)

        np.add.at(self.fn, g_cat[~gt_matched & ~crowd], 1)

        # Unmatched predictions mostly on VOID or on a crowd region of their class are ignored.
        same_cat_crowd = (g_cat[:, None] == p_cat[None, :]) & crowd[:, None]
        ignored = void_overlap + (it * same_cat_crowd).sum(axis=0)
        fp = ~pred_matched & ~(ignored / p_area > 0.5)
        np.add.at(self.fp, p_cat[fp], 1)
        self.num_images += 1

    def merge(self, other: PanopticQualityEvaluator) -> None:
        """Add another evaluator's statistics (e.g. from another process)."""
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.iou += other.iou
        self.num_images += other.num_images

    def compute(self) -> Dict[str, Any]:
        """Returns ``PQ, SQ, RQ`` overall and ``_th`` (things) / ``_st`` (stuff), the number of
        categories averaged ``n, n_th, n_st``, and ``per_class`` ``{name: {PQ, SQ, RQ, TP, FP,
        FN}}`` for categories that occur; all metrics in percent."""
        denom = self.tp + 0.5 * self.fp + 0.5 * self.fn
        occurs = denom > 0
        safe = np.maximum(denom, 1e-12)
        pq = np.where(occurs, self.iou / safe, 0.0)
        sq = np.where(self.tp > 0, self.iou / np.maximum(self.tp, 1), 0.0)
        rq = np.where(occurs, self.tp / safe, 0.0)
        isthing = np.array([c["isthing"] == 1 for c in self.categories], dtype=bool)
        result: Dict[str, Any] = {}
        for suffix, sel in (("", np.ones_like(isthing)), ("_th", isthing), ("_st", ~isthing)):
            use = sel & occurs
            n = int(use.sum())
            for name, values in (("PQ", pq), ("SQ", sq), ("RQ", rq)):
                # panopticapi reports 0 for an empty group.
                result[name + suffix] = float(100 * values[use].mean()) if n else 0.0
            result["n" + suffix] = n
        result["per_class"] = {
            c["name"]: {
                "PQ": float(100 * pq[i]),
                "SQ": float(100 * sq[i]),
                "RQ": float(100 * rq[i]),
                "TP": int(self.tp[i]),
                "FP": int(self.fp[i]),
                "FN": int(self.fn[i]),
                "isthing": c["isthing"],
            }
            for i, c in enumerate(self.categories)
            if occurs[i]
        }
        result["num_images"] = self.num_images
        return result

    @staticmethod
    def format_table(result: Dict[str, Any], per_class: bool = True) -> str:
        """Summary table (All / Things / Stuff), then per-class rows."""
        rows = [
            [name, result["PQ" + s], result["SQ" + s], result["RQ" + s], result["n" + s]]
            for name, s in (("All", ""), ("Things", "_th"), ("Stuff", "_st"))
        ]
        text = format_table(["", "PQ", "SQ", "RQ", "#categories"], rows, "Panoptic quality")
        if per_class and result.get("per_class"):
            rows2: List[List[Any]] = [
                [name, v["PQ"], v["SQ"], v["RQ"], v["TP"], v["FP"], v["FN"]]
                for name, v in result["per_class"].items()
            ]
            text += "\n\n" + format_table(["category", "PQ", "SQ", "RQ", "TP", "FP", "FN"], rows2)
        return text
