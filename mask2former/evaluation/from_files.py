"""Scoring saved predictions: the live evaluators (PQ, mask AP, mIoU) fed from files.

One image at a time: its ground truth comes from the dataset, its panoptic and semantic PNGs are
read when it is scored and dropped after, and its COCO results stay RLEs (the AP evaluator keeps
only those), so memory does not grow with full-size masks.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..coco import label_categories
from ..data.io import read_label_png
from ..data.sample import sample_to_panoptic, sample_to_semantic
from ..inference.options import TASKS
from .coco_ap import CocoMaskAPEvaluator
from .miou import SemanticSegmentationEvaluator
from .pq import PanopticQualityEvaluator
from .runner import metric_results
from .saved import DatasetKeys, PredictionsError, SavedPredictions

__all__ = ["score_predictions", "label_space_categories"]

IGNORE = 255  # the datasets' "unlabelled" value; semantic PNGs written with it are "no class"


def label_space_categories(dataset: Any) -> List[Dict[str, Any]]:
    """The dataset's categories in label space (``id`` the label, ``category_id`` the COCO id).

    Raises:
        ValueError: a dataset that does not name its classes (a semantic folder without
            ``categories.json``): predictions could not be matched to them.
    """
    cats = getattr(dataset, "categories", None)
    if not cats:
        raise ValueError(
            "the dataset does not list its classes (a semantic folder needs a categories.json "
            "to score saved predictions)"
        )
    return label_categories(cats)


class _FileMetrics:
    """The evaluators of the requested tasks, fed one dataset sample and its saved files."""

    def __init__(
        self,
        tasks: Sequence[str],
        cats: List[Dict[str, Any]],
        detections: int,
        ap_backend: str,
    ) -> None:
        self.to_label = {int(c["category_id"]): int(c["id"]) for c in cats}
        # COCO instance files may leave isthing out: their categories are all things.
        things = [c for c in cats if c.get("isthing", 1)]
        self.things = {c["id"] for c in things}
        self.pq = PanopticQualityEvaluator(cats) if "panoptic" in tasks else None
        self.ap = (
            CocoMaskAPEvaluator(things, max_dets=detections, backend=ap_backend)
            if "instance" in tasks
            else None
        )
        names = [c["name"] for c in cats]
        self.miou = (
            SemanticSegmentationEvaluator(len(cats), IGNORE, names) if "semantic" in tasks else None
        )

    def update(self, sample: Dict[str, Any], name: str, key: Any, saved: SavedPredictions) -> None:
        hw = tuple(sample["image"].shape[:2])
        if self.pq is not None:
            self._update_pq(sample, saved, name, hw)
        if self.ap is not None:
            self._update_ap(sample, saved, key, hw)
        if self.miou is not None:
            png = saved.semantic[name]
            pred = _png(png, hw, rgb=False)
            gt = sample["semantic"] if "semantic" in sample else sample_to_semantic(sample, IGNORE)
            self.miou.update(pred, np.asarray(gt))

    def _update_pq(self, sample: Dict[str, Any], saved: SavedPredictions, name: str, hw) -> None:
        entry = saved.panoptic[name]
        ids = _png(entry.png, hw, rgb=True)
        segments = [{"id": s, "category_id": self.to_label[c]} for s, c in entry.segments.items()]
        gt_ids, gt_segments = sample_to_panoptic(sample)
        try:
            self.pq.update(gt_ids, gt_segments, ids, segments)
        except ValueError as e:  # ids in the PNG and in segments_info that disagree
            raise PredictionsError(entry.png, str(e)) from None

    def _update_ap(self, sample: Dict[str, Any], saved: SavedPredictions, key: Any, hw) -> None:
        results = saved.instances.pop(key, [])  # popped: each image's JSON is freed once used
        path = saved.files.results_json
        for r in results:
            size = r.segmentation.get("size")
            if not isinstance(size, list) or [_as_int(v) for v in size] != list(hw):
                raise PredictionsError(
                    path,
                    f"[{r.index}].segmentation size {size!r} differs from the image's "
                    f"{list(hw)} (image_id {key!r})",
                )
        gt_keep = [i for i, label in enumerate(sample["labels"]) if int(label) in self.things]
        crowd = np.asarray(sample.get("iscrowd", np.zeros(len(sample["labels"]))), bool)
        try:
            self.ap.update(
                np.asarray(sample["masks"], dtype=bool)[gt_keep],
                [int(sample["labels"][i]) for i in gt_keep],
                [r.segmentation for r in results],
                [self.to_label[r.category_id] for r in results],
                [r.score for r in results],
                gt_iscrowd=crowd[gt_keep],
                image_size=hw,
            )
        except ValueError as e:  # a malformed RLE; the message names its place in this image
            raise PredictionsError(path, f"results of image_id {key!r}: {e}") from None

    def compute(self) -> Dict[str, Dict[str, Any]]:
        return metric_results(self.pq, self.ap, self.miou)


def _as_int(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _png(path: str, hw: tuple, rgb: bool) -> np.ndarray:
    """A prediction PNG (panoptic ids or label indices), refused unless it is the image's size."""
    ids = read_label_png(path, rgb=rgb)
    if ids.shape != hw:
        raise PredictionsError(
            path,
            f"PNG size {ids.shape[1]}x{ids.shape[0]} differs from the image's {hw[1]}x{hw[0]}",
        )
    return ids


def score_predictions(
    dataset: Any,
    saved: SavedPredictions,
    keys: DatasetKeys,
    tasks: Sequence[str],
    cats: List[Dict[str, Any]],
    limit: int,
    detections: int = 100,
    ap_backend: str = "auto",
    progress: bool = False,
) -> Dict[str, Dict[str, Any]]:
    """Score the first ``limit`` images of ``dataset`` with the checked ``saved`` predictions;
    ``cats`` in label space (:func:`label_space_categories`). Returns ``{task: metrics}`` as
    the live evaluation does."""
    metrics = _FileMetrics([t for t in TASKS if t in tasks], cats, detections, ap_backend)
    bar = None
    if progress:
        from tqdm import tqdm

        # Only on a terminal (disable=None), so logs and error messages stay clean lines.
        bar = tqdm(total=limit, desc="evaluate", unit="img", disable=None)
    try:
        for index in range(limit):
            metrics.update(dataset[index], keys.names[index], keys.keys[index], saved)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return metrics.compute()
