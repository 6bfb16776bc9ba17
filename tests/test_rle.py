"""COCO RLE: mask2former.coco's encoder gives pycocotools' own RLEs (it is built on it), and
instance post-processing gives one RLE per segment, in segments_info order, decoding to exactly
that segment's mask."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pycocotools import mask as coco_mask

from mask2former import coco
from mask2former.processing import postprocess as pp

# pycocotools' decode trips numpy 2's __array__ copy-keyword deprecation; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_encode_masks_equals_pycocotools():
    rng = np.random.default_rng(0)
    cases = [np.zeros((1, 1, 1)), np.ones((1, 3, 2)), np.ones((2, 7, 5)) * np.eye(7, 5)]
    for _ in range(60):
        h, w = rng.integers(1, 50, 2)
        cases.append(rng.random((3, h, w)) < rng.random())
    for masks in cases:
        masks = np.asarray(masks).astype(np.uint8)
        ours = coco.encode_masks(masks)
        theirs = coco_mask.encode(np.asfortranarray(masks.transpose(1, 2, 0)))
        assert [r["counts"] for r in ours] == [r["counts"] for r in theirs]
        assert ours == coco.encode_masks(torch.from_numpy(masks.astype(bool)))
        as_json = coco.encode_masks_json(masks)
        json.dumps(as_json)
        for r, j, m in zip(ours, as_json, masks):
            assert r["size"] == list(m.shape) and all(type(v) is int for v in r["size"])
            assert isinstance(r["counts"], bytes) and j["counts"] == r["counts"].decode()
            assert j["size"] == r["size"]
            assert np.array_equal(coco_mask.decode(r), m)
            assert coco.encode_mask(m) == j


def test_counts_are_column_major():
    mask = np.array([[1, 0], [1, 0], [0, 1]], dtype=np.uint8)  # column-major: 1 1 0 0 0 1
    assert coco.encode_mask(mask, compressed=False)["counts"] == [0, 2, 3, 1]
    # The compressed string is pycocotools' form of exactly these runs.
    runs = coco_mask.frPyObjects({"size": [3, 2], "counts": [0, 2, 3, 1]}, 3, 2)
    assert coco.encode_masks(mask[None])[0]["counts"] == runs["counts"]
    assert coco.encode_masks(torch.zeros(0, 3, 2)) == []
    with pytest.raises(ValueError):
        coco.encode_masks(np.zeros((3, 2)))


def test_instance_rles_decode_to_their_masks():
    from tests.test_postprocess import trained_like

    outputs = trained_like(batch=2, seed=8)
    targets = [(384, 384), (300, 451)]
    coco_out = pp.post_process_instance_segmentation(
        outputs, target_sizes=targets, return_coco_annotation=True
    )
    binary = pp.post_process_instance_segmentation(
        outputs, target_sizes=targets, return_binary_maps=True
    )
    for c, b in zip(coco_out, binary):
        assert c["segments_info"] == b["segments_info"] and len(c["segments_info"]) >= 3
        assert len(c["segmentation"]) == len(c["segments_info"])
        for r, mask in zip(c["segmentation"], b["segmentation"]):
            assert isinstance(r["counts"], bytes)
            assert np.array_equal(coco_mask.decode(r), mask.numpy().astype(np.uint8))
