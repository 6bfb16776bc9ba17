"""The shipped ``shapes`` model: loads by name and segments a generated scene it never saw."""

from __future__ import annotations

from mask2former import Mask2FormerForUniversalSegmentation
from mask2former.data.shapes import SHAPES_CATEGORIES, render_shapes
from mask2former.predictor import Predictor


def test_builtin_model_loads_by_name_with_its_labels():
    model = Mask2FormerForUniversalSegmentation.from_pretrained("shapes")
    assert model.config.backbone_config.model_type == "resnet"
    assert [model.config.id2label[i] for i in range(8)] == [c["name"] for c in SHAPES_CATEGORIES]
    assert model.config.stuff_label_ids == [5, 6, 7]


def test_builtin_model_finds_stuff_and_shapes():
    # Held-out seed; the figures in the README come from 200 such images.
    sample = render_shapes(seed=12345, index=0)
    result = Predictor.from_pretrained("shapes").predict([sample["image"]])[0]
    labels = {s["label"] for s in result.segments}
    truth = {SHAPES_CATEGORIES[c["category_id"] - 1]["name"] for c in sample["segments_info"]}
    found = labels & truth
    things = {c["name"] for c in SHAPES_CATEGORIES if c["isthing"]}
    assert found - things, f"no background class found: {labels} vs {truth}"
    assert found & things, f"no shape found: {labels} vs {truth}"
    assert result.segmentation.shape == sample["image"].shape[:2]
