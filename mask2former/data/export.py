"""Write a panoptic dataset to disk in the standard formats.

Layout of ``DIR`` (file stems are shared by every view)::

    DIR/images/000000.png       RGB images (PNG: lossless, so reading back gives the same pixels)
    DIR/panoptic/000000.png     COCO panoptic id maps, id = R + 256 G + 256^2 B (0 = void)
    DIR/panoptic.json           COCO panoptic: images, annotations (segments_info), categories
    DIR/instances.json          COCO instances of the thing classes: compressed-RLE segmentation
    DIR/semantic/000000.png     ADE20K-style labels, uint8: 0 = void/ignore, k + 1 = label k
    DIR/categories.json         the category list (id, name, isthing, color)

The semantic PNGs follow ADE20K's convention, so read them with ``reduce_labels=True`` to get
labels 0..K-1 and 255 for void. Labels are ``position in categories sorted by id``, as in every
reader of this package, so the three views share one label space.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Sequence, Set, Tuple, Union

import numpy as np

from ..coco import category_to_label, encode_mask, id_to_rgb, mask_bbox
from ..files import confined_path, save_image, write_json

__all__ = ["export_panoptic_dataset", "prepare_dataset_folder", "FORMATS"]

FORMATS: Tuple[str, ...] = ("panoptic", "instances", "semantic")


@dataclass
class _Listing:
    """What the JSON files list, gathered sample by sample; and the category maps it needs."""

    to_label: Dict[int, int]  # category id -> label (semantic PNG value - 1)
    thing_ids: Set[int]  # category ids of the thing classes (the instances JSON's)
    images: List[Dict[str, Any]] = field(default_factory=list)
    panoptic: List[Dict[str, Any]] = field(default_factory=list)
    instances: List[Dict[str, Any]] = field(default_factory=list)


def export_panoptic_dataset(
    samples: Iterable[Dict[str, Any]],
    categories: Sequence[Dict[str, Any]],
    out_dir: Union[str, Path],
    formats: Sequence[str] = FORMATS,
) -> Path:
    """Write samples to ``out_dir`` in the layout above.

    Args:
        samples: dicts with ``image`` (H, W, 3) uint8, ``panoptic`` (H, W) int ids and
            ``segments_info`` ([{"id", "category_id", "iscrowd"?}]); ``file_name`` optional
            (default ``{index:06d}.png``). A :class:`~mask2former.data.shapes.ShapesDataset`
            qualifies.
        categories: dicts with ``id``, ``name``, ``isthing`` and optionally ``color``.
        out_dir: created if needed; existing files of the same names are replaced (the
            ``shapes`` command refuses a non-empty folder unless told to overwrite).
        formats: any of ``"panoptic"``, ``"instances"``, ``"semantic"``; images are always written.

    Returns:
        ``out_dir`` as a Path.
    """
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown formats {sorted(unknown)}; choose from {FORMATS}")
    if len(categories) > 254:
        raise ValueError("semantic PNGs are uint8: at most 254 categories")
    out = Path(out_dir)
    folders = ["images"] + [f for f in ("panoptic", "semantic") if f in formats]
    for sub in folders:
        (out / sub).mkdir(parents=True, exist_ok=True)
    listing = _Listing(
        to_label=category_to_label(categories),
        thing_ids={int(c["id"]) for c in categories if c.get("isthing", 1)},
    )
    for index, sample in enumerate(samples):
        _export_sample(index, sample, out, folders, listing)
    _write_json_files(out, formats, _coco_categories(categories), listing)
    return out


def _coco_categories(categories: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The category list of the JSON files: id, name, supercategory, isthing, color; by id."""
    return [
        {
            "id": int(c["id"]),
            "name": str(c["name"]),
            "supercategory": str(
                c.get("supercategory", "thing" if c.get("isthing", 1) else "stuff")
            ),
            "isthing": int(c.get("isthing", 1)),
            "color": [int(v) for v in c.get("color", [0, 0, 0])],
        }
        for c in sorted(categories, key=lambda c: int(c["id"]))
    ]


