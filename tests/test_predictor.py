"""Predictor API: tasks, id conventions, batching independence, defaults from config, bad images.

The built-in model may not exist yet, so a tiny random model is written to a temporary folder.
Its class head and mask embedding are scaled up so that it makes confident, varied predictions
(an untouched random model scores every query ~1/(C+1) and yields no segment at all).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pytest
import torch
from PIL import Image

from mask2former.data.shapes import ShapesConfig, render_shapes

ID2LABEL = {0: "circle", 1: "square", 2: "sky", 3: "grass"}


def make_model_dir(
    root: Path,
    task: Optional[str] = None,
    stuff_label_ids: Optional[Sequence[int]] = None,
    processor: bool = True,
    object_mask_threshold: Optional[float] = None,
    id2label: Optional[dict] = None,
) -> str:
    """Write a tiny, deterministic Mask2Former checkpoint folder and return its path
    (``id2label``: default ID2LABEL; evaluation needs the dataset's classes)."""
    from mask2former import (
        Mask2FormerConfig,
        Mask2FormerForUniversalSegmentation,
        Mask2FormerImageProcessor,
        SwinConfig,
    )

    torch.manual_seed(4)
    backbone = SwinConfig(
        embed_dim=32,
        depths=[1, 1, 1, 1],
        num_heads=[1, 2, 4, 8],
        drop_path_rate=0.0,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    extras = {}
    if task is not None:
        extras["task"] = task
    if stuff_label_ids is not None:
        extras["stuff_label_ids"] = list(stuff_label_ids)
    if object_mask_threshold is not None:
        extras["object_mask_threshold"] = object_mask_threshold
    config = Mask2FormerConfig(
        backbone_config=backbone,
        feature_size=32,
        mask_feature_size=32,
        hidden_dim=32,
        num_attention_heads=4,
        encoder_layers=1,
        decoder_layers=2,
        num_queries=8,
        dim_feedforward=64,
        encoder_feedforward_dim=64,
        id2label=ID2LABEL if id2label is None else id2label,
        **extras,
    )
    model = Mask2FormerForUniversalSegmentation(config).eval()
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():
        head = model.class_predictor
        head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * 3)
        head.bias.zero_()
        name = "model.transformer_module.decoder.mask_predictor.mask_embedder.2.0"
        embed = dict(model.named_modules())[name]
        embed.weight.mul_(10000)
        embed.bias.mul_(10000)
    path = str(root)
    model.save_pretrained(path)
    if processor:
        # Small inputs (64 px short side) keep the tests fast.
        Mask2FormerImageProcessor(size={"shortest_edge": 64, "longest_edge": 128}).save_pretrained(
            path
        )
    return path


def scene(index: int, height: int = 96, width: int = 128) -> np.ndarray:
    """A small shapes image (non-square, to exercise resizing back to the photo's size)."""
    return render_shapes(1, index, ShapesConfig(height=height, width=width))["image"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: the tiny model gains nothing from more, and on a busy machine
    spinning threads make each forward pass up to ~100x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    return make_model_dir(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def predictor(model_dir):
    from mask2former.predictor import Predictor

    return Predictor.from_pretrained(model_dir)


@pytest.mark.parametrize("task", ["panoptic", "instance", "semantic"])
def test_results_follow_the_id_convention(predictor, task):
    images = [scene(0), scene(1, height=128)]
    results = predictor.predict(images, task=task)
    assert len(results) == 2
    total = 0
    for image, res in zip(images, results):
        assert res.task == task
        assert res.image_size == image.shape[:2]
        assert res.segmentation.shape == image.shape[:2] and res.segmentation.dtype == np.int32
        ids = [s["id"] for s in res.segments]
        assert len(ids) == len(set(ids)) and 0 not in ids
        present = set(np.unique(res.segmentation).tolist()) - {0}
        assert present == set(ids)  # every segment visible, nothing unlisted
        masks = res.masks
        assert masks.shape == (len(ids), *image.shape[:2]) and masks.dtype == bool
        for seg, mask in zip(res.segments, masks):
            assert seg["label"] == ID2LABEL[seg["label_id"]]
            assert 0.0 <= seg["score"] <= 1.0
            assert seg["area"] == int(mask.sum()) > 0
            ys, xs = np.nonzero(mask)
            assert seg["bbox"] == [xs.min(), ys.min(), np.ptp(xs) + 1, np.ptp(ys) + 1]
            # Instance masks are whole; the id map shows the best instance per pixel.
            assert np.all(mask[res.segmentation == seg["id"]])
            if task != "instance":
                assert np.array_equal(mask, res.segmentation == seg["id"])
        if task == "semantic":
            assert all(s["id"] == s["label_id"] + 1 for s in res.segments)
            assert 0 not in present  # every pixel has a class
        if task == "instance":
            scores = [s["score"] for s in res.segments]
            assert scores == sorted(scores, reverse=True) and ids == list(range(1, len(ids) + 1))
        total += len(ids)
    assert total > 0  # the test model does predict segments


def test_rles_decode_to_the_masks(predictor):
    from pycocotools import mask as coco_mask

    res = predictor.predict([scene(2)], task="instance")[0]
    rles = res.rles()
    assert all(isinstance(r["counts"], str) for r in rles)
    for rle, mask in zip(rles, res.masks):
        assert np.array_equal(coco_mask.decode(rle).astype(bool), mask)


@pytest.fixture(scope="module")
def batch_runs(predictor):
    """Per task: results one by one, results with batch_size=4, and the forward calls' shapes."""
    # Three images share an input size, one does not: the batch must neither mix nor pad them.
    images = [scene(0), scene(3, height=128), scene(1), scene(2)]
    shapes = []
    hook = predictor.model.register_forward_pre_hook(
        lambda module, args, kwargs: shapes.append(tuple(kwargs["pixel_values"].shape)),
        with_kwargs=True,
    )
    try:
        runs = {}
        for task in ("panoptic", "instance", "semantic"):
            single = predictor.predict(images, task=task, batch_size=1)
            shapes.clear()
            batched = predictor.predict(images, task=task, batch_size=4)
            runs[task] = (single, batched, list(shapes))
    finally:
        hook.remove()
    return runs


@pytest.mark.parametrize("task", ["panoptic", "instance", "semantic"])
def test_batching_equals_one_by_one(batch_runs, task):
    single, batched, shapes = batch_runs[task]
    # Same-size images went through together; the odd one alone.
    assert sorted(shapes) == [(1, 3, 64, 64), (3, 3, 64, 96)]
    for a, b in zip(single, batched):
        assert [s["id"] for s in a.segments] == [s["id"] for s in b.segments]
        assert [s["label_id"] for s in a.segments] == [s["label_id"] for s in b.segments]
        np.testing.assert_allclose(
            [s["score"] for s in a.segments], [s["score"] for s in b.segments], atol=2e-3
        )
        # BLAS kernels for a batch of 3 and of 1 differ in the last float bits (~1e-5 on the
        # logits), which can flip a pixel at an exact near-tie; anything more is a real leak.
        assert (a.segmentation != b.segmentation).mean() < 1e-3


def test_inputs_paths_pil_and_arrays_agree(predictor, tmp_path):
    image = scene(0)
    path = tmp_path / "x.png"
    Image.fromarray(image).save(path)
    results = predictor.predict([image, Image.fromarray(image), str(path), path])
    for res in results[1:]:
        assert np.array_equal(res.segmentation, results[0].segmentation)
    single = predictor.predict(image)  # one image (not a list) still gives a list
    assert len(single) == 1 and np.array_equal(single[0].segmentation, results[0].segmentation)


def test_load_image_converts_in_memory_inputs_as_the_processor_does():
    from mask2former.predictor import ImageError, load_image

    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    gray = rgb[..., 0]
    assert np.array_equal(load_image(gray), np.repeat(gray[..., None], 3, axis=2))
    assert np.array_equal(load_image(Image.fromarray(rgb).convert("RGBA")), rgb)
    assert np.array_equal(load_image(torch.from_numpy(rgb).permute(2, 0, 1)), rgb)  # (C, H, W)
    assert np.array_equal(load_image(rgb.astype(np.float32) + 0.4), rgb)  # rounded, not floored
    sixteen = load_image(rgb.astype(np.uint16) * 257)  # 16-bit data is scaled to 0..255
    assert np.array_equal(sixteen, rgb)
    with pytest.raises(ImageError, match="channel axis"):
        load_image(np.zeros((20, 30, 7), np.uint8))
    with pytest.raises(ImageError, match="unsupported type"):
        load_image([[1, 2], [3, 4]])


def test_defaults_come_from_the_config(tmp_path):
    from mask2former.predictor import Predictor

    path = make_model_dir(tmp_path / "m", task="semantic", stuff_label_ids=[1], processor=False)
    pred = Predictor.from_pretrained(path)
    assert pred.default_task == "semantic"
    assert pred.stuff_label_ids == [1]
    # No preprocessor_config.json: the processor's own defaults.
    assert pred.processor.size == {"shortest_edge": 800, "longest_edge": 1333}

    with open(os.path.join(path, "config.json")) as f:
        assert json.load(f)["task"] == "semantic"


def test_threshold_defaults_to_the_models_own(predictor, tmp_path):
    from mask2former.predictor import Predictor

    image = scene(4)
    assert predictor.default_threshold == 0.5
    scores = [s["score"] for s in predictor.predict(image, threshold=0.0)[0].segments]
    kept = lambda res: sorted(s["score"] for s in res.segments)  # noqa: E731
    # The median score keeps a different set of segments than 0.5 does.
    own_value = float(np.median(scores))
    assert kept(predictor.predict(image, threshold=own_value)[0]) != kept(
        predictor.predict(image)[0]
    )
    own = Predictor.from_pretrained(make_model_dir(tmp_path / "m", object_mask_threshold=own_value))
    assert own.default_threshold == own_value
    assert kept(own.predict(image)[0]) == kept(predictor.predict(image, threshold=own_value)[0])
    # An explicit threshold wins over the model's.
    assert kept(own.predict(image, threshold=0.5)[0]) == kept(predictor.predict(image)[0])
    # A bad value in config.json is refused when the model is loaded, naming file and field.
    bad = Path(make_model_dir(tmp_path / "bad"))
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "object_mask_threshold": 1.5}))
    with pytest.raises(ValueError, match=r"config\.json: object_mask_threshold: must be in"):
        Predictor.from_pretrained(bad)


