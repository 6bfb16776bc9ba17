"""COCO formats in one place: RLE masks, polygons, boxes, panoptic id colours, category lists.

Masks are encoded, decoded and rasterised by ``pycocotools.mask`` (a core dependency), so every
RLE string and polygon pixel is the COCO API's own. This module adds what pycocotools leaves to
its callers: input checks that turn malformed annotations into a ``ValueError`` (pycocotools
would read uninitialised memory or overflow C integers), the ``str`` counts that JSON needs, and
the uncompressed list counts of crowd annotations, which pycocotools reads but never writes.

COCO RLE walks a mask in column-major (Fortran) order; ``counts`` alternates runs of 0s and 1s,
starting with a (possibly empty) run of 0s.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any, Dict, List, Sequence, Tuple, TypedDict, Union

import numpy as np

__all__ = [
    "RLE",
    "encode_masks",
    "encode_masks_json",
    "encode_mask",
    "decode_rle",
    "polygons_to_mask",
    "mask_bbox",
    "rgb_to_id",
    "id_to_rgb",
    "category_to_label",
    "label_categories",
]


class RLE(TypedDict):
    """A COCO RLE: ``size`` [H, W] and ``counts`` (compressed ``bytes``/``str`` or run lengths)."""

    size: List[int]
    counts: Union[bytes, str, List[int]]


# ----------------------------------------------------------------------------- encoding


def _pycocotools_mask() -> Any:
    # Imported on first use, so that importing the dataset and evaluation packages does not
    # load pycocotools (tests/test_evaluation.py checks this).
    from pycocotools import mask

    return mask


def _decode(rle: Any) -> np.ndarray:
    """``pycocotools.mask.decode``, without the DeprecationWarning it raises under numpy 2 on
    every call (its ``__array__`` lacks the ``copy`` keyword; not ours to fix, and harmless)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return _pycocotools_mask().decode(rle)


def _as_numpy(masks: Any) -> np.ndarray:
    # A torch tensor can only exist once torch is imported: checking sys.modules keeps this
    # module (and the dataset readers using it) free of the slow torch import.
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(masks, torch.Tensor):
        masks = masks.detach().cpu().numpy()
    return np.asarray(masks)


def encode_masks(masks: Any) -> List[RLE]:
    """One compressed RLE per mask of a stack, as ``pycocotools.mask.encode`` returns them.

    Args:
        masks: (N, H, W) bool or 0/1 numpy array or torch tensor; non-zero pixels are set.

    Returns:
        N dicts ``{"size": [H, W], "counts": bytes}`` (``encode_masks_json`` gives ``str``).
    """
    masks = _as_numpy(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (N, H, W), got shape {masks.shape}")
    if masks.shape[0] == 0:
        return []
    # pycocotools wants (H, W, N) uint8 in Fortran order: one transposed copy for all masks.
    # Via bool, since its encoder starts a new run at any change of value (2 after 1, ...).
    binary = np.asarray(masks, dtype=bool).view(np.uint8)
    rles = _pycocotools_mask().encode(np.asfortranarray(binary.transpose(1, 2, 0)))
    return [{"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"]} for r in rles]


def encode_masks_json(masks: Any) -> List[RLE]:
    """:func:`encode_masks` with ``str`` counts, ready for ``json.dump``."""
    return [{"size": r["size"], "counts": r["counts"].decode("ascii")} for r in encode_masks(masks)]


def _runs(mask: np.ndarray) -> List[int]:
    """(H, W) bool -> column-major run lengths, the first counting 0s (the uncompressed form)."""
    flat = mask.ravel(order="F")
    if flat.size == 0:
        return []
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate([[0], change, [flat.size]]))
    if flat[0]:
        runs = np.concatenate([[0], runs])  # counts always start with a (possibly empty) 0-run
    return [int(r) for r in runs]


def encode_mask(mask: Any, compressed: bool = True) -> RLE:
    """Encode one mask as COCO RLE.

    Args:
        mask: (H, W) bool or 0/1 array; non-zero pixels are set.
        compressed: ``str`` counts (pycocotools' string, JSON-ready) or the list of run lengths
            that COCO uses for crowd annotations (pycocotools has no writer for it).

    Returns:
        ``{"size": [H, W], "counts": str | list[int]}``.
    """
    mask = np.asarray(_as_numpy(mask), dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"expected an (H, W) mask, got shape {mask.shape}")
    if compressed:
        return encode_masks_json(mask[None])[0]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": _runs(mask)}


# ----------------------------------------------------------------------------- decoding


def _parts(rle: Any) -> Tuple[int, int, Any]:
    """``(h, w, counts)`` of an RLE dict; ValueError naming what is wrong."""
    try:
        h, w = (int(v) for v in rle["size"])
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"RLE needs 'size' [h, w] and 'counts' ({e})") from e
    if h < 0 or w < 0:
        raise ValueError(f"RLE size {[h, w]} is negative")
    return h, w, counts


def _compressed_from_list(counts: Any, h: int, w: int) -> Dict[str, Any]:
    """Uncompressed counts -> pycocotools' compressed RLE, after the checks it does not make."""
    try:
        runs = np.asarray(counts, dtype=np.int64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"RLE counts must be ints ({e})") from e
    if runs.ndim != 1 or (runs.size and runs.min() < 0):
        raise ValueError("RLE counts must be a flat list of non-negative ints")
    if int(runs.sum()) != h * w:
        raise ValueError(f"RLE counts sum to {int(runs.sum())}, expected {h}*{w}={h * w}")
    return _pycocotools_mask().frPyObjects({"size": [h, w], "counts": runs.tolist()}, h, w)


