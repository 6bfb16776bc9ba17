"""Reader for COCO instance segmentation: an image folder and an instances JSON."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Union

import numpy as np

from ..coco import category_to_label, decode_rle, polygons_to_mask
from .coco_panoptic import _require
from .errors import DatasetError
from .io import load_json, read_image
from .sample import Sample

__all__ = ["CocoInstancesDataset"]


class CocoInstancesDataset:
    """COCO instances (``instances_{train,val}2017.json`` layout); polygons, RLE and crowds.

    ``segmentation`` may be a list of polygons, an uncompressed RLE (``counts`` a list, usual for
    ``iscrowd=1``) or a compressed RLE (``counts`` a string). Polygons rasterise exactly as in
    pycocotools. Every image of the JSON is a sample, also one without annotations (N = 0).

    Args:
        image_dir: folder of the images named in ``json["images"][*]["file_name"]``.
        json_file: the instances JSON.
        include_crowd: keep ``iscrowd=1`` annotations (flagged in ``iscrowd``; a trainer usually
            ignores them, an evaluator needs them).

    Samples: ``image`` (H, W, 3) uint8, ``masks`` (N, H, W) bool, ``labels`` (N,) int64
    (contiguous: index of the category in ``categories`` sorted by id), ``isthing`` (N,) bool (all
    true), ``iscrowd`` (N,) bool, ``annotation_ids`` (N,) int64, ``file_name``, ``image_id``.
    """

    def __init__(
        self,
        image_dir: Union[str, Path],
        json_file: Union[str, Path],
        include_crowd: bool = True,
    ) -> None:
        self.image_dir = Path(image_dir)
        self.json_file = Path(json_file)
        path = self.json_file
        data = load_json(path)
        _require(data, ["images", "annotations", "categories"], path, "the instances JSON")
        for c in data["categories"]:
            _require(c, ["id", "name"], path, "a category")
        self.categories: List[Dict[str, Any]] = sorted(
            data["categories"], key=lambda c: int(c["id"])
        )
        self.label_names: List[str] = [str(c["name"]) for c in self.categories]
        self._to_label = category_to_label(self.categories)
        self._images: List[Dict[str, Any]] = []
        known = set()
        for img in data["images"]:
            _require(img, ["id", "file_name"], path, "an image entry")
            self._images.append(img)
            known.add(int(img["id"]))
        self._anns: Dict[int, List[Dict[str, Any]]] = defaultdict(list)
        for k, ann in enumerate(data["annotations"]):
            what = f"annotation {ann.get('id', f'#{k}') if isinstance(ann, dict) else f'#{k}'}"
            _require(ann, ["image_id", "category_id", "segmentation"], path, what)
            if int(ann["image_id"]) not in known:
                raise DatasetError(path, f"{what}: image_id {ann['image_id']} not in 'images'")
            if int(ann["category_id"]) not in self._to_label:
                raise DatasetError(
                    path, f"{what}: category_id {ann['category_id']} is not in 'categories'"
                )
            if not include_crowd and ann.get("iscrowd", 0):
                continue
            self._anns[int(ann["image_id"])].append(ann)

    def __len__(self) -> int:
        return len(self._images)

    def _decode(self, ann: Dict[str, Any], h: int, w: int) -> np.ndarray:
        what = f"annotation {ann.get('id', '?')} of image {ann['image_id']}"
        seg = ann["segmentation"]
        try:
            if isinstance(seg, list):
                return polygons_to_mask(seg, h, w)
            if isinstance(seg, dict):
                size = [int(v) for v in seg.get("size", [])]
                if size != [h, w]:
                    raise ValueError(f"RLE size {seg.get('size')} != image size [{h}, {w}]")
                return decode_rle(seg)
            raise ValueError(f"segmentation must be polygons or RLE, got {type(seg).__name__}")
        except (ValueError, TypeError) as e:
            raise DatasetError(self.json_file, f"{what}: bad segmentation ({e})") from e

    def __getitem__(self, index: int) -> Sample:
        info = self._images[index]
        image_path = self.image_dir / info["file_name"]
        image = read_image(image_path)
        h, w = image.shape[:2]
        if "height" in info and "width" in info:
            if (int(info["height"]), int(info["width"])) != (h, w):
                raise DatasetError(
                    image_path,
                    f"image is {w}x{h} but {self.json_file.name} says "
                    f"{info['width']}x{info['height']}",
                )
        anns = self._anns.get(int(info["id"]), [])
        masks = np.zeros((len(anns), h, w), dtype=bool)
        for k, ann in enumerate(anns):
            masks[k] = self._decode(ann, h, w)
        return Sample(
            image=image,
            masks=masks,
            labels=np.array([self._to_label[int(a["category_id"])] for a in anns], np.int64),
            isthing=np.ones(len(anns), dtype=bool),
            iscrowd=np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool),
            annotation_ids=np.array([int(a.get("id", -1)) for a in anns], dtype=np.int64),
            file_name=str(info["file_name"]),
            image_id=info["id"],
        )

    def file_name(self, index: int) -> str:
        """Sample ``index``'s image ``file_name`` as the JSON gives it, without reading files."""
        return str(self._images[index]["file_name"])

    def validate(self) -> None:
        """Read every sample once; raises :class:`DatasetError` at the first broken one."""
        for i in range(len(self)):
            self[i]
