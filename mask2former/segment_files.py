"""The file side of :func:`mask2former.segment`: finding inputs, naming and writing outputs.

Kept apart from :mod:`mask2former.predictor` so the in-memory API stays small. Every per-image
problem (missing, unreadable, not an image, bad size, a failed forward pass, an unwritable output)
becomes one line naming the file and a "failed" count; the run goes on with the other images.
"""

from __future__ import annotations

import glob
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from .files import remove_stale_temporaries, save_image, write_text
from .predictor import TASKS, ImageError, Predictor, SegmentationResult, load_image

__all__ = ["SegmentReport", "collect_inputs", "output_names", "segment_files", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
ID_MAP_ENCODING = "16-bit greyscale PNG; pixel value = segment id; 0 = no segment"
PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class SegmentReport:
    """What a run did: counts, wall time, the JSON files written and the error lines."""

    done: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    outputs: List[str] = field(default_factory=list)
    errors: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def summary(self) -> str:
        return (
            f"{self.done} image(s) segmented, {self.failed} failed, {self.skipped} skipped "
            f"in {self.seconds:.1f} s"
        )


def _is_image_name(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTENSIONS)


def _inside(path: str, folder: Optional[str]) -> bool:
    return folder is not None and os.path.commonpath([path, folder]) == folder


def collect_inputs(
    inputs: Union[PathLike, Sequence[PathLike]], exclude: Optional[PathLike] = None
) -> Tuple[List[str], List[str]]:
    """Expand files, folders (recursively, image extensions only) and glob patterns.

    Returns (files in a stable order without duplicates, one error line per input that gave
    nothing). Files found by scanning under ``exclude`` (the output folder) are left out, so a
    second run does not segment the first run's overlays.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    skip = os.path.abspath(exclude) if exclude is not None else None
    files: List[str] = []
    errors: List[str] = []
    for item in map(os.fspath, inputs):
        if os.path.isdir(item):
            found = []
            for root, dirs, names in os.walk(item):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found += [os.path.join(root, n) for n in sorted(names) if _is_image_name(n)]
            found = [f for f in found if not _inside(os.path.abspath(f), skip)]
            if not found:
                errors.append(f"{item}: no images ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
            files += found
        elif os.path.exists(item):
            files.append(item)  # given explicitly: tried whatever its extension
        elif glob.has_magic(item):
            found = sorted(f for f in glob.glob(item, recursive=True) if os.path.isfile(f))
            found = [f for f in found if not _inside(os.path.abspath(f), skip)]
            if not found:
                errors.append(f"{item}: no files match this pattern")
            files += found
        else:
            errors.append(f"{item}: no such file or folder")
    # One entry per real file: links and '**' through symlink loops reach a file many times.
    unique: Dict[str, str] = {}
    for f in files:
        unique.setdefault(os.path.realpath(f), os.path.normpath(f))
    return list(unique.values()), errors


# Run-level files of the instance task; no image's outputs may take these names.
COCO_RESULTS = "coco_results.json"
COCO_IMAGES = "images.json"
RESERVED_NAMES = frozenset(os.path.splitext(n)[0] for n in (COCO_RESULTS, COCO_IMAGES))


def output_names(files: Sequence[str]) -> Dict[str, str]:
    """Output name (no extension) per file: its path relative to the files' common folder, so
    same-named files of different folders do not collide; ``a/x.png`` and ``a/x.jpg`` become
    ``x`` and ``x_jpg``, and ``images.png`` becomes ``images_png`` (``images.json`` is the
    run's COCO file)."""
    if not files:
        return {}
    absolute = {f: os.path.abspath(f) for f in files}
    common = os.path.commonpath([os.path.dirname(p) for p in absolute.values()])
    names: Dict[str, str] = {}
    used = set(RESERVED_NAMES)
    for f in files:
        stem, ext = os.path.splitext(os.path.relpath(absolute[f], common))
        name = stem
        if name in used:
            name = f"{stem}_{ext.lstrip('.')}" if ext else stem
        k = 1
        while name in used:
            name, k = f"{stem}_{k}", k + 1
        used.add(name)
        names[f] = name
    return names


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


def _record(
    file: str, result: SegmentationResult, predictor: Predictor, names: Dict[str, str]
) -> Dict[str, Any]:
    """The per-image JSON document."""
    segments = [dict(s, segmentation=rle) for s, rle in zip(result.segments, result.rles())]
    return {
        "image": file,
        "height": int(result.image_size[0]),
        "width": int(result.image_size[1]),
        "task": result.task,
        "model": predictor.name,
        "overlay": os.path.basename(names["overlay"]),
        "id_map": os.path.basename(names["ids"]),
        "id_map_encoding": ID_MAP_ENCODING,
        "segments": segments,
    }


def _write_outputs(
    file: str, image: np.ndarray, result: SegmentationResult, predictor: Predictor, paths: Dict
) -> Dict[str, Any]:
    from .visualize import draw_overlay

    if result.segmentation.max(initial=0) > 65535:
        raise ValueError("more than 65535 segments do not fit a 16-bit id map")
    os.makedirs(os.path.dirname(paths["json"]) or ".", exist_ok=True)
    save_image(paths["ids"], result.segmentation.astype(np.uint16))
    overlay = draw_overlay(image, result.segmentation, result.segments, predictor.id2label)
    save_image(paths["overlay"], overlay)
    record = _record(file, result, predictor, paths)
    _save_json(record, paths["json"])  # last: a JSON file means the image is complete
    return record


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


def segment_files(
    inputs: Union[PathLike, Sequence[PathLike]],
    out_dir: PathLike = "out",
    model: PathLike = "shapes",
    task: Optional[str] = None,
    threshold: Optional[float] = None,
    batch_size: int = 1,
    device: str = "cpu",
    dtype: Optional[str] = None,
    label_ids_to_fuse: Optional[Iterable[int]] = None,
    overwrite: bool = False,
    progress: Optional[bool] = None,
    predictor: Optional[Predictor] = None,
    log: Optional[Callable[[str], None]] = None,
) -> SegmentReport:
    """See :func:`mask2former.predictor.segment`. ``log`` receives each message line (default:
    stderr, above the progress bar)."""
    start = time.perf_counter()
    out_dir = os.fspath(out_dir)
    report = SegmentReport()
    debug = bool(os.environ.get("MASK2FORMER_DEBUG"))
    bar = None

    def say(message: str) -> None:
        if log is not None:
            log(message)
        elif bar is not None:
            bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    def fail(message: str) -> None:
        report.failed += 1
        report.errors.append(message)
        say(message)

    # Everything that does not depend on an image is checked once, before any work.
    _check_options(task, threshold, batch_size)
    _prepare_out_dir(out_dir)
    files, errors = collect_inputs(inputs, exclude=out_dir)
    for message in errors:
        fail(message)
    if predictor is None:
        predictor = Predictor.from_pretrained(model, device=device, dtype=dtype)
    task = task or predictor.default_task
    names = output_names(files)
    paths = {
        f: {
            kind: os.path.join(out_dir, names[f] + suffix)
            for kind, suffix in (
                ("overlay", ".overlay.png"),
                ("ids", ".ids.png"),
                ("json", ".json"),
            )
        }
        for f in files
    }
    records: Dict[str, Dict[str, Any]] = {}  # instance task: per-image JSON, for the COCO files
    todo = []
    for f in files:
        for output in paths[f].values():  # left behind by a killed run
            remove_stale_temporaries(os.path.dirname(output), os.path.basename(output))
        if overwrite or not os.path.exists(paths[f]["json"]):
            # The JSON is written last: an image without it is incomplete and is redone.
            todo.append(f)
            continue
        report.skipped += 1
        say(f"{f}: skipped, {paths[f]['json']} exists (use --overwrite to replace)")
        if task == "instance":
            old = _read_record(paths[f]["json"])
            if old is not None and old.get("task") == "instance":
                records[f] = old

    if todo:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=len(todo), unit="img", disable=(None if progress is None else not progress)
        )
    window = max(8, 4 * max(1, int(batch_size)))  # images held in memory at once
    for start_index in range(0, len(todo), window):
        loaded: List[Tuple[str, np.ndarray]] = []
        for f in todo[start_index : start_index + window]:
            try:
                loaded.append((f, load_image(f)))
            except ImageError as e:
                fail(str(e))
                bar.update(1)
        if not loaded:
            continue
        try:
            results = predictor.predict(
                [a for _, a in loaded],
                task=task,
                threshold=threshold,
                label_ids_to_fuse=label_ids_to_fuse,
                batch_size=batch_size,
            )
        except Exception as e:  # the model failed on this window: report, go on with the next
            if debug:
                raise
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            for f, _ in loaded:
                fail(f"{f}: segmentation failed ({type(e).__name__}: {first})")
                bar.update(1)
            continue
        for (f, image), result in zip(loaded, results):
            try:
                record = _write_outputs(f, image, result, predictor, paths[f])
            except (OSError, ValueError) as e:
                if debug:
                    raise
                fail(f"{f}: cannot write outputs ({e})")
            else:
                report.done += 1
                report.outputs.append(paths[f]["json"])
                if task == "instance":
                    records[f] = record
            bar.update(1)
    if bar is not None:
        bar.close()

    if task == "instance" and records:
        _write_coco(out_dir, records, predictor.id2label)
    report.seconds = time.perf_counter() - start
    return report


def _check_options(task: Optional[str], threshold: Optional[float], batch_size: Any) -> None:
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if threshold is not None and not (
        isinstance(threshold, (int, float))
        and not isinstance(threshold, bool)
        and math.isfinite(threshold)
        and 0.0 <= threshold <= 1.0
    ):
        raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer of at least 1, got {batch_size!r}")


def _prepare_out_dir(out_dir: str) -> None:
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


def _read_record(path: str) -> Optional[Dict[str, Any]]:
    """A per-image JSON of an earlier run, or None."""
    record = _read_json(path)
    return record if isinstance(record, dict) else None


def _dicts(value: Any, key: str) -> List[Dict[str, Any]]:
    """The dicts of a list (those holding an integer ``key``); [] for anything else."""
    items = value if isinstance(value, list) else []
    return [x for x in items if isinstance(x, dict) and isinstance(x.get(key), int)]


def _write_coco(out_dir: str, records: Dict[str, Dict], id2label: Dict[int, str]) -> None:
    """``coco_results.json`` (detections) and ``images.json`` (a ground-truth-less COCO file
    with the same image ids, so ``COCO("images.json").loadRes("coco_results.json")`` works).

    Merged with what earlier runs into the same folder wrote: an image keeps its id, images of
    this run replace their old detections, and other images' detections are kept.
    """
    old = _read_record(os.path.join(out_dir, COCO_IMAGES)) or {}
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