def _checked_string(counts: Union[str, bytes]) -> bytes:
    """The compressed counts as bytes, refused unless every character is a 6-bit digit (48..111)
    and the last one ends its value (no continuation bit 0x20, i.e. below 48 + 32): pycocotools'
    C parser would otherwise read past the end of the string."""
    try:
        data = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
    except UnicodeEncodeError as e:
        raise ValueError(f"malformed compressed RLE counts string ({e})") from e
    codes = np.frombuffer(data, dtype=np.uint8)
    if codes.size and (codes.min() < 48 or codes.max() > 111 or codes[-1] >= 48 + 0x20):
        raise ValueError("malformed compressed RLE counts string")
    return data


def _decode_string(counts: Union[str, bytes], h: int, w: int) -> np.ndarray:
    """Compressed counts -> (H, W) uint8 mask, refused unless the runs cover exactly H*W pixels.

    pycocotools (>= 2.0.5) refuses runs past the mask's end but leaves the pixels that short
    runs do not reach uninitialised; decoding once more for H*W - 1 pixels, which must fail,
    tells a short string apart without parsing it ourselves.
    """
    data = _checked_string(counts)
    error = ValueError(f"RLE counts do not sum to {h}*{w}={h * w}")
    try:
        mask = _decode({"size": [h, w], "counts": data})
    except ValueError:
        raise error from None
    if h * w:
        try:
            _decode({"size": [1, h * w - 1], "counts": data})
        except ValueError:
            return mask
        raise error
    return mask


def decode_rle(rle: Dict[str, Any]) -> np.ndarray:
    """Decode a COCO RLE whose ``counts`` are a compressed ``str``/``bytes`` or a list of runs.

    Returns:
        (H, W) bool mask (C order).

    Raises:
        ValueError: malformed ``size``/``counts`` or run lengths that do not add up to H*W.
    """
    h, w, counts = _parts(rle)
    if isinstance(counts, (str, bytes)):
        mask = _decode_string(counts, h, w)
    else:
        mask = _decode(_compressed_from_list(counts, h, w))
    return np.ascontiguousarray(mask, dtype=bool)


# ----------------------------------------------------------------------------- polygons, boxes

# pycocotools scales coordinates by 5 into C ints: larger ones overflow (undefined behaviour).
_MAX_COORDINATE = (2**31 - 1) / 5 - 1


def _polygon(poly: Any) -> List[float]:
    try:
        xy = np.asarray(poly, dtype=np.float64).ravel()
    except (TypeError, ValueError) as e:
        raise ValueError(f"polygon coordinates must be numbers ({e})") from e
    if xy.size < 6 or xy.size % 2:
        raise ValueError(f"a polygon needs >= 3 (x, y) points, got {xy.size} numbers")
    if not np.isfinite(xy).all():
        raise ValueError("polygon coordinates must be finite")
    if np.abs(xy).max() > _MAX_COORDINATE:
        raise ValueError(f"polygon coordinates must lie within +-{_MAX_COORDINATE:.0f}")
    return xy.tolist()


def polygons_to_mask(polygons: Sequence[Any], h: int, w: int) -> np.ndarray:
    """Rasterise COCO polygons ``[[x0, y0, x1, y1, ...], ...]`` (their union), as pycocotools'
    ``frPyObjects`` + ``merge`` do.

    Returns:
        (H, W) bool mask.

    Raises:
        ValueError: a polygon with fewer than 3 points or non-numeric coordinates.
    """
    # Checked first: frPyObjects would take a 4-number polygon for a box and crash on others.
    polys = [_polygon(p) for p in polygons]
    if not polys or h * w == 0:  # pycocotools gives an invalid RLE for an empty image
        return np.zeros((h, w), dtype=bool)
    api = _pycocotools_mask()
    merged = api.merge(api.frPyObjects(polys, h, w))
    return np.ascontiguousarray(_decode(merged), dtype=bool)


def mask_bbox(mask: np.ndarray) -> List[int]:
    """(H, W) bool -> COCO box ``[x, y, width, height]`` of the set pixels ([0, 0, 0, 0] if none).

    Two reductions of the dense mask; ``pycocotools.mask.toBbox`` would first need its RLE.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return [0, 0, 0, 0]
    return [
        int(cols[0]),
        int(rows[0]),
        int(cols[-1] - cols[0] + 1),
        int(rows[-1] - rows[0] + 1),
    ]


# ----------------------------------------------------------------------------- panoptic PNG ids


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 COCO panoptic colours -> (H, W) int64 ids ``R + 256 G + 256^2 B``."""
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """(H, W) integer ids (< 256^3) -> (H, W, 3) uint8 COCO panoptic colours."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= 256**3):
        raise ValueError("panoptic ids must lie in [0, 256^3)")
    return np.stack([ids % 256, (ids // 256) % 256, ids // 65536], axis=-1).astype(np.uint8)


# ----------------------------------------------------------------------------- categories


def category_to_label(categories: Sequence[Dict[str, Any]]) -> Dict[int, int]:
    """COCO category id -> contiguous label, in order of increasing id."""
    ids = sorted(int(c["id"]) for c in categories)
    return {cid: i for i, cid in enumerate(ids)}


def label_categories(categories: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The categories with ``id`` replaced by the contiguous label (and the COCO id kept as
    ``category_id``): what the evaluators need for samples and model outputs, which speak in
    labels. ``PanopticQualityEvaluator(label_categories(dataset.categories))``."""
    to_label = category_to_label(categories)
    out = [dict(c, id=to_label[int(c["id"])], category_id=int(c["id"])) for c in categories]
    return sorted(out, key=lambda c: c["id"])
