"""Reading saved predictions, checked against a dataset before any scoring.

Accepted layouts (``--predictions PATH``):

- a folder as ``evaluate --save-predictions`` writes it: ``panoptic.json`` + ``panoptic/`` (COCO
  panoptic), ``instances_results.json`` (COCO results) and ``semantic/`` (one PNG of label
  indices per image), any of them;
- panopticapi's layout: ``NAME.json`` (an object with ``annotations``, optionally
  ``categories``) beside the folder ``NAME/`` of its PNGs, given as the JSON file;
- a COCO results JSON file (a list of ``image_id``, ``category_id``, ``segmentation`` (RLE),
  ``score``).

Panoptic PNGs and semantic PNGs are matched to the dataset's images by name (the image's
``file_name`` with a ``.png`` extension); COCO results by ``image_id``: the dataset JSON's image ids
for COCO datasets, else the image's position (what ``--save-predictions`` writes). Category ids
are the dataset's COCO ids. Every problem is a :class:`PredictionsError` naming the file and the
field of the first mismatch.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from ..data.errors import DatasetError
from ..data.io import load_json
from ..files import UnsafePathError, confined_path
from .predictions import PredictionWriter

__all__ = [
    "PredictionsError",
    "PredictionFiles",
    "PanopticEntry",
    "InstanceResult",
    "SavedPredictions",
    "DatasetKeys",
    "dataset_keys",
    "find_prediction_files",
    "read_predictions",
]


class PredictionsError(DatasetError):
    """Saved predictions that cannot be scored against the dataset; the message names the file
    and the field (``panoptic.json: annotations[3].file_name 'x.png' is not in the dataset``).
    A :class:`DatasetError` (path + problem) of the predictions' files."""


@dataclass
class PredictionFiles:
    """Where each task's predictions are (None: not there)."""

    panoptic_json: Optional[str] = None
    panoptic_dir: Optional[str] = None
    results_json: Optional[str] = None
    semantic_dir: Optional[str] = None

    def tasks(self) -> List[str]:
        """The tasks these files can score, in the package's task order."""
        have = {
            "panoptic": self.panoptic_json is not None,
            "instance": self.results_json is not None,
            "semantic": self.semantic_dir is not None,
        }
        return [t for t, ok in have.items() if ok]


@dataclass
class PanopticEntry:
    """One image's panoptic prediction: its PNG and segments (``id`` -> COCO category id)."""

    png: str
    segments: Dict[int, int]


@dataclass
class InstanceResult:
    """One COCO result: its position in the file, COCO category id, RLE and score."""

    index: int
    category_id: int
    segmentation: Dict[str, Any]
    score: float


@dataclass
class SavedPredictions:
    """Checked predictions, keyed the way the scorer looks them up."""

    files: PredictionFiles
    panoptic: Dict[str, PanopticEntry] = field(default_factory=dict)  # by PNG name
    instances: Dict[Any, List[InstanceResult]] = field(default_factory=dict)  # by image key
    semantic: Dict[str, str] = field(default_factory=dict)  # PNG name -> path


