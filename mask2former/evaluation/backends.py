"""Which COCOeval computes mask AP, and the checked RLE facts (area, box) that it is fed.

pycocotools' ``COCOeval`` is the reference, and it is slow: its per-image, per-category matching
is Python. hotcoco (Rust) reimplements the same algorithm, about 20 times faster in a third of the
memory on ``benchmarks/bench_eval.py``'s COCO-sized files, and returns the same AP, AP50, AP75,
APs, APm, APl and per-class AP to the last bit (``tests/test_saved_predictions.py`` checks it
wherever hotcoco is installed). "auto" takes hotcoco when installed (``pip install
"mask2former[fast-eval]"``), else pycocotools (a core dependency, so there is always one).
faster-coco-eval (C++, 2-3 times faster) and vernier were measured too: the summary numbers agree,
but faster-coco-eval's per-class AP can differ in the last bit, and neither is faster than
hotcoco, so they are not offered.

The six summary numbers are computed here from the tool's ``precision`` table, exactly as
pycocotools' ``summarize`` does, instead of calling ``summarize``: hotcoco prints its table from
Rust, past Python's ``sys.stdout``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
from dataclasses import dataclass
from typing import Any, Dict, List, Sequence

import numpy as np

__all__ = [
    "AP_BACKENDS",
    "APTables",
    "available_ap_backends",
    "choose_ap_backend",
    "run_cocoeval",
    "summary_metrics",
    "rle_facts",
]

# Fastest first: "auto" takes the first installed.
AP_BACKENDS = ("hotcoco", "pycocotools")
_MODULES = {"hotcoco": "hotcoco", "pycocotools": "pycocotools"}


@dataclass
class APTables:
    """What COCOeval's ``accumulate`` leaves: ``precision`` (IoU thresholds, 101 recall points,
    categories, area ranges all/small/medium/large, max detections), -1 where a category has no
    ground truth; ``cat_ids`` orders its category axis."""

    precision: np.ndarray
    cat_ids: List[int]
    backend: str


def available_ap_backends() -> List[str]:
    """The installed tools, fastest first."""
    return [b for b in AP_BACKENDS if importlib.util.find_spec(_MODULES[b]) is not None]


def choose_ap_backend(name: str = "auto") -> str:
    """``name`` checked ("auto": the fastest installed).

    Raises:
        ValueError: an unknown name.
        ImportError: a named tool that is not installed.
    """
    if name == "auto":
        return available_ap_backends()[0]
    if name not in AP_BACKENDS:
        raise ValueError(f"unknown AP backend {name!r}; choose from auto, {', '.join(AP_BACKENDS)}")
    if importlib.util.find_spec(_MODULES[name]) is None:
        raise ImportError(f"AP backend {name!r} is not installed (pip install {name})")
    return name


def _evaluator(backend: str, dataset_gt: Dict[str, Any], dataset_dt: Dict[str, Any]) -> Any:
    if backend == "hotcoco":
        import hotcoco

        return hotcoco.COCOeval(hotcoco.COCO(dataset_gt), hotcoco.COCO(dataset_dt), "segm")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def make_reference(data: Dict[str, Any]) -> Any:
        coco = COCO()
        coco.dataset = data
        coco.createIndex()
        return coco

    return COCOeval(make_reference(dataset_gt), make_reference(dataset_dt), iouType="segm")


def run_cocoeval(
    images: List[Dict[str, Any]],
    gts: List[Dict[str, Any]],
    dts: List[Dict[str, Any]],
    categories: List[Dict[str, Any]],
    max_dets: int,
    backend: str = "auto",
) -> APTables:
    """COCO "segm" evaluation of annotation dicts (ids from 1; ``area`` and ``bbox`` given).

    Raises:
        ValueError / ImportError: as :func:`choose_ap_backend`.
    """
    backend = choose_ap_backend(backend)
    gt = {"images": images, "annotations": gts, "categories": categories}
    dt = {"images": images, "annotations": dts, "categories": categories}
    # pycocotools prints progress through Python; nothing of it is wanted.
    with contextlib.redirect_stdout(io.StringIO()):
        ev = _evaluator(backend, gt, dt)
        ev.params.maxDets = [1, 10, int(max_dets)]
        ev.evaluate()
        ev.accumulate()
    precision = np.asarray(ev.eval["precision"], dtype=np.float64)
    return APTables(
        precision=precision, cat_ids=[int(c) for c in ev.params.catIds], backend=backend
    )


def _mean_present(values: np.ndarray) -> float:
    values = values[values > -1]
    return float(np.mean(values)) if values.size else -1.0


def summary_metrics(tables: APTables) -> List[float]:
    """AP, AP50, AP75, APs, APm, APl (fractions; -1 when undefined) as pycocotools'
    ``summarize`` computes them: means over the present entries of the precision table at the
    largest detection count."""
    p = tables.precision
    # IoU thresholds 0.50:0.05:0.95: index 0 is 0.50, index 5 is 0.75.
    return [
        _mean_present(p[:, :, :, 0, -1]),
        _mean_present(p[0, :, :, 0, -1]),
        _mean_present(p[5, :, :, 0, -1]),
        _mean_present(p[:, :, :, 1, -1]),
        _mean_present(p[:, :, :, 2, -1]),
        _mean_present(p[:, :, :, 3, -1]),
    ]


# ----------------------------------------------------------------------------- RLE checks


def _counts_bytes(rle: Any, hw: List[int], what: str) -> bytes:
    """The counts of one compressed RLE of size ``hw``, as bytes (their characters are checked
    for all strings at once in :func:`_run_lengths`)."""
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ValueError(f"{what}: segmentation must be an RLE with 'size' and 'counts'")
    size = rle["size"]
    if size != hw:  # the fast path; the loop below gives ints from other forms (tuples, arrays)
        try:
            size = [int(v) for v in size]
        except (TypeError, ValueError):
            pass
        if size != hw:
            raise ValueError(f"{what}: RLE size {rle['size']} != image size {hw}")
    counts = rle["counts"]
    if isinstance(counts, str):
        counts = counts.encode("ascii", errors="replace")  # "?" is refused below
    if not isinstance(counts, bytes):
        raise ValueError(f"{what}: segmentation must be a compressed RLE (str counts)")
    return counts


def _run_lengths(strings: Sequence[bytes]) -> tuple:
    """The run lengths of compressed counts strings, all at once (COCO's format: 5 bits a
    character with a continuation bit 0x20, the last character's bit 0x10 a sign, and from the
    fourth value on a difference to the value two before). Every string ends a value (checked by
    :func:`_counts_bytes`), so no value spans two strings.

    Returns:
        ((V,) int64 runs, (V,) index of the string of each run).
    """
    lengths = np.array([len(s) for s in strings], dtype=np.int64)
    raw = np.frombuffer(b"".join(strings), dtype=np.uint8)
    if raw.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    # 6-bit digits 48..111, and each string's last character must end its value (no
    # continuation bit 0x20), or pycocotools' parser reads past the string.
    tails = np.cumsum(lengths)[lengths > 0] - 1
    bad = (raw < 48) | (raw > 111)
    bad[tails] |= raw[tails] >= 48 + 0x20
    if bad.any():
        string = int(np.searchsorted(np.cumsum(lengths), np.flatnonzero(bad)[0], side="right"))
        raise ValueError(f"#{string}: malformed compressed RLE counts string")
    codes = raw.astype(np.int64) - 48
    last = (codes & 0x20) == 0  # the character that ends a value
    first = np.concatenate([[True], last[:-1]])
    starts = np.flatnonzero(first)
    value_of = np.cumsum(first) - 1
    position = np.arange(codes.size) - starts[value_of]
    if position.max() > 11:  # 60 bits: no run of a real mask is that long
        raise ValueError("RLE counts hold a value too large for a mask")
    values = np.add.reduceat((codes & 0x1F) << (5 * position), starts)
    ends = np.flatnonzero(last)
    negative = (codes[ends] & 0x10) != 0
    values -= np.where(negative, np.int64(1) << (5 * (position[ends] + 1)), 0)
    # The string and the index within it of each value.
    string_of = np.repeat(np.arange(lengths.size), lengths)[ends]
    first_value = np.searchsorted(string_of, np.arange(lengths.size))
    k = np.arange(values.size) - first_value[string_of]
    # cnts[k] = x[k] + cnts[k - 2] for k > 2: running sums within each string over k = 1, 3, 5,
    # ... and over k = 2, 4, ...; k = 0 stands alone.
    counts = values.copy()
    for chain in ((k % 2 == 1), (k >= 2) & (k % 2 == 0)):
        counts[chain] = _running_sums(values[chain], string_of[chain])
    return counts, string_of


def _running_sums(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Cumulative sums of ``values`` restarting where ``groups`` (sorted) changes."""
    if values.size == 0:
        return values
    sums = np.cumsum(values)
    start = np.flatnonzero(np.concatenate([[True], groups[1:] != groups[:-1]]))
    offset = sums[start] - values[start]
    return sums - np.repeat(offset, np.diff(np.append(start, values.size)))


