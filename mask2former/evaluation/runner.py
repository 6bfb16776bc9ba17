"""Run a model over a dataset through the inference pipeline and compute PQ, mask AP and mIoU
(and optionally save the predictions in COCO panoptic / COCO results / PNG form)."""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..coco import label_categories
from ..data.sample import sample_to_panoptic, sample_to_semantic
from ..inference.options import TASKS, TaskOptions
from ..inference.pipeline import Pipeline, window_size
from ..inference.results import SegmentationResult
from ..inference.runner import TorchRunner
from .coco_ap import CocoMaskAPEvaluator
from .miou import SemanticSegmentationEvaluator
from .pq import PanopticQualityEvaluator
from .predictions import PredictionWriter

__all__ = ["evaluate_model", "evaluate_pipeline", "dataset_categories", "TASKS"]


def metric_results(pq: Any, ap: Any, miou: Any) -> Dict[str, Dict[str, Any]]:
    """The results of whichever evaluators ran (None: that task was not scored), by task."""
    results: Dict[str, Dict[str, Any]] = {}
    if pq is not None:
        results["panoptic"] = pq.compute()
    if ap is not None:
        results["instance"] = ap.compute()
    if miou is not None:
        results["semantic"] = miou.compute()
    return results


def dataset_categories(dataset: Any, id2label: Dict[int, str]) -> List[Dict[str, Any]]:
    """Categories in label space: the dataset's COCO categories when it has them, else the
    model's labels (all counted as things)."""
    cats = getattr(dataset, "categories", None)
    if cats:
        return label_categories(cats)
    return [
        {"id": i, "name": name, "isthing": 1, "category_id": i}
        for i, name in sorted(id2label.items())
    ]


class _Metrics:
    """The evaluators of the requested tasks, fed one sample and its results at a time."""

    def __init__(
        self, tasks: Sequence[str], cats: List[Dict[str, Any]], ignore: int, ap_backend: str
    ) -> None:
        self.things = {c["id"] for c in cats if c["isthing"]}
        self.ignore = ignore
        self.pq = PanopticQualityEvaluator(cats) if "panoptic" in tasks else None
        things = [c for c in cats if c["isthing"]]
        self.ap = CocoMaskAPEvaluator(things, backend=ap_backend) if "instance" in tasks else None
        names = [c["name"] for c in cats]
        self.miou = (
            SemanticSegmentationEvaluator(len(cats), ignore, names) if "semantic" in tasks else None
        )

    def update(self, sample: Dict[str, Any], results: Dict[str, SegmentationResult]) -> None:
        if self.pq is not None:
            gt_ids, gt_segments = sample_to_panoptic(sample)
            pred = results["panoptic"]
            segments = [{"id": s["id"], "category_id": s["label_id"]} for s in pred.segments]
            self.pq.update(gt_ids, gt_segments, pred.segmentation, segments)
        if self.ap is not None:
            self._update_ap(sample, results["instance"])
        if self.miou is not None:
            self.miou.update(
                results["semantic"].segmentation - 1, _gt_semantic(sample, self.ignore)
            )

    def _update_ap(self, sample: Dict[str, Any], pred: SegmentationResult) -> None:
        keep = [i for i, s in enumerate(pred.segments) if s["label_id"] in self.things]
        gt_keep = [i for i, label in enumerate(sample["labels"]) if int(label) in self.things]
        crowd = np.asarray(sample.get("iscrowd", np.zeros(len(sample["labels"]))), bool)
        self.ap.update(
            np.asarray(sample["masks"], dtype=bool)[gt_keep],
            [int(sample["labels"][i]) for i in gt_keep],
            pred.masks[keep],
            [pred.segments[i]["label_id"] for i in keep],
            [pred.segments[i]["score"] for i in keep],
            gt_iscrowd=crowd[gt_keep],
            image_size=pred.image_size,
        )

    def compute(self) -> Dict[str, Dict[str, Any]]:
        return metric_results(self.pq, self.ap, self.miou)


def _gt_semantic(sample: Dict[str, Any], ignore_index: int) -> np.ndarray:
    if "semantic" in sample:  # semantic datasets carry their map (with its ignore pixels)
        return np.asarray(sample["semantic"])
    return sample_to_semantic(sample, ignore_index)


def _windows(dataset: Any, size: int, limit: int) -> Iterator[List[Tuple[int, Dict[str, Any]]]]:
    """Consecutive (index, sample) pairs, ``size`` at a time (the pipeline batches each window
    by input size)."""
    for start in range(0, limit, size):
        yield [(i, dataset[i]) for i in range(start, min(start + size, limit))]