def test_stuff_classes_are_fused_by_default(model_dir, tmp_path):
    from mask2former.predictor import Predictor

    plain = Predictor.from_pretrained(model_dir)
    image = scene(4)  # three "square" segments with this model
    labels = [s["label_id"] for s in plain.predict([image], task="panoptic")[0].segments]
    fused_label = max(set(labels), key=labels.count)
    assert labels.count(fused_label) >= 2  # a class with several segments to fuse
    path = make_model_dir(tmp_path / "m", stuff_label_ids=[fused_label])
    res = Predictor.from_pretrained(path).predict([image], task="panoptic")[0]
    mine = [s for s in res.segments if s["label_id"] == fused_label]
    assert len(mine) == 1 and mine[0]["was_fused"]
    # An explicit empty list fuses nothing.
    res = Predictor.from_pretrained(path).predict([image], label_ids_to_fuse=[])[0]
    assert not any(s["was_fused"] for s in res.segments)


def test_bfloat16_runs(model_dir):
    from mask2former.predictor import Predictor

    pred = Predictor.from_pretrained(model_dir, dtype="bfloat16")
    res = pred.predict([scene(0)], task="panoptic")[0]
    assert res.segmentation.shape == (96, 128)


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda d: str(d / "missing.png"), "no such file"),
        (lambda d: _write(d / "text.png", b"not an image at all"), "not an image"),
        (lambda d: _truncated(d / "cut.png"), "cannot read image"),
        (lambda d: _save(d / "tiny.png", np.zeros((5, 40, 3), np.uint8)), "too small"),
        (lambda d: _save(d / "wide.png", np.zeros((10, 400, 3), np.uint8)), "aspect ratio"),
    ],
)
def test_bad_images_raise_one_clear_error(tmp_path, make, message):
    from mask2former.predictor import ImageError, load_image

    path = make(tmp_path)
    with pytest.raises(ImageError, match=message) as info:
        load_image(path)
    assert os.path.basename(path) in str(info.value) and "\n" not in str(info.value)


def test_bad_arguments(predictor):
    with pytest.raises(ValueError, match="task"):
        predictor.predict([scene(0)], task="depth")
    from mask2former.predictor import Predictor

    with pytest.raises(ValueError, match="dtype"):
        Predictor.from_pretrained("whatever", dtype="float8")


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def _save(path: Path, array: np.ndarray) -> str:
    Image.fromarray(array).save(path)
    return str(path)


def _truncated(path: Path) -> str:
    _save(path, scene(0))
    data = path.read_bytes()
    return _write(path, data[: len(data) // 2])
