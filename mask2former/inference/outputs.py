"""What ``segment`` writes: per image an overlay, an id map and a JSON record; with the instance
task also the run's COCO files. Every file goes through :mod:`mask2former.files`."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import numpy as np

from ..files import remove_stale_temporaries, save_image, write_text
from .results import SegmentationResult

__all__ = [
    "OutputPaths",
    "image_record",
    "write_outputs",
    "read_record",
    "write_coco",
    "prepare_out_dir",
]

ID_MAP_ENCODING = "16-bit greyscale PNG; pixel value = segment id; 0 = no segment"
COCO_RESULTS = "coco_results.json"
COCO_IMAGES = "images.json"


@dataclass(frozen=True)
class OutputPaths:
    """The three files of one image; the JSON is written last and marks the image done."""

    overlay: str
    ids: str
    json: str

    @classmethod
    def under(cls, out_dir: str, name: str) -> OutputPaths:
        base = os.path.join(out_dir, name)
        return cls(base + ".overlay.png", base + ".ids.png", base + ".json")

    def remove_temporaries(self) -> None:
        """Temporary files a killed run left beside these outputs."""
        for path in (self.overlay, self.ids, self.json):
            remove_stale_temporaries(os.path.dirname(path), os.path.basename(path))


def _dumps(data: Any, indent: str = "") -> str:
    """JSON with one line per top-level entry and per list item: diff- and grep-friendly."""
    inner = indent + "  "
    if isinstance(data, list) and data:
        return "[\n" + ",\n".join(inner + json.dumps(x) for x in data) + f"\n{indent}]"
    if isinstance(data, dict) and data:
        body = [f"{inner}{json.dumps(k)}: {_dumps(v, inner)}" for k, v in data.items()]
        return "{\n" + ",\n".join(body) + f"\n{indent}}}"
    return json.dumps(data)


def _save_json(data: Any, path: str) -> None:
    write_text(path, _dumps(data) + "\n")


def image_record(
    file: str, result: SegmentationResult, model: str, paths: Optional[OutputPaths] = None
) -> Dict[str, Any]:
    """The per-image JSON document: image, size, task, model, then (with ``paths``, as
    ``segment`` writes it) the names of the overlay and id map files, then the segments with
    their COCO RLE ``segmentation``. The service answers with it too, without files."""
    record: Dict[str, Any] = {
        "image": file,
        "height": int(result.image_size[0]),
        "width": int(result.image_size[1]),
        "task": result.task,
        "model": model,
    }
    if paths is not None:
        record["overlay"] = os.path.basename(paths.overlay)
        record["id_map"] = os.path.basename(paths.ids)
        record["id_map_encoding"] = ID_MAP_ENCODING
    record["segments"] = [
        dict(s, segmentation=rle) for s, rle in zip(result.segments, result.rles())
    ]
    return record


def write_outputs(
    file: str,
    image: np.ndarray,
    result: SegmentationResult,
    model: str,
    id2label: Dict[int, str],
    paths: OutputPaths,
) -> Dict[str, Any]:
    """Write one image's id map, overlay and (last) JSON record; returns the record."""
    from ..visualize import draw_overlay

    if result.segmentation.max(initial=0) > 65535:
        raise ValueError("more than 65535 segments do not fit a 16-bit id map")
    os.makedirs(os.path.dirname(paths.json) or ".", exist_ok=True)
    save_image(paths.ids, result.segmentation.astype(np.uint16))
    save_image(paths.overlay, draw_overlay(image, result.segmentation, result.segments, id2label))
    record = image_record(file, result, model, paths)
    _save_json(record, paths.json)  # last: a JSON file means the image is complete
    return record


def prepare_out_dir(out_dir: str) -> None:
    """Create the output folder and prove it writable, so a bad ``--out`` is one error up front
    rather than one per image after the model ran."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise NotADirectoryError(f"output folder {out_dir} is a file")
    try:
        os.makedirs(out_dir, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=out_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise OSError(f"cannot write to output folder {out_dir} ({reason})") from None


def _read_json(path: str) -> Any:
    """An earlier run's JSON file, or None when it is missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def read_record(path: str) -> Optional[Dict[str, Any]]:
    """A per-image JSON of an earlier run, or None."""
    record = _read_json(path)
    return record if isinstance(record, dict) else None


def _dicts(value: Any, key: str) -> List[Dict[str, Any]]:
    """The dicts of a list (those holding an integer ``key``); [] for anything else."""
    items = value if isinstance(value, list) else []
    return [x for x in items if isinstance(x, dict) and isinstance(x.get(key), int)]


def _coco_entries(image_id: int, record: Dict[str, Any]) -> List[Dict[str, Any]]:
    return [
        {
            "image_id": image_id,
            "category_id": int(s["label_id"]),
            "segmentation": s["segmentation"],
            "score": float(s["score"]),
        }
        for s in record.get("segments", [])
    ]


def write_coco(out_dir: str, records: Dict[str, Dict], id2label: Dict[int, str]) -> None:
    """``coco_results.json`` (detections) and ``images.json`` (a ground-truth-less COCO file
    with the same image ids, so ``COCO("images.json").loadRes("coco_results.json")`` works).

    Merged with what earlier runs into the same folder wrote: an image keeps its id, images of
    this run replace their old detections, and other images' detections are kept.
    """
    old = read_record(os.path.join(out_dir, COCO_IMAGES)) or {}
    old_images = _dicts(old.get("images"), "id")
    old_results = _dicts(_read_json(os.path.join(out_dir, COCO_RESULTS)), "image_id")
    ids = {str(i.get("file_name")): i["id"] for i in old_images}
    next_id = max(ids.values(), default=0) + 1
    for f in records:
        if f not in ids:
            ids[f], next_id = next_id, next_id + 1
    redone = {ids[f] for f in records}
    images = [i for i in old_images if i["id"] not in redone]
    results = [r for r in old_results if r["image_id"] not in redone]
    categories = {c["id"]: str(c.get("name", c["id"])) for c in _dicts(old.get("categories"), "id")}
    categories.update({int(k): str(v) for k, v in id2label.items()})
    for f, record in records.items():
        images.append(
            {"id": ids[f], "file_name": f, "height": record["height"], "width": record["width"]}
        )
        results += _coco_entries(ids[f], record)
        for seg in record["segments"]:  # labels of an older model's outputs, if any
            categories.setdefault(int(seg["label_id"]), seg.get("label", str(seg["label_id"])))
    images.sort(key=lambda i: i["id"])
    results.sort(key=lambda r: r["image_id"])  # stable: each image's detections keep their order
    _save_json(results, os.path.join(out_dir, COCO_RESULTS))
    cats = [{"id": i, "name": n} for i, n in sorted(categories.items())]
    _save_json(
        {"images": images, "annotations": [], "categories": cats},
        os.path.join(out_dir, COCO_IMAGES),
    )
