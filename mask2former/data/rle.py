"""COCO run-length encoding and polygon rasterisation, without pycocotools.

COCO masks are run-length encoded in column-major (Fortran) order: ``counts`` alternates runs of
0s and 1s, starting with 0s. JSON files store ``counts`` either as a list of ints ("uncompressed",
used for crowd annotations) or as the compressed LEB128-like string of the COCO API. Both
functions here follow the COCO API bit for bit so that files written by either tool read back
identically, and polygons rasterise to exactly the pixels ``pycocotools.mask.frPyObjects`` gives.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Union

import numpy as np

__all__ = [
    "encode_mask",
    "decode_rle",
    "rle_counts_to_string",
    "rle_string_to_counts",
    "polygons_to_mask",
    "mask_bbox",
]

RLE = Dict[str, Any]


def _runs(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> run lengths in column-major order, the first run counting 0s."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return np.zeros(0, dtype=np.int64)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds)
    if flat[0]:
        runs = np.concatenate([[0], runs])  # counts always start with a (possibly empty) 0-run
    return runs.astype(np.int64)


def rle_counts_to_string(counts: Sequence[int]) -> str:
    """Compress run lengths into the COCO API string form.

    From the fourth run on, each value is stored as the difference to the run two places back
    (runs of the same kind tend to be similar), in 5-bit groups with a continuation bit, offset
    by 48 to stay printable.
    """
    out: List[str] = []
    for i, c in enumerate(counts):
        x = int(c) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            ch = x & 0x1F
            x >>= 5  # arithmetic shift: negative values converge to -1
            more = x != -1 if ch & 0x10 else x != 0
            if more:
                ch |= 0x20
            out.append(chr(ch + 48))
    return "".join(out)


def rle_string_to_counts(s: Union[str, bytes]) -> List[int]:
    """Inverse of :func:`rle_counts_to_string`."""
    if isinstance(s, bytes):
        s = s.decode("ascii")
    counts: List[int] = []
    p = 0
    while p < len(s):
        x = 0
        k = 0
        more = True
        while more:
            if p >= len(s):
                raise ValueError("truncated compressed RLE string")
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)  # sign-extend
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def encode_mask(mask: np.ndarray, compressed: bool = True) -> RLE:
    """Encode one mask as COCO RLE.

    Args:
        mask: (H, W) bool or 0/1 array.
        compressed: string counts (like ``pycocotools.mask.encode``, but ``str`` not ``bytes`` so
            it JSON-serialises) or a list of ints.

    Returns:
        ``{"size": [H, W], "counts": str | list[int]}``.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected an (H, W) mask, got shape {mask.shape}")
    runs = _runs(mask)
    counts: Any = rle_counts_to_string(runs) if compressed else [int(r) for r in runs]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def decode_rle(rle: RLE) -> np.ndarray:
    """Decode COCO RLE (string or list counts).

    Returns:
        (H, W) bool mask.

    Raises:
        ValueError: malformed ``size``/``counts`` or run lengths that do not add up to H*W.
    """
    try:
        h, w = (int(v) for v in rle["size"])
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"RLE needs 'size' [h, w] and 'counts' ({e})") from e
    if isinstance(counts, (str, bytes)):
        counts = rle_string_to_counts(counts)
    runs = np.asarray(counts, dtype=np.int64)
    if runs.ndim != 1 or (runs.size and runs.min() < 0):
        raise ValueError("RLE counts must be a flat list of non-negative ints")
    if int(runs.sum()) != h * w:
        raise ValueError(f"RLE counts sum to {int(runs.sum())}, expected {h}*{w}={h * w}")
    values = np.arange(runs.size) % 2 == 1
    flat = np.repeat(values, runs)
    return flat.reshape(w, h).T.copy()