def _requests(
    tasks: Sequence[str], stuff: set, threshold: float, overlap: float, detections: int
) -> Dict[str, TaskOptions]:
    """The original's test settings per task (see :func:`evaluate_model`)."""
    requests = {
        "panoptic": TaskOptions(
            "panoptic",
            threshold=threshold,
            overlap_mask_area_threshold=overlap,
            label_ids_to_fuse=frozenset(stuff),
        ),
        # The top (query, class) pairs with their own masks, no score threshold and no overlap
        # suppression: COCO AP ranks them.
        "instance": TaskOptions(
            "instance", threshold=0.0, overlap_mask_area_threshold=-1.0, top_k=detections
        ),
        "semantic": TaskOptions("semantic"),
    }
    return {t: requests[t] for t in TASKS if t in tasks}


def evaluate_pipeline(
    pipeline: Pipeline,
    dataset: Any,
    tasks: Sequence[str] = TASKS,
    categories: Optional[List[Dict[str, Any]]] = None,
    batch_size: int = 1,
    threshold: float = 0.8,
    overlap_threshold: float = 0.8,
    detections: int = 100,
    max_images: Optional[int] = None,
    save_predictions: Optional[str] = None,
    progress: bool = False,
    ap_backend: str = "auto",
) -> Dict[str, Dict[str, Any]]:
    """Evaluate a :class:`~mask2former.inference.pipeline.Pipeline` on ``dataset``; see
    :func:`evaluate_model`. ``ap_backend``: the COCOeval of mask AP (:mod:`.backends`)."""
    unknown = set(tasks) - set(TASKS)
    if unknown:
        raise ValueError(f"unknown tasks {sorted(unknown)}; choose from {TASKS}")
    cats = categories or dataset_categories(dataset, pipeline.info.id2label)
    stuff = {c["id"] for c in cats if not c["isthing"]}
    requests = _requests(tasks, stuff, threshold, overlap_threshold, detections)
    metrics = _Metrics(tasks, cats, pipeline.info.ignore_value, ap_backend)
    saver = PredictionWriter(save_predictions, cats) if save_predictions else None
    limit = len(dataset) if max_images is None else min(max_images, len(dataset))
    if saver is not None:
        saver.check_names(dataset, limit)
    bar = None
    if progress:
        from tqdm import tqdm

        # Only on a terminal (disable=None), so logs and error messages stay clean lines.
        bar = tqdm(total=limit, desc="evaluate", unit="img", disable=None)
    for window in _windows(dataset, window_size(batch_size), limit):
        outputs = pipeline.run([s["image"] for _, s in window], list(requests.values()), batch_size)
        for (index, sample), per_task in zip(window, outputs):
            results = dict(zip(requests, per_task))
            metrics.update(sample, results)
            if saver is not None:
                saver.add(index, sample, results, metrics.things)
        if bar is not None:
            bar.update(len(window))
    if bar is not None:
        bar.close()
    if saver is not None:
        saver.close()
    return metrics.compute()


@torch.no_grad()
def evaluate_model(
    model: torch.nn.Module,
    processor: Any,
    dataset: Any,
    tasks: Sequence[str] = TASKS,
    categories: Optional[List[Dict[str, Any]]] = None,
    device: Optional[str] = None,
    batch_size: int = 1,
    threshold: float = 0.8,
    overlap_threshold: float = 0.8,
    detections: int = 100,
    max_images: Optional[int] = None,
    save_predictions: Optional[str] = None,
    progress: bool = False,
) -> Dict[str, Dict[str, Any]]:
    """Evaluate ``model`` on ``dataset`` (samples as in :mod:`mask2former.data.sample`).

    Panoptic inference fuses each stuff class into one segment and uses ``threshold`` and
    ``overlap_threshold`` (0.8 each, the original's test settings); instance inference keeps the
    thing classes among the top ``detections`` (query, class) pairs with their full masks (no
    threshold, no overlap suppression; 100 as the original's test setting, COCO AP's maximum per
    image; with fewer than 100 queries a query can then stand for more than one class, where the
    reference keeps only as many pairs as queries); semantic inference
    takes the per-pixel argmax. ``device``: where to run (default: where the model is).
    Returns ``{task: metrics}``.
    """
    if device is not None:
        model = model.to(device)
    pipeline = Pipeline(TorchRunner(model), processor)
    return evaluate_pipeline(
        pipeline,
        dataset,
        tasks=tasks,
        categories=categories,
        batch_size=batch_size,
        threshold=threshold,
        overlap_threshold=overlap_threshold,
        detections=detections,
        max_images=max_images,
        save_predictions=save_predictions,
        progress=progress,
    )
