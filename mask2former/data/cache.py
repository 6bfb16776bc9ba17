"""An in-memory cache of decoded samples, for training runs that read each sample many times.

Generating a shapes image or decoding a COCO sample costs tens of milliseconds, which on a small
model and a few CPU cores is a large share of a training step (a shapes-resnet step spends about
a sixth of its time rendering its 8 images, the backbone pretraining well over a third). With
the cache, each sample is produced once and later reads are copies from memory. Masks are kept
bit-packed (8 per byte) and integer maps in the smallest dtype that holds them, so a 256x256
shapes sample takes about 0.35 MB.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, Sequence, Tuple

import numpy as np

__all__ = ["CachedDataset"]

# A stored value: (kind, data, extra). "bits": masks packed along the last axis, extra = its
# length; "int": an id or class map downcast, extra = its dtype; "array": any other array;
# "object": anything else (lists of segment dicts, strings, numbers), deep-copied on reads.
_Entry = Tuple[str, Any, Any]


def _smallest_int(array: np.ndarray) -> np.ndarray:
    """The integer map in the smallest unsigned dtype holding its values (when non-negative)."""
    if array.size == 0 or array.min() < 0:
        return array
    top = int(array.max())
    for dtype in (np.uint8, np.uint16, np.uint32):
        if top <= np.iinfo(dtype).max:
            return array.astype(dtype)
    return array


class CachedDataset:
    """``dataset`` with every sample kept in memory after its first read.

    Reads return fresh values equal to the wrapped dataset's sample (same keys, values, dtypes
    and shapes), so callers may modify them. Attributes other than indexing and ``len`` (for
    example ``categories`` and ``label_names``) are the wrapped dataset's. Each process has its
    own cache: use it with in-process data loading (``--workers 0``), where a multi-epoch run
    produces every sample once.

    Args:
        dataset: any sequence of sample dicts (see :mod:`mask2former.data.sample`).
    """

    def __init__(self, dataset: Sequence[Dict[str, Any]]):
        self.dataset = dataset
        self._store: Dict[int, Dict[str, _Entry]] = {}
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:
        if name in ("dataset", "_store", "nbytes"):  # not set yet (e.g. while unpickling)
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        n = len(self.dataset)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} samples")
        index %= n
        stored = self._store.get(index)
        if stored is None:
            stored = {key: _pack(key, value) for key, value in self.dataset[index].items()}
            self._store[index] = stored
            self.nbytes += sum(d.nbytes for kind, d, _ in stored.values() if kind != "object")
        return {key: _unpack(entry) for key, entry in stored.items()}


def _pack(key: str, value: Any) -> _Entry:
    if key == "masks":
        masks = np.asarray(value, dtype=bool)
        return "bits", np.packbits(masks, axis=-1), masks.shape[-1]
    if isinstance(value, np.ndarray):
        if value.ndim == 2 and value.dtype.kind in "iu":
            return "int", _smallest_int(value), value.dtype
        return "array", value, None
    return "object", value, None


def _unpack(entry: _Entry) -> Any:
    kind, data, extra = entry
    if kind == "bits":
        return np.unpackbits(data, axis=-1, count=extra).astype(bool)
    if kind == "int":
        return data.astype(extra)
    if kind == "array":
        return data.copy()
    return copy.deepcopy(data)