def find_prediction_files(path: str) -> PredictionFiles:
    """The prediction files at ``path`` (a folder or a JSON file, see the module docstring).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        PredictionsError: a JSON file of neither kind, or a folder holding no predictions.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"--predictions {path}: not found")
    if os.path.isdir(path):
        files = PredictionFiles()
        if os.path.isfile(os.path.join(path, "panoptic.json")):
            files.panoptic_json = os.path.join(path, "panoptic.json")
            files.panoptic_dir = os.path.join(path, "panoptic")
        if os.path.isfile(os.path.join(path, "instances_results.json")):
            files.results_json = os.path.join(path, "instances_results.json")
        if os.path.isdir(os.path.join(path, "semantic")):
            files.semantic_dir = os.path.join(path, "semantic")
        if not files.tasks():
            raise PredictionsError(
                path,
                "no predictions found: expected panoptic.json + panoptic/, "
                "instances_results.json or semantic/",
            )
        return files
    data = _load(path)
    if isinstance(data, list):
        return PredictionFiles(results_json=path)
    if isinstance(data, dict) and "annotations" in data:
        # panopticapi's convention: the PNGs of NAME.json are in the folder NAME/.
        return PredictionFiles(panoptic_json=path, panoptic_dir=os.path.splitext(path)[0])
    raise PredictionsError(
        path, "not a COCO results list nor a panoptic JSON (an object with 'annotations')"
    )


def _load(path: str) -> Any:
    try:
        return load_json(path)
    except DatasetError as e:
        raise PredictionsError(path, e.problem) from None


def _int(value: Any, path: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PredictionsError(path, f"{where} is {value!r}, not an integer")
    return value


def _inside(root: str, name: Any, path: str, where: str) -> str:
    """``root/name`` for a name read from a predictions file: a relative string that stays in
    ``root``, the file itself included (a symlinked PNG leading out is refused too)."""
    if not isinstance(name, str):
        raise PredictionsError(path, f"{where} is {name!r}, not a file name")
    try:
        target = confined_path(root, name, what=where)
    except UnsafePathError as e:
        raise PredictionsError(path, str(e)) from None
    real_root = os.path.realpath(root)
    if os.path.commonpath([real_root, os.path.realpath(target)]) != real_root:
        raise PredictionsError(path, f"{where} {name!r}: leads outside {root} through a symlink")
    return target


@dataclass
class DatasetKeys:
    """What predictions are matched against: the PNG name and image key of each dataset image
    (``names[i]``, ``keys[i]``) and the COCO category ids (-> names)."""

    names: List[str]
    keys: List[Any]
    categories: Dict[int, str]


def _check_categories(data: Dict[str, Any], keys: DatasetKeys, path: str) -> None:
    cats = data.get("categories", [])
    if not isinstance(cats, list):
        raise PredictionsError(path, "categories is not a list")
    for k, c in enumerate(cats):
        if not isinstance(c, dict) or "id" not in c:
            raise PredictionsError(path, f"categories[{k}] is not an object with an 'id'")
        cid = _int(c["id"], path, f"categories[{k}].id")
        if cid not in keys.categories:
            raise PredictionsError(path, f"categories[{k}].id {cid} is not a dataset category")
        name = c.get("name", keys.categories[cid])
        if str(name) != keys.categories[cid]:
            raise PredictionsError(
                path,
                f"categories[{k}] (id {cid}) is named {name!r}, the dataset's "
                f"{keys.categories[cid]!r}",
            )


def _read_panoptic(files: PredictionFiles, keys: DatasetKeys) -> Dict[str, PanopticEntry]:
    path = files.panoptic_json
    data = _load(path)
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise PredictionsError(path, "expected an object with an 'annotations' list")
    if not os.path.isdir(files.panoptic_dir):
        raise PredictionsError(files.panoptic_dir, "folder of the panoptic PNGs not found")
    _check_categories(data, keys, path)
    known = set(keys.names)
    entries: Dict[str, PanopticEntry] = {}
    for k, ann in enumerate(data["annotations"]):
        where = f"annotations[{k}]"
        if not isinstance(ann, dict):
            raise PredictionsError(path, f"{where} is not an object")
        for key in ("file_name", "segments_info"):
            if key not in ann:
                raise PredictionsError(path, f"{where} has no '{key}'")
        png = _inside(files.panoptic_dir, ann["file_name"], path, f"{where}.file_name")
        name = os.path.normpath(ann["file_name"]).replace(os.sep, "/")
        if name not in known:
            raise PredictionsError(
                path, f"{where}.file_name {ann['file_name']!r} is not in the dataset"
            )
        if name in entries:
            raise PredictionsError(path, f"{where}.file_name {ann['file_name']!r} appears twice")
        if not os.path.isfile(png):
            raise PredictionsError(path, f"{where}.file_name {ann['file_name']!r}: no such PNG")
        entries[name] = PanopticEntry(png, _segments(ann["segments_info"], keys, path, where))
    return entries


def _segments(segments: Any, keys: DatasetKeys, path: str, where: str) -> Dict[int, int]:
    if not isinstance(segments, list):
        raise PredictionsError(path, f"{where}.segments_info is not a list")
    out: Dict[int, int] = {}
    for j, seg in enumerate(segments):
        at = f"{where}.segments_info[{j}]"
        if not isinstance(seg, dict) or "id" not in seg or "category_id" not in seg:
            raise PredictionsError(path, f"{at} is not an object with 'id' and 'category_id'")
        sid = _int(seg["id"], path, f"{at}.id")
        cid = _int(seg["category_id"], path, f"{at}.category_id")
        if sid <= 0 or sid in out:
            raise PredictionsError(path, f"{at}.id {sid} is not a new positive segment id")
        if cid not in keys.categories:
            raise PredictionsError(path, f"{at}.category_id {cid} is not a dataset category")
        out[sid] = cid
    return out


def _read_results(path: str, keys: DatasetKeys) -> Dict[Any, List[InstanceResult]]:
    data = _load(path)
    if not isinstance(data, list):
        raise PredictionsError(path, "expected a list of COCO results")
    known = set(keys.keys)
    grouped: Dict[Any, List[InstanceResult]] = {}
    for k, r in enumerate(data):
        where = f"[{k}]"
        if not isinstance(r, dict):
            raise PredictionsError(path, f"{where} is not an object")
        for key in ("image_id", "category_id", "segmentation", "score"):
            if key not in r:
                raise PredictionsError(path, f"{where} has no '{key}'")
        image = r["image_id"]
        if isinstance(image, bool) or not isinstance(image, (int, str)) or image not in known:
            raise PredictionsError(path, f"{where}.image_id {image!r} is not in the dataset")
        cid = _int(r["category_id"], path, f"{where}.category_id")
        if cid not in keys.categories:
            raise PredictionsError(path, f"{where}.category_id {cid} is not a dataset category")
        score = r["score"]
        if (
            isinstance(score, bool)
            or not isinstance(score, (int, float))
            or not math.isfinite(score)
        ):
            raise PredictionsError(path, f"{where}.score {score!r} is not a finite number")
        seg = r["segmentation"]
        if not isinstance(seg, dict) or "size" not in seg or "counts" not in seg:
            raise PredictionsError(
                path, f"{where}.segmentation is not an RLE (an object with 'size' and 'counts')"
            )
        grouped.setdefault(image, []).append(InstanceResult(k, cid, seg, float(score)))
    return grouped


def _read_semantic(folder: str, keys: DatasetKeys, limit: int) -> Dict[str, str]:
    known = set(keys.names)
    for root, _, names in os.walk(folder):
        for n in sorted(names):
            rel = os.path.relpath(os.path.join(root, n), folder).replace(os.sep, "/")
            if rel.lower().endswith(".png") and rel not in known:
                raise PredictionsError(os.path.join(folder, rel), "is not an image of the dataset")
    out = {}
    for name in keys.names[:limit]:
        png = _inside(folder, name, folder, "file_name")
        if not os.path.isfile(png):
            raise PredictionsError(png, "missing: every evaluated image needs its semantic PNG")
        out[name] = png
    return out


def read_predictions(
    path: str, tasks: Sequence[str], keys: DatasetKeys, limit: int
) -> SavedPredictions:
    """Read and check the predictions of ``tasks`` at ``path`` against the dataset ``keys``;
    every one of the first ``limit`` images must have a prediction of each task (an image
    without COCO results has none: an empty list is a valid answer).

    Raises:
        PredictionsError: the first problem, naming the file and field.
    """
    files = find_prediction_files(path)
    missing = [t for t in tasks if t not in files.tasks()]
    if missing:
        raise PredictionsError(path, f"no {missing[0]} predictions here ({_expected(missing[0])})")
    saved = SavedPredictions(files)
    if "panoptic" in tasks:
        saved.panoptic = _read_panoptic(files, keys)
        absent = [n for n in keys.names[:limit] if n not in saved.panoptic]
        if absent:
            raise PredictionsError(
                files.panoptic_json, f"no annotation for the dataset image {absent[0]!r}"
            )
    if "instance" in tasks:
        saved.instances = _read_results(files.results_json, keys)
    if "semantic" in tasks:
        saved.semantic = _read_semantic(files.semantic_dir, keys, limit)
    return saved


def _expected(task: str) -> str:
    return {
        "panoptic": "panoptic.json + panoptic/",
        "instance": "instances_results.json",
        "semantic": "semantic/",
    }[task]


def dataset_keys(dataset: Any, categories: List[Dict[str, Any]]) -> DatasetKeys:
    """The names and image keys of a dataset's images, without reading them.

    ``categories`` are in label space (``category_id`` the COCO id), as
    :func:`~mask2former.coco.label_categories` gives them.
    """
    n = len(dataset)
    if hasattr(dataset, "file_name"):
        names = [dataset.file_name(i) for i in range(n)]
    else:
        # The semantic folder reader names no file before reading it; its pairs are sorted
        # (image, label) paths, the image's name being the sample's file_name.
        names = [os.path.basename(str(p)) for p, _ in dataset._pairs]
    keys: List[Any] = list(range(n))
    json_file = getattr(dataset, "json_file", None)
    if json_file is not None:
        keys = _coco_image_ids(json_file, n)
    return DatasetKeys(
        names=[PredictionWriter.output_name(x).replace(os.sep, "/") for x in names],
        keys=keys,
        categories={int(c["category_id"]): str(c["name"]) for c in categories},
    )


def _coco_image_ids(json_file: Any, n: int) -> List[Any]:
    """The image ids of a COCO dataset in its samples' order: panoptic datasets have a sample
    per annotation, instance datasets one per image (see the readers)."""
    with open(json_file, encoding="utf-8") as f:
        data = json.load(f)
    if "segments_info" in (data["annotations"][0] if data.get("annotations") else {}):
        ids = [a["image_id"] for a in data["annotations"]]
    else:
        ids = [img["id"] for img in data["images"]]
    if len(ids) != n:  # a reader that changed its order: refuse rather than mismatch
        raise PredictionsError(json_file, "cannot list the dataset's image ids")
    return ids
