"""Reader for COCO panoptic datasets: an image folder, a PNG folder and the panoptic JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Union

import numpy as np

from ..coco import category_to_label
from .errors import DatasetError
from .io import load_json, read_image, read_label_png
from .sample import Sample, segments_to_sample

__all__ = ["CocoPanopticDataset"]


def _require(obj: Any, keys: List[str], path: Path, what: str) -> None:
    if not isinstance(obj, dict):
        raise DatasetError(path, f"{what} must be a JSON object, got {type(obj).__name__}")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise DatasetError(path, f"{what} is missing key(s) {missing}")


class CocoPanopticDataset:
    """COCO panoptic segmentation (``panoptic_{train,val}2017`` layout).

    The JSON is checked when the dataset is built (keys, category ids, duplicate segment ids);
    the image and PNG of a sample when it is read (``dataset[i]``), or all at once with
    :meth:`validate`.

    Args:
        image_dir: folder of the images named in ``json["images"][*]["file_name"]``.
        panoptic_dir: folder of the PNGs named in ``json["annotations"][*]["file_name"]``.
        json_file: the panoptic JSON.

    Samples: ``image`` (H, W, 3) uint8, ``masks`` (N, H, W) bool, ``labels`` (N,) int64
    (contiguous: index of the category in ``categories`` sorted by id), ``isthing`` (N,) bool,
    ``iscrowd`` (N,) bool, ``segment_ids`` (N,) int64, ``file_name``, ``image_id``.
    """

    def __init__(
        self,
        image_dir: Union[str, Path],
        panoptic_dir: Union[str, Path],
        json_file: Union[str, Path],
    ) -> None:
        self.image_dir = Path(image_dir)
        self.panoptic_dir = Path(panoptic_dir)
        self.json_file = Path(json_file)
        data = load_json(self.json_file)
        path = self.json_file
        _require(data, ["images", "annotations", "categories"], path, "the panoptic JSON")
        for c in data["categories"]:
            _require(c, ["id", "name"], path, "a category")
        self.categories: List[Dict[str, Any]] = sorted(
            data["categories"], key=lambda c: int(c["id"])
        )
        self.label_names: List[str] = [str(c["name"]) for c in self.categories]
        to_label = category_to_label(self.categories)

        images: Dict[int, Dict[str, Any]] = {}
        for img in data["images"]:
            _require(img, ["id", "file_name"], path, "an image entry")
            images[int(img["id"])] = img
        self._items: List[Dict[str, Any]] = []
        for ann in data["annotations"]:
            _require(ann, ["image_id", "file_name", "segments_info"], path, "an annotation")
            where = f"annotation of {ann['file_name']!r}"
            if int(ann["image_id"]) not in images:
                raise DatasetError(path, f"{where}: image_id {ann['image_id']} not in 'images'")
            seen = set()
            for seg in ann["segments_info"]:
                _require(seg, ["id", "category_id"], path, f"a segment of the {where}")
                if int(seg["category_id"]) not in to_label:
                    raise DatasetError(
                        path,
                        f"{where}: segment {seg['id']} has category_id {seg['category_id']}, "
                        "which is not in 'categories'",
                    )
                if int(seg["id"]) in seen:
                    raise DatasetError(path, f"{where}: duplicate segment id {seg['id']}")
                seen.add(int(seg["id"]))
            self._items.append({"image": images[int(ann["image_id"])], "ann": ann})

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> Sample:
        item = self._items[index]
        img_info, ann = item["image"], item["ann"]
        image_path = self.image_dir / img_info["file_name"]
        png_path = self.panoptic_dir / ann["file_name"]
        image = read_image(image_path)
        ids = read_label_png(png_path, rgb=True)
        h, w = image.shape[:2]
        if ids.shape != (h, w):
            raise DatasetError(
                png_path, f"PNG size {ids.shape[1]}x{ids.shape[0]} != image size {w}x{h}"
            )
        if "height" in img_info and "width" in img_info:
            if (int(img_info["height"]), int(img_info["width"])) != (h, w):
                raise DatasetError(
                    image_path,
                    f"image is {w}x{h} but {self.json_file.name} says "
                    f"{img_info['width']}x{img_info['height']}",
                )
        segments = ann["segments_info"]
        present = set(np.unique(ids).tolist())
        declared = {int(s["id"]) for s in segments}
        absent = sorted(declared - present)
        if absent:
            raise DatasetError(
                png_path, f"segment id(s) {absent[:10]} of {self.json_file.name} not present in PNG"
            )
        # panopticapi treats id 0 as void; any other id must be declared.
        undeclared = sorted(present - declared - {0})
        if undeclared:
            raise DatasetError(
                png_path, f"PNG has segment id(s) {undeclared[:10]} not in {self.json_file.name}"
            )
        arrays = segments_to_sample(ids, segments, self.categories)
        return Sample(
            **arrays, image=image, file_name=str(img_info["file_name"]), image_id=img_info["id"]
        )

    def file_name(self, index: int) -> str:
        """Sample ``index``'s image ``file_name`` as the JSON gives it, without reading files."""
        return str(self._items[index]["image"]["file_name"])

    def validate(self) -> None:
        """Read every sample once; raises :class:`DatasetError` at the first broken one."""
        for i in range(len(self)):
            self[i]
