"""Overlay drawing and palettes: determinism, what gets painted where, inputs accepted."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch
from PIL import Image

from mask2former.data.shapes import SHAPES_CATEGORIES, ShapesConfig, render_shapes
from mask2former.visualize import class_color, draw_overlay, instance_color, palette


def _hsv(color):
    return colorsys.rgb_to_hsv(*(c / 255 for c in color))


def test_class_colors_are_stable_and_distinct():
    colors = [class_color(i) for i in range(40)]
    assert colors == [class_color(i) for i in range(40)]
    assert len(set(colors)) == 40
    # Neighbouring ids (often related classes) get clearly different colours.
    for a, b in zip(colors, colors[1:]):
        assert np.abs(np.subtract(a, b)).sum() > 120
    assert palette(5).shape == (5, 3) and palette(5).dtype == np.uint8
    assert [tuple(c) for c in palette(3)] == colors[:3]


def test_instance_colors_are_shades_of_the_class_color():
    assert instance_color(3, 0) == class_color(3)
    shades = [instance_color(3, k) for k in range(6)]
    assert len(set(shades)) == 6 and shades == [instance_color(3, k) for k in range(6)]
    base_hue = _hsv(class_color(3))[0]
    for shade in shades:
        dh = abs(_hsv(shade)[0] - base_hue)
        assert min(dh, 1 - dh) < 0.05  # still reads as the same class


def test_fill_outline_and_background():
    image = np.full((60, 80, 3), 100, np.uint8)
    seg = np.zeros((60, 80), np.int64)
    seg[10:40, 10:50] = 7
    info = [{"id": 7, "label_id": 2, "score": 0.9}]
    out = np.asarray(draw_overlay(image, seg, info, show_labels=False, alpha=0.5))
    assert out.shape == image.shape
    assert np.all(out[seg == 0] == 100)  # untouched outside segments
    color = np.array(class_color(2))
    inner = out[20:30, 20:40]
    assert np.all(np.abs(inner.astype(int) - (100 + color) / 2) <= 1)  # half-way blend
    assert np.all(out[10, 10:50] == color)  # outline pixels carry the opaque colour
    no_outline = np.asarray(draw_overlay(image, seg, info, show_labels=False, outline=False))
    assert np.all(np.abs(no_outline[10, 20:40].astype(int) - (100 + color) / 2) <= 1)


def test_labels_are_drawn_inside_their_segment():
    image = np.full((120, 160, 3), 30, np.uint8)
    seg = np.zeros((120, 160), np.int32)
    seg[:, 80:] = 1
    info = [{"id": 1, "label_id": 0, "score": 0.75}]
    plain = np.asarray(draw_overlay(image, seg, info, show_labels=False))
    labelled = np.asarray(draw_overlay(image, seg, info, {0: "sky"}))
    changed = np.any(plain != labelled, axis=-1)
    ys, xs = np.nonzero(changed)
    assert changed.sum() > 50 and xs.min() >= 70  # the label box sits on the segment
    assert 30 < ys.mean() < 90  # near its middle
    no_score = np.asarray(draw_overlay(image, seg, info, {0: "sky"}, show_scores=False))
    assert np.any(no_score != labelled)  # "sky" alone is a shorter label than "sky 0.75"


def test_accepts_tensors_floats_and_unlisted_ids():
    image = np.random.default_rng(0).random((32, 48, 3)).astype(np.float32)  # 0..1 floats
    seg = torch.full((32, 48), -1, dtype=torch.int32)
    seg[:16] = 3
    seg[16:, :10] = 9  # not in segments_info: left undrawn
    out = draw_overlay(image, seg, [{"id": 3, "label_id": 1, "label": "circle"}])
    arr = np.asarray(out)
    assert isinstance(out, Image.Image) and out.size == (48, 32)
    assert np.array_equal(arr[20:, :8], np.round(image[20:, :8] * 255).astype(np.uint8))
    assert not np.array_equal(np.asarray(draw_overlay(image, seg, [])), arr)
    with pytest.raises(ValueError, match="differ in size"):
        draw_overlay(image, np.zeros((10, 10)), [])


def test_shapes_scene_overlay(tmp_path):
    """A real scene with its ground truth: every segment labelled, nothing crashes on crowded
    labels; the picture is saved for a look (pytest --basetemp to keep it)."""
    sample = render_shapes(2024, 0, ShapesConfig(height=256, width=256))
    id2label = {c["id"] - 1: c["name"] for c in SHAPES_CATEGORIES}
    info = [
        {"id": s["id"], "label_id": s["category_id"] - 1, "score": 1.0}
        for s in sample["segments_info"]
    ]
    out = draw_overlay(sample["image"], sample["panoptic"], info, id2label)
    out.save(tmp_path / "overlay.png")
    assert out.size == (256, 256)
    diff = np.abs(np.asarray(out, dtype=int) - sample["image"]).sum(-1)
    assert (diff > 0).mean() > 0.9  # every pixel belongs to a segment and is tinted
