"""COCO RLE: our encoder writes pycocotools' strings, and instance post-processing gives one RLE
per segment, in segments_info order, decoding to exactly that segment's mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mask2former.data.rle import rle_string_to_counts
from mask2former.processing import postprocess as pp
from mask2former.processing import rle


def decode_rle_counts(encoded):
    return rle_string_to_counts(encoded["counts"])


from pycocotools import mask as coco_mask  # noqa: E402

# pycocotools' decode trips numpy 2's __array__ copy-keyword deprecation; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_own_encoder_equals_pycocotools():
    rng = np.random.default_rng(0)
    cases = [np.zeros((1, 1, 1)), np.ones((1, 3, 2)), np.ones((2, 7, 5)) * np.eye(7, 5)]
    for _ in range(60):
        h, w = rng.integers(1, 50, 2)
        cases.append(rng.random((3, h, w)) < rng.random())
    for masks in cases:
        masks = np.asarray(masks).astype(np.uint8)
        ours = rle.encode_masks(masks, use_pycocotools=False)
        theirs = coco_mask.encode(np.asfortranarray(masks.transpose(1, 2, 0)))
        assert [r["counts"] for r in ours] == [r["counts"] for r in theirs]
        for r, m in zip(ours, masks):
            assert r["size"] == list(m.shape)
            assert np.array_equal(coco_mask.decode(r), m)


def test_counts_are_column_major():
    mask = np.array([[1, 0], [1, 0], [0, 1]], dtype=np.uint8)  # column-major: 1 1 0 0 0 1
    assert decode_rle_counts(rle.encode_masks(mask[None], use_pycocotools=False)[0]) == [0, 2, 3, 1]
    assert rle.encode_masks(torch.zeros(0, 3, 2)) == []
    with pytest.raises(ValueError):
        rle.encode_masks(np.zeros((3, 2)))


@pytest.mark.parametrize("force_fallback", [False, True])
def test_instance_rles_decode_to_their_masks(monkeypatch, force_fallback):
    from tests.test_postprocess import trained_like

    if force_fallback:
        monkeypatch.setattr(rle, "_coco_mask", None)
    outputs = trained_like(batch=2, seed=8)
    targets = [(384, 384), (300, 451)]
    coco = pp.post_process_instance_segmentation(
        outputs, target_sizes=targets, return_coco_annotation=True
    )
    binary = pp.post_process_instance_segmentation(
        outputs, target_sizes=targets, return_binary_maps=True
    )
    for c, b in zip(coco, binary):
        assert c["segments_info"] == b["segments_info"] and len(c["segments_info"]) >= 3
        assert len(c["segmentation"]) == len(c["segments_info"])
        for r, mask in zip(c["segmentation"], b["segmentation"]):
            assert isinstance(r["counts"], bytes)
            assert np.array_equal(coco_mask.decode(r), mask.numpy().astype(np.uint8))
