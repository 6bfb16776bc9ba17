"""Saving an evaluation's predictions: COCO panoptic (PNG + JSON), COCO results JSON and
semantic PNGs, under names taken from the dataset."""

from __future__ import annotations

import os
from typing import Any, Dict, List

import numpy as np

from ..coco import encode_masks_json, id_to_rgb
from ..files import confined_path, save_image
from ..inference.results import SegmentationResult
from .report import write_json

__all__ = ["PredictionWriter"]


class PredictionWriter:
    """Writes predictions under ``directory``: ``panoptic/`` + ``panoptic.json``,
    ``instances_results.json`` and ``semantic/``.

    File names come from the dataset's ``file_name`` entries, sub-folders kept; a name that
    would land outside ``directory`` (absolute, ``..``, a symlinked folder) is refused.

    Args:
        directory: the output folder.
        categories: label-space categories (``id`` = label id, ``category_id``, ``name``,
            ``isthing``), indexed by label id.
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

    def add(
        self,
        index: int,
        sample: Dict[str, Any],
        results: Dict[str, SegmentationResult],
        things: Any,
    ) -> None:
        """One sample's results by task (those present are written)."""
        name = self.output_name(str(sample.get("file_name", f"{index:06d}.png")))
        # COCO datasets' own image ids, so the files score with any COCO tool against the
        # dataset's JSON; the image's position for datasets without ids (shapes, semantic).
        image_id = sample.get("image_id", index)
        if "panoptic" in results:
            self._add_panoptic(image_id, name, results["panoptic"])
        if "instance" in results:
            self._add_instance(image_id, results["instance"], things)
        if "semantic" in results:
            classes = results["semantic"].segmentation - 1
            dtype = np.uint8 if classes.max(initial=0) < 255 else np.uint16
            self._png("semantic", name, classes.astype(dtype))

    def _add_panoptic(self, image_id: Any, name: str, result: SegmentationResult) -> None:
        self._png("panoptic", name, id_to_rgb(result.segmentation))
        segments = [
            {
                "id": int(s["id"]),
                "category_id": self._category(s["label_id"]),
                "iscrowd": 0,
                "area": int(s["area"]),
            }
            for s in result.segments
        ]
        self.panoptic.append({"image_id": image_id, "file_name": name, "segments_info": segments})

    def _add_instance(self, image_id: Any, result: SegmentationResult, things: Any) -> None:
        keep = [i for i, s in enumerate(result.segments) if s["label_id"] in things]
        rles = _rles(result, keep)
        for i, rle in zip(keep, rles):
            seg = result.segments[i]
            self.results.append(
                {
                    "image_id": image_id,
                    "category_id": self._category(seg["label_id"]),
                    "segmentation": rle,
                    "score": float(seg["score"]),
                }
            )

    def close(self) -> None:
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


def _rles(result: SegmentationResult, keep: List[int]) -> List[Dict[str, Any]]:
    """COCO RLE (str counts) of the kept masks of an instance result."""
    return encode_masks_json(result.masks[keep]) if keep else []
