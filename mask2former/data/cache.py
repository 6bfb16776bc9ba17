"""An in-memory cache of decoded samples, for training runs that read each sample many times.

Generating a shapes image or decoding a COCO sample costs tens of milliseconds, which on a small
model and a few CPU cores is a large share of a training step (a shapes-resnet step spends about
a sixth of its time rendering its 8 images, the backbone pretraining well over a third). With
the cache, each sample is produced once and later reads are copies from memory. Masks are kept
bit-packed (8 per byte) and integer maps in the smallest dtype that holds them, so a 256x256
shapes sample takes about 0.35 MB.
"""

from __future__ import annotations

from typing import Any, Dict, Sequence

import numpy as np

__all__ = ["CachedDataset"]

_PACKED = "__packed_masks__"


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

    Reads return fresh arrays equal to the wrapped dataset's sample (same keys, values, dtypes
    and shapes), so callers may modify them. Attributes other than indexing and ``len`` (for
    example ``categories`` and ``label_names``) are the wrapped dataset's. Each process has its
    own cache: use it with in-process data loading (``--workers 0``), where a multi-epoch run
    produces every sample once.

    Args:
        dataset: any sequence of sample dicts (see :mod:`mask2former.data.sample`).
    """

    def __init__(self, dataset: Sequence[Dict[str, Any]]):
        self.dataset = dataset
        self._store: Dict[int, Dict[str, Any]] = {}
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
            stored = self._pack(self.dataset[index])
            self._store[index] = stored
            self.nbytes += sum(v.nbytes for v in _arrays(stored))
        return self._unpack(stored)

    @staticmethod
    def _pack(sample: Dict[str, Any]) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        for key, value in sample.items():
            if key == "masks":
                masks = np.asarray(value, dtype=bool)
                out[_PACKED] = (np.packbits(masks, axis=-1), masks.shape)
            elif isinstance(value, np.ndarray) and value.ndim == 2 and value.dtype.kind in "iu":
                out[key] = (_smallest_int(value), value.dtype)  # an id or class map
            else:
                out[key] = value
        return out

    @staticmethod
    def _unpack(stored: Dict[str, Any]) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        for key, value in stored.items():
            if key == _PACKED:
                packed, shape = value
                out["masks"] = np.unpackbits(packed, axis=-1, count=shape[-1]).astype(bool)
            elif isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], np.dtype):
                out[key] = value[0].astype(value[1])
            elif isinstance(value, np.ndarray):
                out[key] = value.copy()
            elif isinstance(value, list):
                out[key] = [dict(v) if isinstance(v, dict) else v for v in value]
            else:
                out[key] = value
        return out


def _arrays(stored: Dict[str, Any]):
    for value in stored.values():
        if isinstance(value, np.ndarray):
            yield value
        elif isinstance(value, tuple) and value and isinstance(value[0], np.ndarray):
            yield value[0]