def rle_facts(rles: Sequence[Dict[str, Any]], hw: Sequence[int], what: str) -> tuple:
    """Check compressed RLEs of one image and give their pycocotools form with areas and boxes.

    Every ``size`` must be ``hw`` and every ``counts`` string well formed, with non-negative runs
    that cover exactly H*W pixels (pycocotools would silently score a short one).

    Returns:
        (RLE dicts with ``bytes`` counts, (N,) float areas, (N, 4) float COCO boxes).

    Raises:
        ValueError: naming ``what`` and the index of the first bad RLE.
    """
    from pycocotools import mask as mask_api

    h, w = int(hw[0]), int(hw[1])
    strings = [_counts_bytes(rle, [h, w], f"{what}[{k}]") for k, rle in enumerate(rles)]
    out = [{"size": [h, w], "counts": c} for c in strings]
    if not out:
        return out, np.zeros(0), np.zeros((0, 4))
    try:
        runs, string_of = _run_lengths(strings)
    except ValueError as e:
        raise ValueError(f"{what}{e}") from None
    totals = np.bincount(string_of, weights=runs, minlength=len(strings))
    lowest = np.full(len(strings), 0, np.int64)
    np.minimum.at(lowest, string_of, runs)
    bad = np.flatnonzero((totals != h * w) | (lowest < 0))
    if bad.size:
        raise ValueError(f"{what}[{bad[0]}]: RLE runs do not cover {h}x{w} pixels")
    return out, mask_api.area(out).astype(np.float64), mask_api.toBbox(out)
