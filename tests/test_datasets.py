"""Dataset readers: each format (polygons, RLE, crowd) and each kind of broken input."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from mask2former.coco import id_to_rgb
from mask2former.data import (
    CocoInstancesDataset,
    CocoPanopticDataset,
    DatasetError,
    SemanticSegmentationDataset,
    encode_mask,
)

H, W = 20, 30


def _image(seed=0):
    return np.random.default_rng(seed).integers(0, 255, size=(H, W, 3), dtype=np.uint8)


def _write_json(path, data):
    path.write_text(json.dumps(data))
    return path


# ----------------------------------------------------------------------------- instances


@pytest.fixture
def instances(tmp_path):
    (tmp_path / "img").mkdir()
    Image.fromarray(_image(0)).save(tmp_path / "img" / "a.png")
    Image.fromarray(_image(1)).save(tmp_path / "img" / "b.png")
    rle_mask = np.zeros((H, W), bool)
    rle_mask[2:9, 20:27] = True
    rle_mask[4, 22] = False
    crowd_mask = np.zeros((H, W), bool)
    crowd_mask[14:, :] = True
    data = {
        "images": [
            {"id": 10, "file_name": "a.png", "height": H, "width": W},
            {"id": 11, "file_name": "b.png", "height": H, "width": W},
        ],
        "annotations": [
            {
                "id": 1,
                "image_id": 10,
                "category_id": 3,
                "iscrowd": 0,
                "segmentation": [[5, 5, 15, 5, 15, 12, 5, 12], [1, 1, 3, 1, 2, 3]],
            },
            {
                "id": 2,
                "image_id": 10,
                "category_id": 7,
                "iscrowd": 0,
                "segmentation": encode_mask(rle_mask),
            },
            {
                "id": 3,
                "image_id": 10,
                "category_id": 3,
                "iscrowd": 1,
                "segmentation": encode_mask(crowd_mask, compressed=False),
            },
        ],
        "categories": [{"id": 7, "name": "b"}, {"id": 3, "name": "a"}],
    }
    _write_json(tmp_path / "inst.json", data)
    return tmp_path, data, rle_mask, crowd_mask


def test_instances_polygons_rle_and_crowd(instances):
    root, data, rle_mask, crowd_mask = instances
    ds = CocoInstancesDataset(root / "img", root / "inst.json")
    assert len(ds) == 2 and ds.label_names == ["a", "b"]  # sorted by category id
    s = ds[0]
    assert np.array_equal(s["image"], _image(0)) and s["file_name"] == "a.png"
    assert s["masks"].shape == (3, H, W) and s["masks"].dtype == bool
    assert s["labels"].tolist() == [0, 1, 0] and s["labels"].dtype == np.int64
    assert s["iscrowd"].tolist() == [False, False, True]
    assert s["annotation_ids"].tolist() == [1, 2, 3]
    assert np.array_equal(s["masks"][1], rle_mask)
    assert np.array_equal(s["masks"][2], crowd_mask)
    # The polygon square 5..15 x 5..12 plus a small triangle.
    assert s["masks"][0][6:12, 6:15].all() and not s["masks"][0][15:, :].any()
    from pycocotools import mask as coco_mask

    rles = coco_mask.frPyObjects(data["annotations"][0]["segmentation"], H, W)
    assert np.array_equal(s["masks"][0], coco_mask.decode(coco_mask.merge(rles)).astype(bool))
    empty = ds[1]
    assert empty["masks"].shape == (0, H, W) and empty["labels"].shape == (0,)
    no_crowd = CocoInstancesDataset(root / "img", root / "inst.json", include_crowd=False)
    assert no_crowd[0]["iscrowd"].tolist() == [False, False]


def _broken_instances(root, data, mutate):
    data = json.loads(json.dumps(data))
    mutate(data)
    return _write_json(root / "broken.json", data)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d.pop("annotations"), "missing key"),
        (lambda d: d["annotations"][0].pop("segmentation"), "missing key"),
        (lambda d: d["annotations"][1].update(category_id=99), "category_id 99"),
        (lambda d: d["annotations"][1].update(image_id=99), "image_id 99"),
    ],
)
def test_instances_bad_json_at_construction(instances, mutate, match):
    root, data, _, _ = instances
    path = _broken_instances(root, data, mutate)
    with pytest.raises(DatasetError, match=match) as e:
        CocoInstancesDataset(root / "img", path)
    assert "broken.json" in str(e.value)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d["annotations"][1]["segmentation"].update(size=[5, 5]), "RLE size"),
        (lambda d: d["annotations"][0].update(segmentation=[[1, 2, 3]]), "3 \\(x, y\\) points"),
        (lambda d: d["annotations"][2]["segmentation"]["counts"].append(4), "sum to"),
        (lambda d: d["annotations"][0].update(segmentation=7), "polygons or RLE"),
        (lambda d: d["images"][0].update(height=H + 1), "says"),
    ],
)
def test_instances_bad_annotation_on_read(instances, mutate, match):
    root, data, _, _ = instances
    ds = CocoInstancesDataset(root / "img", _broken_instances(root, data, mutate))
    with pytest.raises(DatasetError, match=match) as e:
        ds[0]
    assert "broken.json" in str(e.value) or "a.png" in str(e.value)
    ds[1]  # the other image is fine


def test_instances_missing_and_unreadable_image(instances):
    root, _, _, _ = instances
    ds = CocoInstancesDataset(root / "img", root / "inst.json")
    (root / "img" / "a.png").unlink()
    with pytest.raises(DatasetError, match="a.png: file not found"):
        ds[0]
    (root / "img" / "b.png").write_bytes(b"not a png at all")
    with pytest.raises(DatasetError, match="b.png: cannot read image"):
        ds[1]


def test_missing_and_malformed_json(tmp_path):
    with pytest.raises(DatasetError, match="nope.json: file not found"):
        CocoInstancesDataset(tmp_path, tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DatasetError, match="bad.json: cannot parse JSON"):
        CocoPanopticDataset(tmp_path, tmp_path, tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(DatasetError, match="list.json"):
        CocoPanopticDataset(tmp_path, tmp_path, tmp_path / "list.json")
    assert issubclass(DatasetError, ValueError)


# ----------------------------------------------------------------------------- panoptic


@pytest.fixture
def panoptic(tmp_path):
    for d in ("img", "pan"):
        (tmp_path / d).mkdir()
    ids = np.zeros((H, W), np.int64)  # 0 = void
    ids[:10] = 300  # stuff (id > 255 exercises the G channel)
    ids[10:, :15] = 7  # thing
    ids[10:, 15:25] = 65536 * 2 + 5  # crowd thing (B channel)
    Image.fromarray(_image(0)).save(tmp_path / "img" / "x.jpg", quality=95)
    Image.fromarray(id_to_rgb(ids)).save(tmp_path / "pan" / "x.png")
    data = {
        "images": [{"id": 1, "file_name": "x.jpg", "height": H, "width": W}],
        "annotations": [
            {
                "image_id": 1,
                "file_name": "x.png",
                "segments_info": [
                    {"id": 300, "category_id": 9, "iscrowd": 0},
                    {"id": 7, "category_id": 5, "iscrowd": 0},
                    {"id": 65536 * 2 + 5, "category_id": 5, "iscrowd": 1},
                ],
            },
        ],
        "categories": [
            {"id": 9, "name": "sky", "isthing": 0},
            {"id": 5, "name": "ball", "isthing": 1},
        ],
    }
    _write_json(tmp_path / "pan.json", data)
    return tmp_path, data, ids


def test_panoptic_reader(panoptic):
    root, _, ids = panoptic
    ds = CocoPanopticDataset(root / "img", root / "pan", root / "pan.json")
    assert len(ds) == 1 and ds.label_names == ["ball", "sky"]
    s = ds[0]
    assert s["image"].shape == (H, W, 3) and s["file_name"] == "x.jpg"
    assert s["segment_ids"].tolist() == [300, 7, 65536 * 2 + 5]
    assert s["labels"].tolist() == [1, 0, 0]
    assert s["isthing"].tolist() == [False, True, True]
    assert s["iscrowd"].tolist() == [False, False, True]
    for m, sid in zip(s["masks"], s["segment_ids"]):
        assert np.array_equal(m, ids == sid)
    assert not s["masks"].any(axis=0)[10:, 25:].any()  # void stays unlabelled
    ds.validate()


def _mutated_panoptic(root, data, mutate):
    data = json.loads(json.dumps(data))
    mutate(data)
    return CocoPanopticDataset(root / "img", root / "pan", _write_json(root / "broken.json", data))


def test_panoptic_bad_json(panoptic):
    root, data, _ = panoptic
    cases = [
        (lambda d: d.pop("categories"), "missing key"),
        (lambda d: d["annotations"][0].pop("segments_info"), "missing key"),
        (lambda d: d["annotations"][0]["segments_info"][0].pop("category_id"), "missing key"),
        (lambda d: d["annotations"][0]["segments_info"][1].update(category_id=4), "category_id 4"),
        (lambda d: d["annotations"][0]["segments_info"][1].update(id=300), "duplicate"),
        (lambda d: d["annotations"][0].update(image_id=2), "image_id 2"),
    ]
    for mutate, match in cases:
        with pytest.raises(DatasetError, match=match) as e:
            _mutated_panoptic(root, data, mutate)
        assert "broken.json" in str(e.value)


def test_panoptic_bad_files(panoptic):
    root, data, ids = panoptic
    # A segment declared in the JSON but absent from the PNG.
    ds = _mutated_panoptic(
        root,
        data,
        lambda d: d["annotations"][0]["segments_info"].append({"id": 8, "category_id": 5}),
    )
    with pytest.raises(DatasetError, match=r"x.png: segment id\(s\) \[8\].*not present in PNG"):
        ds[0]
    # An id in the PNG that the JSON does not declare.
    ds = _mutated_panoptic(root, data, lambda d: d["annotations"][0]["segments_info"].pop(1))
    with pytest.raises(DatasetError, match=r"x.png: PNG has segment id\(s\) \[7\]"):
        ds[0]
    ds = CocoPanopticDataset(root / "img", root / "pan", root / "pan.json")
    # PNG size != image size.
    Image.fromarray(id_to_rgb(ids[:, :20])).save(root / "pan" / "x.png")
    with pytest.raises(DatasetError, match="x.png: PNG size 20x20 != image size 30x20"):
        ds[0]
    # A single-channel PNG where an RGB panoptic PNG is expected.
    Image.fromarray(np.zeros((H, W), np.uint8)).save(root / "pan" / "x.png")
    with pytest.raises(DatasetError, match="x.png: expected an RGB panoptic PNG"):
        ds[0]
    (root / "pan" / "x.png").unlink()
    with pytest.raises(DatasetError, match="x.png: file not found"):
        ds[0]
    shutil.rmtree(root / "img")
    with pytest.raises(DatasetError, match="x.jpg: file not found"):
        ds[0]


# ----------------------------------------------------------------------------- semantic


@pytest.fixture
def semantic(tmp_path):
    for d in ("images", "labels"):
        (tmp_path / d).mkdir()
    label = np.zeros((H, W), np.uint8)  # 0 = "other" in ADE20K
    label[:, 10:20] = 1
    label[:, 20:] = 4
    Image.fromarray(_image(0)).save(tmp_path / "images" / "p1.jpg")
    Image.fromarray(label).save(tmp_path / "labels" / "p1.png")
    Image.fromarray(_image(1)).save(tmp_path / "images" / "p0.png")
    Image.fromarray(np.full((H, W), 2, np.uint8)).save(tmp_path / "labels" / "p0.png")
    return tmp_path, label


def test_semantic_reader_and_reduce_labels(semantic):
    root, label = semantic
    ds = SemanticSegmentationDataset(root / "images", root / "labels")
    assert len(ds) == 2 and ds[0]["file_name"] == "p0.png"  # sorted by stem
    s = ds[1]
    assert s["file_name"] == "p1.jpg" and s["image"].shape == (H, W, 3)
    assert s["labels"].tolist() == [0, 1, 4]
    assert np.array_equal(s["semantic"], label)
    reduced = SemanticSegmentationDataset(root / "images", root / "labels", reduce_labels=True)[1]
    assert reduced["labels"].tolist() == [0, 3]  # 0 -> ignore, 1 -> 0, 4 -> 3
    assert (reduced["semantic"][:, :10] == 255).all() and (reduced["semantic"][:, 20:] == 3).all()
    for m, lab in zip(reduced["masks"], reduced["labels"]):
        assert np.array_equal(m, reduced["semantic"] == lab)
    # Palette PNGs (VOC style) are read as indices, not colours.
    pal = Image.fromarray(label, mode="P")
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0, 255, 0] * 254)
    pal.save(root / "labels" / "p1.png")
    assert np.array_equal(ds[1]["semantic"], label)


def test_semantic_broken(semantic):
    root, _ = semantic
    ds = SemanticSegmentationDataset(root / "images", root / "labels", num_labels=3)
    with pytest.raises(DatasetError, match=r"p1.png: label value\(s\) \[4\] >= num_labels=3"):
        ds[1]
    Image.fromarray(np.zeros((H + 1, W), np.uint8)).save(root / "labels" / "p0.png")
    with pytest.raises(DatasetError, match="p0.png: label size 30x21 != image size 30x20"):
        ds[0]
    Image.fromarray(_image(0)).save(root / "labels" / "p0.png")
    with pytest.raises(DatasetError, match="p0.png: expected a single-channel label PNG"):
        ds[0]
    Image.fromarray(_image(2)).save(root / "images" / "p2.jpg")
    with pytest.raises(DatasetError, match="p2.jpg: no label p2.png"):
        SemanticSegmentationDataset(root / "images", root / "labels")
    (root / "images" / "p2.jpg").unlink()
    (root / "images" / "p0.png").unlink()
    with pytest.raises(DatasetError, match="p0.png: no image named p0"):
        SemanticSegmentationDataset(root / "images", root / "labels")
    with pytest.raises(DatasetError, match="missing: folder not found"):
        SemanticSegmentationDataset(root / "missing", root / "labels")


def test_rle_and_polygons_match_pycocotools():
    from pycocotools import mask as coco_mask

    from mask2former.data import decode_rle, polygons_to_mask

    rng = np.random.default_rng(0)
    for it in range(300):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        m = rng.uniform(size=(h, w)) < rng.uniform()
        ref = coco_mask.encode(np.asfortranarray(m.astype(np.uint8)))
        assert encode_mask(m)["counts"] == ref["counts"].decode()
        assert np.array_equal(decode_rle(encode_mask(m)), m)
        assert np.array_equal(decode_rle(encode_mask(m, compressed=False)), m)
        # Random (often self-intersecting, partly outside) polygons, some with repeated points.
        pts = rng.uniform(-5, max(h, w) + 5, size=2 * int(rng.integers(3, 9)))
        if it % 2:
            pts = np.round(pts)
        if it % 5 == 0:
            pts[2:4] = pts[0:2]
        polys = [pts.tolist(), rng.uniform(0, max(h, w), size=8).tolist()][: 1 + it % 2]
        ref_poly = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(polys, h, w)))
        assert np.array_equal(polygons_to_mask(polys, h, w), ref_poly.astype(bool))
