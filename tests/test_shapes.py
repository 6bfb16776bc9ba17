"""The synthetic shapes dataset: determinism, content, and the on-disk formats."""

import json

import numpy as np
import pytest

from mask2former.data import (
    SHAPES_CATEGORIES,
    CocoInstancesDataset,
    CocoPanopticDataset,
    SemanticSegmentationDataset,
    ShapesConfig,
    ShapesDataset,
    export_panoptic_dataset,
    render_shapes,
    sample_to_semantic,
)


def _equal(a, b):
    return all(np.array_equal(a[k], b[k]) for k in ("image", "panoptic", "masks", "labels"))


def test_deterministic_per_seed_and_index():
    small, large = ShapesDataset(5, seed=3), ShapesDataset(100, seed=3)
    assert _equal(small[4], large[4])  # independent of the dataset length
    assert _equal(large[4], large[4])  # and of access order / repetition
    assert small[4]["segments_info"] == large[4]["segments_info"]
    assert not np.array_equal(small[4]["image"], ShapesDataset(5, seed=4)[4]["image"])
    assert not np.array_equal(small[3]["image"], small[4]["image"])
    assert small[-1]["file_name"] == "000004.png"
    with pytest.raises(IndexError):
        small[5]


def test_content_and_segments():
    ds = ShapesDataset(40, seed=0)
    seen, things_per_image = set(), []
    for i in range(len(ds)):
        s = ds[i]
        h, w = s["image"].shape[:2]
        assert s["image"].dtype == np.uint8 and s["image"].shape == (256, 256, 3)
        # Panoptic: every pixel in exactly one segment, ids consecutive from 1.
        assert s["masks"].sum(axis=0).min() == 1 and s["masks"].sum(axis=0).max() == 1
        assert [seg["id"] for seg in s["segments_info"]] == list(range(1, len(s["masks"]) + 1))
        for seg, m, label, isthing in zip(
            s["segments_info"], s["masks"], s["labels"], s["isthing"]
        ):
            assert seg["area"] == m.sum() > 0
            x, y, bw, bh = seg["bbox"]
            assert m[y : y + bh, x : x + bw].sum() == seg["area"]
            assert label == seg["category_id"] - 1
            assert isthing == bool(SHAPES_CATEGORIES[label]["isthing"]) == bool(seg["isthing"])
            assert seg["iscrowd"] == 0
            if isthing:
                assert m.sum() >= ShapesConfig().min_visible_area
        seen.update(s["labels"].tolist())
        things_per_image.append(int(s["isthing"].sum()))
    assert seen == set(range(len(SHAPES_CATEGORIES)))  # 5 things and 3 stuff all appear
    assert sum(c["isthing"] for c in SHAPES_CATEGORIES) >= 5
    assert sum(not c["isthing"] for c in SHAPES_CATEGORIES) >= 3
    assert np.mean(things_per_image) >= 3


def test_configurable_size():
    # Rendering speed (about 13 ms an image on one core) is a benchmark figure, not a test.
    s = render_shapes(0, 0, ShapesConfig(height=96, width=128))
    assert s["image"].shape == (96, 128, 3) and s["panoptic"].shape == (96, 128)


def test_written_formats_read_back_equal(tmp_path):
    ds = ShapesDataset(6, seed=7)
    export_panoptic_dataset(ds, ds.categories, tmp_path)
    for name in ("images", "panoptic", "semantic"):
        assert len(list((tmp_path / name).glob("*.png"))) == 6
    pan_json = json.loads((tmp_path / "panoptic.json").read_text())
    assert {"images", "annotations", "categories"} <= set(pan_json)
    assert json.loads((tmp_path / "categories.json").read_text())[0]["name"] == "circle"

    pan = CocoPanopticDataset(
        tmp_path / "images", tmp_path / "panoptic", tmp_path / "panoptic.json"
    )
    inst = CocoInstancesDataset(tmp_path / "images", tmp_path / "instances.json")
    sem = SemanticSegmentationDataset(
        tmp_path / "images", tmp_path / "semantic", reduce_labels=True, num_labels=8
    )
    assert len(pan) == len(inst) == len(sem) == 6
    assert pan.label_names == ds.label_names
    for i in range(6):
        a = ds[i]
        b = pan[i]
        assert b["file_name"] == a["file_name"]
        for key in ("image", "masks", "labels", "isthing", "iscrowd", "segment_ids"):
            assert np.array_equal(a[key], b[key]), key
        # The JSON holds the standard COCO keys (no "isthing": that is a category property).
        expected = [{k: v for k, v in seg.items() if k != "isthing"} for seg in a["segments_info"]]
        assert pan_json["annotations"][i]["segments_info"] == expected
        c = inst[i]
        thing = a["isthing"]
        assert np.array_equal(c["image"], a["image"])
        assert np.array_equal(c["masks"], a["masks"][thing])
        assert np.array_equal(c["labels"], a["labels"][thing])
        d = sem[i]
        assert np.array_equal(d["semantic"], sample_to_semantic(a))
        assert set(d["labels"].tolist()) == set(a["labels"].tolist())


def test_instances_json_is_pycocotools_compatible(tmp_path):
    from pycocotools.coco import COCO

    ds = ShapesDataset(2, seed=1)
    export_panoptic_dataset(ds, ds.categories, tmp_path, formats=("instances",))
    coco = COCO(str(tmp_path / "instances.json"))
    sample = ds[0]
    masks = [coco.annToMask(a).astype(bool) for a in coco.loadAnns(coco.getAnnIds(imgIds=[0]))]
    assert np.array_equal(np.stack(masks), sample["masks"][sample["isthing"]])