def _export_sample(
    index: int, sample: Dict[str, Any], out: Path, folders: List[str], listing: _Listing
) -> None:
    """Write one sample's PNGs (the ``folders``) and add its entries to ``listing``."""
    # Sub-folders of a sample's file_name are kept; names leading outside are refused.
    stem = str(Path(str(sample.get("file_name") or f"{index:06d}.png")).with_suffix(""))
    name = f"{stem}.png"
    paths = {sub: confined_path(out / sub, name, "file_name") for sub in folders}
    image = np.asarray(sample["image"], dtype=np.uint8)
    pan = np.asarray(sample["panoptic"])
    h, w = pan.shape
    if image.shape != (h, w, 3):
        raise ValueError(f"sample {index}: image {image.shape} does not match panoptic {pan.shape}")
    for path in paths.values():
        os.makedirs(os.path.dirname(path), exist_ok=True)
    save_image(paths["images"], image)
    listing.images.append({"id": index, "file_name": name, "height": h, "width": w})
    segments, semantic = _segments(index, pan, sample["segments_info"], listing)
    listing.panoptic.append({"image_id": index, "file_name": name, "segments_info": segments})
    if "panoptic" in paths:
        save_image(paths["panoptic"], id_to_rgb(pan))
    if "semantic" in paths:
        save_image(paths["semantic"], semantic)


def _segments(
    index: int, pan: np.ndarray, segments_info: Sequence[Dict[str, Any]], listing: _Listing
) -> Tuple[List[Dict[str, Any]], np.ndarray]:
    """The panoptic ``segments_info`` of image ``index`` and its (H, W) uint8 semantic PNG
    (0 = void, label + 1); its thing segments are added to ``listing.instances``."""
    segments = []
    semantic = np.zeros(pan.shape, dtype=np.uint8)
    for seg in segments_info:
        mask = pan == int(seg["id"])
        cat = int(seg["category_id"])
        info = {
            "id": int(seg["id"]),
            "category_id": cat,
            "area": int(mask.sum()),
            "bbox": mask_bbox(mask),
            "iscrowd": int(seg.get("iscrowd", 0)),
        }
        segments.append(info)
        # Crowd regions are left void in the semantic view, as in detectron2's conversion.
        if not info["iscrowd"]:
            semantic[mask] = listing.to_label[cat] + 1
        if cat in listing.thing_ids:
            listing.instances.append(
                {
                    "id": len(listing.instances) + 1,
                    "image_id": index,
                    "category_id": cat,
                    "segmentation": encode_mask(mask),
                    "area": info["area"],
                    "bbox": info["bbox"],
                    "iscrowd": info["iscrowd"],
                }
            )
    return segments, semantic


def _write_json_files(
    out: Path, formats: Sequence[str], cats: List[Dict[str, Any]], listing: _Listing
) -> None:
    """categories.json, and the panoptic and instances JSON files that ``formats`` ask for."""
    write_json(out / "categories.json", cats)
    if "panoptic" in formats:
        write_json(
            out / "panoptic.json",
            {"images": listing.images, "annotations": listing.panoptic, "categories": cats},
        )
    if "instances" in formats:
        thing_cats = [c for c in cats if c["isthing"]]
        write_json(
            out / "instances.json",
            {"images": listing.images, "annotations": listing.instances, "categories": thing_cats},
        )


# What a dataset folder written here holds: prepare_dataset_folder removes these and nothing else.
DATASET_FILES = ("panoptic.json", "instances.json", "categories.json")
DATASET_FOLDERS = ("images", "panoptic", "semantic")
SAMPLE_NAME = re.compile(r"^[0-9]{6}\.png$")


def prepare_dataset_folder(out: str, overwrite: bool) -> None:
    """Refuse a non-empty ``out`` unless ``overwrite`` (the ``shapes`` command's ``--out`` and
    ``--overwrite``); then remove what an earlier dataset written here left (its JSON files and
    ``NNNNNN.png`` images and labels, nothing else), so no sample of a larger earlier dataset
    stays behind to be read as part of the new one."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise NotADirectoryError(f"--out {out} is a file")
    if not os.path.isdir(out) or not os.listdir(out):
        return
    if not overwrite:
        raise FileExistsError(f"--out {out} is not empty (use --overwrite to replace a dataset)")
    doomed = [os.path.join(out, name) for name in DATASET_FILES]
    for folder in DATASET_FOLDERS:
        path = os.path.join(out, folder)
        if os.path.isdir(path) and not os.path.islink(path):
            doomed += [os.path.join(path, n) for n in os.listdir(path) if SAMPLE_NAME.match(n)]
    for path in doomed:
        if os.path.isfile(path) or os.path.islink(path):
            os.unlink(path)