def _poly_boundary_runs(xy: np.ndarray, h: int, w: int) -> List[int]:
    """Rasterise one polygon the way the COCO API does; returns its column-major runs.

    The COCO API upsamples the outline 5x, walks every edge with a DDA, keeps the points where
    the outline crosses a pixel-centre column, and toggles inside/outside at each crossing. We
    reproduce it so that polygon annotations give the same pixels as in the COCO evaluation.
    """
    scale = 5.0
    # C's (int) cast truncates toward zero; np.trunc does the same.
    px = np.trunc(scale * xy[0::2] + 0.5).astype(np.int64)
    py = np.trunc(scale * xy[1::2] + 0.5).astype(np.int64)
    px = np.append(px, px[0])
    py = np.append(py, py[0])
    us: List[np.ndarray] = []
    vs: List[np.ndarray] = []
    for j in range(len(px) - 1):
        xs, xe, ys, ye = px[j], px[j + 1], py[j], py[j + 1]
        dx, dy = abs(xe - xs), abs(ys - ye)
        flip = (dx >= dy and xs > xe) or (dx < dy and ys > ye)
        if flip:
            xs, xe, ys, ye = xe, xs, ye, ys
        n = max(dx, dy)
        d = np.arange(n + 1)
        t = n - d if flip else d
        if dx >= dy:
            # A zero-length edge divides 0/0 in C; only the sign of the result matters later
            # (it is clamped to 0), so a large negative sentinel reproduces it.
            s = (ye - ys) / dx if dx else None
            u = t + xs
            v = np.trunc(ys + s * t + 0.5).astype(np.int64) if s is not None else t * 0 - 2**31
        else:
            s = (xe - xs) / dy
            v = t + ys
            u = np.trunc(xs + s * t + 0.5).astype(np.int64)
        us.append(u)
        vs.append(v)
    u = np.concatenate(us)
    v = np.concatenate(vs)
    # Column crossings: where the upsampled x changes, map back to a pixel column.
    j = np.flatnonzero(u[1:] != u[:-1]) + 1
    xd = np.where(u[j] < u[j - 1], u[j], u[j] - 1).astype(np.float64)
    xd = (xd + 0.5) / scale - 0.5
    keep = (np.floor(xd) == xd) & (xd >= 0) & (xd <= w - 1)
    yd = np.where(v[j] < v[j - 1], v[j], v[j - 1]).astype(np.float64)
    yd = (yd + 0.5) / scale - 0.5
    yd = np.ceil(np.clip(yd, 0, h))
    a = np.sort(np.concatenate([xd[keep] * h + yd[keep], [h * w]]).astype(np.int64))
    diffs = np.diff(a, prepend=0)
    # Two crossings at the same place cancel out: a zero difference merges with the next run.
    runs: List[int] = [int(diffs[0])]
    i = 1
    while i < len(diffs):
        if diffs[i] > 0:
            runs.append(int(diffs[i]))
            i += 1
        else:
            i += 1
            if i < len(diffs):
                runs[-1] += int(diffs[i])
                i += 1
    return runs


def polygons_to_mask(polygons: Sequence[Sequence[float]], h: int, w: int) -> np.ndarray:
    """Rasterise COCO polygons ``[[x0, y0, x1, y1, ...], ...]`` (their union).

    Returns:
        (H, W) bool mask, pixel-identical to ``pycocotools`` ``frPyObjects`` + ``merge``.

    Raises:
        ValueError: a polygon with fewer than 3 points or non-numeric coordinates.
    """
    mask = np.zeros((h, w), dtype=bool)
    for poly in polygons:
        try:
            xy = np.asarray(poly, dtype=np.float64).ravel()
        except (TypeError, ValueError) as e:
            raise ValueError(f"polygon coordinates must be numbers ({e})") from e
        if xy.size < 6 or xy.size % 2:
            raise ValueError(f"a polygon needs >= 3 (x, y) points, got {xy.size} numbers")
        if not np.isfinite(xy).all():
            raise ValueError("polygon coordinates must be finite")
        runs = np.asarray(_poly_boundary_runs(xy, h, w), dtype=np.int64)
        values = np.arange(runs.size) % 2 == 1
        mask |= np.repeat(values, runs).reshape(w, h).T
    return mask


def mask_bbox(mask: np.ndarray) -> List[int]:
    """(H, W) bool -> COCO box ``[x, y, width, height]`` of the set pixels ([0, 0, 0, 0] if none)."""
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
