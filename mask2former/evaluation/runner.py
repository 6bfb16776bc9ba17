"""Run a model over a dataset and compute PQ, mask AP and mIoU (and optionally save the
predictions in COCO panoptic / COCO results / PNG form)."""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from ..data.sample import label_categories, sample_to_panoptic, sample_to_semantic
from ..files import confined_path, save_image
from .coco_ap import CocoMaskAPEvaluator
from .miou import SemanticSegmentationEvaluator
from .pq import PanopticQualityEvaluator

__all__ = ["evaluate_model", "dataset_categories", "TASKS"]

TASKS = ("panoptic", "instance", "semantic")


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


def unique_segments(segments_info: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One entry per segment id: post-processing lists every query of a fused (stuff) class,
    all with the id they share, as the reference does; the COCO formats want each id once."""
    seen: Dict[int, Dict[str, Any]] = {}
    for s in segments_info:
        seen.setdefault(int(s["id"]), s)
    return list(seen.values())


def _gt_semantic(sample: Dict[str, Any], ignore_index: int) -> np.ndarray:
    if "semantic" in sample:  # semantic datasets carry their map (with its ignore pixels)
        return np.asarray(sample["semantic"])
    return sample_to_semantic(sample, ignore_index)


def _batches(dataset: Any, batch_size: int, limit: int):
    """Consecutive samples grouped while they share one image size (the network does not mask
    padding, so mixing sizes would change results)."""
    group: List[Any] = []
    for index in range(limit):
        sample = dataset[index]
        if group and (
            len(group) == batch_size or group[0][1]["image"].shape != sample["image"].shape
        ):
            yield group
            group = []
        group.append((index, sample))
    if group:
        yield group


@torch.no_grad()
def evaluate_model(
    model: torch.nn.Module,
    processor: Any,
    dataset: Any,
    tasks: Sequence[str] = TASKS,
    categories: Optional[List[Dict[str, Any]]] = None,
    device: str = "cpu",
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
    takes the per-pixel argmax. Returns ``{task: metrics}``.
    """
    unknown = set(tasks) - set(TASKS)
    if unknown:
        raise ValueError(f"unknown tasks {sorted(unknown)}; choose from {TASKS}")
    config = model.config
    cats = categories or dataset_categories(dataset, config.id2label)
    things = {c["id"] for c in cats if c["isthing"]}
    stuff = {c["id"] for c in cats if not c["isthing"]}
    ignore = int(getattr(config, "ignore_value", 255))
    pq = PanopticQualityEvaluator(cats) if "panoptic" in tasks else None
    ap = CocoMaskAPEvaluator([c for c in cats if c["isthing"]]) if "instance" in tasks else None
    miou = (
        SemanticSegmentationEvaluator(len(cats), ignore, [c["name"] for c in cats])
        if "semantic" in tasks
        else None
    )
    saver = _PredictionWriter(save_predictions, cats) if save_predictions else None
    model.eval().to(device)
    dtype = next(model.parameters()).dtype
    limit = len(dataset) if max_images is None else min(max_images, len(dataset))
    if saver is not None:
        saver.check_names(dataset, limit)
    bar = None
    if progress:
        from tqdm import tqdm

        # Only on a terminal (disable=None), so logs and error messages stay clean lines.
        bar = tqdm(total=limit, desc="evaluate", unit="img", disable=None)
    for group in _batches(dataset, batch_size, limit):
        images = [s["image"] for _, s in group]
        inputs = processor(images, return_tensors="pt")
        outputs = model(
            inputs["pixel_values"].to(device, dtype), pixel_mask=inputs["pixel_mask"].to(device)
        )
        outputs.class_queries_logits = outputs.class_queries_logits.float()
        outputs.masks_queries_logits = outputs.masks_queries_logits.float()
        sizes = [tuple(im.shape[:2]) for im in images]
        pan = sem = ins = None
        if pq is not None:
            pan = processor.post_process_panoptic_segmentation(
                outputs,
                threshold=threshold,
                overlap_mask_area_threshold=overlap_threshold,
                label_ids_to_fuse=stuff,
                target_sizes=sizes,
            )
        if ap is not None:
            # As the original's instance inference: the top (query, class) pairs with their own
            # masks, no score threshold and no overlap suppression; COCO AP ranks them.
            ins = processor.post_process_instance_segmentation(
                outputs,
                threshold=0.0,
                overlap_mask_area_threshold=-1.0,
                target_sizes=sizes,
                return_binary_maps=True,
                top_k=detections,
            )
        if miou is not None:
            sem = processor.post_process_semantic_segmentation(outputs, target_sizes=sizes)
        for k, (index, sample) in enumerate(group):
            if pan is not None:
                gt_ids, gt_segments = sample_to_panoptic(sample)
                pred = pan[k]
                segments = [
                    {"id": s["id"], "category_id": s["label_id"]}
                    for s in unique_segments(pred["segments_info"])
                ]
                pq.update(gt_ids, gt_segments, pred["segmentation"].cpu().numpy(), segments)
            if ins is not None:
                pred = ins[k]
                keep = [i for i, s in enumerate(pred["segments_info"]) if s["label_id"] in things]
                maps = pred["segmentation"].cpu().numpy().astype(bool)
                maps = maps[keep] if len(keep) else np.zeros((0,) + sizes[k], dtype=bool)
                gt_keep = [i for i, label in enumerate(sample["labels"]) if int(label) in things]
                crowd = np.asarray(sample.get("iscrowd", np.zeros(len(sample["labels"]))), bool)
                ap.update(
                    np.asarray(sample["masks"], dtype=bool)[gt_keep],
                    [int(sample["labels"][i]) for i in gt_keep],
                    maps,
                    [pred["segments_info"][i]["label_id"] for i in keep],
                    [pred["segments_info"][i]["score"] for i in keep],
                    gt_iscrowd=crowd[gt_keep],
                    image_size=sizes[k],
                )
            if sem is not None:
                miou.update(sem[k].cpu().numpy(), _gt_semantic(sample, ignore))
            if saver is not None:
                saver.add(
                    index,
                    sample,
                    pan[k] if pan is not None else None,
                    ins[k] if ins is not None else None,
                    sem[k] if sem is not None else None,
                    things,
                )
        if bar is not None:
            bar.update(len(group))
    if bar is not None:
        bar.close()
    results: Dict[str, Dict[str, Any]] = {}
    if pq is not None:
        results["panoptic"] = pq.compute()
    if ap is not None:
        results["instance"] = ap.compute()
    if miou is not None:
        results["semantic"] = miou.compute()
    if saver is not None:
        saver.close()
    return results


class _PredictionWriter:
    """Writes predictions as COCO panoptic (PNG + JSON), COCO results JSON and semantic PNGs.

    File names come from the dataset's ``file_name`` entries, sub-folders kept; a name that
    would land outside ``directory`` (absolute, ``..``, a symlinked folder) is refused.
    """

    def __init__(self, directory: str, categories: List[Dict[str, Any]]):
        self.dir = directory
        self.cats = categories
        self.panoptic: List[Dict[str, Any]] = []
        self.results: List[Dict[str, Any]] = []
        os.makedirs(directory, exist_ok=True)

    def _category(self, label: int) -> int:
        return int(self.cats[label]["category_id"])

    @staticmethod
    def output_name(file_name: str) -> str:
        """The PNG name of a sample's predictions: its ``file_name`` with a .png extension."""
        return os.path.splitext(file_name)[0] + ".png"

    def check_names(self, dataset: Any, limit: int) -> None:
        """Refuse, before any work, a ``file_name`` that would be written outside the folder
        (datasets that list their names without reading files; others are checked per image)."""
        names = getattr(dataset, "file_name", None)
        if names is None:
            return
        for index in range(limit):
            self._path("panoptic", self.output_name(names(index)))

    def _path(self, kind: str, name: str) -> str:
        return confined_path(os.path.join(self.dir, kind), name, what="dataset file_name")

    def _png(self, kind: str, name: str, array: np.ndarray) -> None:
        path = self._path(kind, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        save_image(path, array)

    def add(self, index, sample, pan, ins, sem, things) -> None:
        from ..data.io import id_to_rgb
        from ..processing.rle import encode_masks

        name = self.output_name(str(sample.get("file_name", f"{index:06d}.png")))
        if pan is not None:
            ids = pan["segmentation"].cpu().numpy()
            self._png("panoptic", name, id_to_rgb(ids))
            self.panoptic.append(
                {
                    "image_id": index,
                    "file_name": name,
                    "segments_info": [
                        {
                            "id": int(s["id"]),
                            "category_id": self._category(s["label_id"]),
                            "iscrowd": 0,
                            "area": int((ids == s["id"]).sum()),
                        }
                        for s in unique_segments(pan["segments_info"])
                    ],
                }
            )
        if ins is not None:
            keep = [i for i, s in enumerate(ins["segments_info"]) if s["label_id"] in things]
            maps = ins["segmentation"].cpu().numpy().astype(bool)
            rles = encode_masks(maps[keep]) if keep else []
            for i, rle in zip(keep, rles):
                seg = ins["segments_info"][i]
                counts = rle["counts"]
                rle = {**rle, "counts": counts.decode() if isinstance(counts, bytes) else counts}
                self.results.append(
                    {
                        "image_id": index,
                        "category_id": self._category(seg["label_id"]),
                        "segmentation": rle,
                        "score": float(seg["score"]),
                    }
                )
        if sem is not None:
            arr = sem.cpu().numpy()
            self._png(
                "semantic", name, arr.astype(np.uint8 if arr.max(initial=0) < 255 else np.uint16)
            )

    def close(self) -> None:
        from ..evaluation.report import write_json

        categories = [
            {"id": c["category_id"], "name": c["name"], "isthing": c["isthing"]} for c in self.cats
        ]
        if self.panoptic:
            write_json(
                os.path.join(self.dir, "panoptic.json"),
                {"annotations": self.panoptic, "categories": categories},
            )
        if self.results:
            write_json(os.path.join(self.dir, "instances_results.json"), self.results)
