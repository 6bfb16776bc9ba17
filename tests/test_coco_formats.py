"""mask2former.coco's own parts around pycocotools: malformed RLEs and polygons are refused with
a ValueError (never decoded from uninitialised memory), and the box, panoptic-colour and category
helpers."""

from __future__ import annotations

import numpy as np
import pytest

from mask2former import coco

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

MASK = np.zeros((4, 5), bool)
MASK[1:3, 1:4] = True


@pytest.mark.parametrize(
    "rle, match",
    [
        ({"size": [4, 5], "counts": "0"}, "do not sum to 4\\*5=20"),  # runs too short
        ({"size": [4, 5], "counts": ""}, "do not sum to"),
        ({"size": [4, 5], "counts": coco.encode_mask(MASK)["counts"] + "1"}, "do not sum to"),
        ({"size": [4, 5], "counts": "P"}, "malformed"),  # ends inside a value
        ({"size": [4, 5], "counts": "0\x7f"}, "malformed"),  # not a 6-bit digit
        ({"size": [4, 5], "counts": "0é"}, "malformed"),
        ({"size": [4, 5], "counts": [0, 25]}, "sum to 25"),
        ({"size": [4, 5], "counts": [-1, 21]}, "non-negative"),
        ({"size": [4, 5], "counts": [[1, 2]]}, "flat list"),
        ({"size": [-4, 5], "counts": []}, "negative"),
        ({"size": [4], "counts": []}, "needs 'size'"),
        ({"counts": "0"}, "needs 'size'"),
    ],
)
def test_malformed_rle_is_refused(rle, match):
    with pytest.raises(ValueError, match=match):
        coco.decode_rle(rle)


def test_rle_forms_decode_alike():
    compressed = coco.encode_mask(MASK)
    assert isinstance(compressed["counts"], str)
    as_bytes = dict(compressed, counts=compressed["counts"].encode())
    runs = coco.encode_mask(MASK, compressed=False)
    assert runs["counts"] == [5, 2, 2, 2, 2, 2, 5]
    # Non-canonical runs (an empty run inside) are valid COCO and decode to the same mask.
    padded = {"size": [4, 5], "counts": [5, 2, 0, 0, 2, 2, 2, 2, 5]}
    for rle in (compressed, as_bytes, runs, padded):
        out = coco.decode_rle(rle)
        assert out.dtype == bool and out.flags.c_contiguous and np.array_equal(out, MASK)
    assert coco.decode_rle({"size": [0, 5], "counts": ""}).shape == (0, 5)


@pytest.mark.parametrize(
    "polygons, match",
    [
        ([[1, 2, 3, 4]], "3 \\(x, y\\) points"),  # pycocotools would take it for a box
        ([[0, 0, 1, 1, 2, 2, 3]], "3 \\(x, y\\) points"),
        ([[0, 0, "a", 1, 2, 2]], "numbers"),
        ([[0, 0, np.inf, 1, 2, 2]], "finite"),
        ([[0, 0, 1e12, 1, 2, 2]], "within"),
    ],
)
def test_bad_polygons_are_refused(polygons, match):
    with pytest.raises(ValueError, match=match):
        coco.polygons_to_mask(polygons, 5, 5)


def test_polygon_edge_cases():
    assert not coco.polygons_to_mask([], 3, 4).any()
    assert coco.polygons_to_mask([[0, 0, 4, 0, 4, 4]], 5, 0).shape == (5, 0)
    square = coco.polygons_to_mask([[1, 1, 4, 1, 4, 3, 1, 3]], 5, 6)
    assert coco.mask_bbox(square) == [1, 1, 3, 2]


def test_mask_bbox_and_panoptic_colours():
    assert coco.mask_bbox(MASK) == [1, 1, 3, 2]
    assert coco.mask_bbox(np.zeros((3, 3), bool)) == [0, 0, 0, 0]
    ids = np.array([[0, 1, 256], [65536, 300, 256**3 - 1]])
    rgb = coco.id_to_rgb(ids)
    assert rgb.dtype == np.uint8 and rgb[1, 1].tolist() == [44, 1, 0]
    assert np.array_equal(coco.rgb_to_id(rgb), ids)
    with pytest.raises(ValueError, match="256"):
        coco.id_to_rgb(np.array([[256**3]]))


def test_category_maps():
    cats = [{"id": 7, "name": "b", "isthing": 0}, {"id": 3, "name": "a", "isthing": 1}]
    assert coco.category_to_label(cats) == {3: 0, 7: 1}
    assert coco.label_categories(cats) == [
        {"id": 0, "name": "a", "isthing": 1, "category_id": 3},
        {"id": 1, "name": "b", "isthing": 0, "category_id": 7},
    ]
