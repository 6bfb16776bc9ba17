"""Training augmentation: shapes, determinism, mask/image alignment, empty-mask dropping."""

import numpy as np
import pytest
from PIL import Image

from mask2former.data import LargeScaleJitter, ResizeShortestEdgeCrop, ShapesDataset
from mask2former.data.augment import _nearest_index


@pytest.fixture(scope="module")
def sample():
    return ShapesDataset(1, seed=0)[0]


def _same(a, b):
    return a.keys() == b.keys() and all(
        np.array_equal(a[k], b[k]) for k in a if k != "segments_info"
    )


def test_lsj_shapes_and_determinism(sample):
    t = LargeScaleJitter(crop_size=(96, 128))
    out = t(sample, np.random.default_rng(1))
    assert out["image"].shape == (96, 128, 3) and out["image"].dtype == np.uint8
    assert out["masks"].shape[1:] == (96, 128) and out["pixel_mask"].shape == (96, 128)
    n = len(out["masks"])
    for key in ("labels", "isthing", "iscrowd", "segment_ids"):
        assert len(out[key]) == n
    assert out["masks"].any(axis=(1, 2)).all()  # no empty masks
    assert not (out["masks"].any(axis=0) & ~out["pixel_mask"]).any()  # none on padding
    assert _same(out, t(sample, np.random.default_rng(1)))
    assert not _same(out, t(sample, np.random.default_rng(2)))
    assert sample["image"].shape == (256, 256, 3)  # input untouched


def test_lsj_identity_scale_and_flip(sample):
    # Scale exactly 1 with a crop the size of the image: only the flip changes anything.
    t = LargeScaleJitter(crop_size=256, min_scale=1.0, max_scale=1.0, flip_prob=1.0)
    out = t(sample, np.random.default_rng(0))
    assert np.array_equal(out["image"], sample["image"][:, ::-1])
    assert np.array_equal(out["masks"], sample["masks"][:, :, ::-1])
    assert out["pixel_mask"].all()


def test_lsj_downscale_pads_and_upscale_crops(sample):
    small = LargeScaleJitter(256, min_scale=0.25, max_scale=0.25, flip_prob=0.0, pad_value=7)
    out = small(sample, np.random.default_rng(0))
    assert out["pixel_mask"][:64, :64].all() and out["pixel_mask"].sum() == 64 * 64
    assert (out["image"][64:] == 7).all()
    # Masks follow the image: nearest-neighbour resize of the original masks, as PIL does it.
    for m_in, m_out in zip(sample["masks"], out["masks"]):
        ref = np.asarray(Image.fromarray(m_in).resize((64, 64), Image.NEAREST))
        assert np.array_equal(m_out[:64, :64], ref)
    big = LargeScaleJitter(256, min_scale=2.0, max_scale=2.0, flip_prob=0.0)
    out = big(sample, np.random.default_rng(0))
    assert out["pixel_mask"].all() and out["image"].shape == (256, 256, 3)


def test_lsj_drops_masks_left_empty():
    image = np.zeros((100, 100, 3), np.uint8)
    masks = np.zeros((2, 100, 100), bool)
    masks[0, :10, :10] = True  # top-left corner
    masks[1, 90:, 90:] = True  # bottom-right corner
    s = {"image": image, "masks": masks, "labels": np.array([3, 4]), "iscrowd": np.array([0, 1])}
    # Scale 1.5 -> 150x150 image, 100x100 crop: at most one corner survives each crop.
    t = LargeScaleJitter(100, min_scale=1.5, max_scale=1.5, flip_prob=0.0)
    kept = set()
    for seed in range(100):
        out = t(s, np.random.default_rng(seed))
        assert len(out["masks"]) == len(out["labels"]) == len(out["iscrowd"]) <= 1
        kept.update(out["labels"].tolist())
        if len(out["labels"]):
            assert out["iscrowd"][0] == (out["labels"][0] == 4)
    assert kept == {3, 4}


def test_semantic_resize_crop():
    rng = np.random.default_rng(0)
    sem = np.kron(rng.integers(0, 4, size=(6, 8)), np.ones((20, 20), np.int64))  # 120x160
    sem[:5] = 255
    labels = np.unique(sem[sem != 255])
    s = {
        "image": rng.integers(0, 255, size=(120, 160, 3), dtype=np.uint8),
        "masks": sem[None] == labels[:, None, None],
        "labels": labels,
        "semantic": sem,
    }
    t = ResizeShortestEdgeCrop(crop_size=64, short_edges=[64, 96, 128], cat_max_ratio=0.75)
    for seed in range(10):
        out = t(s, np.random.default_rng(seed))
        assert out["image"].shape == (64, 64, 3) and out["semantic"].shape == (64, 64)
        for m, label in zip(out["masks"], out["labels"]):
            assert np.array_equal(m, out["semantic"] == label)  # masks and map stay aligned
        assert set(out["labels"].tolist()) == set(np.unique(out["semantic"]).tolist()) - {255}
    assert _same(t(s, np.random.default_rng(3)), t(s, np.random.default_rng(3)))
    # Default short sides follow the original ADE20K recipe (320..1280 for a 512 crop).
    d = ResizeShortestEdgeCrop(512)
    assert d.short_edges[0] == 320 and d.short_edges[-1] == 1280 and d.max_size == 2560


def test_semantic_cat_max_ratio_avoids_single_class_crops():
    sem = np.zeros((200, 200), np.int64)
    sem[:, 180:] = 1  # class 0 dominates almost everywhere
    s = {
        "image": np.zeros((200, 200, 3), np.uint8),
        "masks": np.stack([sem == 0, sem == 1]),
        "labels": np.array([0, 1]),
        "semantic": sem,
    }
    plain = ResizeShortestEdgeCrop(40, short_edges=[200], flip_prob=0.0)
    constrained = ResizeShortestEdgeCrop(40, short_edges=[200], flip_prob=0.0, cat_max_ratio=0.9)
    n_plain = sum(len(plain(s, np.random.default_rng(i))["labels"]) > 1 for i in range(30))
    n_con = sum(len(constrained(s, np.random.default_rng(i))["labels"]) > 1 for i in range(30))
    assert n_con > n_plain


def test_nearest_index_matches_pil():
    # (Sizes without exact half-pixel ties, where PIL's float rounding may pick either side.)
    for src, dst in [(256, 64), (37, 100), (5, 5), (64, 256)]:
        line = np.arange(src, dtype=np.uint8)[None, :]
        ref = np.asarray(Image.fromarray(line).resize((dst, 1), Image.NEAREST))[0]
        assert np.array_equal(_nearest_index(src, dst), ref)


def test_panoptic_map_moves_with_masks(sample):
    t = LargeScaleJitter(crop_size=(100, 90), min_scale=0.5, max_scale=1.5)
    for seed in range(5):
        out = t(sample, np.random.default_rng(seed))
        assert "segments_info" not in out  # stale areas/boxes are removed
        assert out["panoptic"].shape == (100, 90)
        for m, sid in zip(out["masks"], out["segment_ids"]):
            assert np.array_equal(m, out["panoptic"] == sid)
        assert (out["panoptic"][~out["pixel_mask"]] == 0).all()
