"""CachedDataset: reads equal the wrapped dataset's samples, each sample is produced once, and
what callers do to a returned sample does not reach the cache."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from mask2former.data import ShapesConfig, ShapesDataset
from mask2former.data.augment import LargeScaleJitter
from mask2former.data.cache import CachedDataset
from mask2former.training.data import TrainSamples


class _Counting:
    def __init__(self, dataset):
        self.dataset = dataset
        self.reads = []
        self.categories = dataset.categories

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        self.reads.append(index)
        return self.dataset[index]


def _assert_same_sample(a, b):
    assert set(a) == set(b)
    for key in a:
        if isinstance(a[key], np.ndarray):
            assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        else:
            assert a[key] == b[key], key


def test_reads_equal_the_dataset_and_each_sample_is_produced_once():
    plain = ShapesDataset(4, seed=3, config=ShapesConfig(height=64, width=72))
    counting = _Counting(plain)
    cached = CachedDataset(counting)
    assert len(cached) == 4 and cached.categories is plain.categories
    for _ in range(2):
        for i in (0, 3, 1, -1):
            _assert_same_sample(cached[i], plain[i])
    assert sorted(counting.reads) == [0, 1, 3]  # -1 is sample 3
    # Masks are stored bit-packed (72 columns: 9 bytes a row) and the id map in one byte.
    produced = sum(v.nbytes for v in plain[0].values() if isinstance(v, np.ndarray))
    assert 0 < cached.nbytes < 3 * produced / 2  # three samples cached, each smaller
    with pytest.raises(IndexError):
        cached[4]


def test_callers_cannot_change_the_cache():
    cached = CachedDataset(ShapesDataset(1, seed=5, config=ShapesConfig(height=32, width=32)))
    first = cached[0]
    expected = copy.deepcopy(first)
    first["image"][:] = 0
    first["masks"][:] = True
    first["panoptic"][:] = 99
    first["segments_info"][0]["area"] = -1
    first["segments_info"][0]["bbox"][0] = -5  # nested values too
    _assert_same_sample(cached[0], expected)


def test_training_batches_are_the_same_with_the_cache():
    dataset = ShapesDataset(3, seed=1, config=ShapesConfig(height=64, width=64))
    jitter = LargeScaleJitter(64, 0.5, 1.5)
    plain = TrainSamples(dataset, jitter, seed=2)
    cached = TrainSamples(CachedDataset(dataset), jitter, seed=2)
    for key in [(0, 0), (0, 2), (1, 0), (1, 2)]:
        a, b = plain[key], cached[key]
        for name in a:
            assert a[name].equal(b[name]), (key, name)
