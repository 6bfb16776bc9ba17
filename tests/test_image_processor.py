"""Preprocessing, label encoding and config files of Mask2FormerImageProcessor, with parity
against transformers 4.37.2 where we follow it."""

from __future__ import annotations

import io
import json
import os
import warnings

import numpy as np
import pytest
import skimage.data as skdata  # noqa: E402
import torch
import transformers  # noqa: E402
from PIL import Image

from mask2former import Mask2FormerImageProcessor
from mask2former.processing import BatchFeature


def _reference(**kwargs):
    from transformers import Mask2FormerImageProcessor as Reference

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Reference(**kwargs)


@pytest.fixture(scope="module")
def photos():
    astronaut = skdata.astronaut()
    return {
        "astronaut": astronaut,
        "coffee": skdata.coffee(),
        "chelsea": skdata.chelsea(),
        "camera": skdata.camera(),  # grayscale
        "rocket": skdata.rocket(),
        "odd_crop": astronaut[37:338, 11:468],  # 301x457
    }


def _rgb(image):
    return np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image


@pytest.mark.parametrize(
    "size",
    [None, {"height": 384, "width": 384}, 384, {"shortest_edge": 320, "longest_edge": 512}],
)
def test_pixel_values_match_reference(photos, size):
    images = list(photos.values())
    kwargs = {} if size is None else {"size": size}
    ours = Mask2FormerImageProcessor(**kwargs)(images, return_tensors="pt")
    ref = _reference(**kwargs)([_rgb(im) for im in images], return_tensors="pt")
    assert ours.pixel_values.shape == ref["pixel_values"].shape
    assert torch.equal(ours.pixel_mask, ref["pixel_mask"])
    assert torch.allclose(ours.pixel_values, ref["pixel_values"], atol=1e-4)


def test_default_size_rule():
    proc = Mask2FormerImageProcessor()
    batch = proc(np.zeros((480, 640, 3), np.uint8), return_tensors="pt")
    assert batch.pixel_values.shape == (1, 3, 800, 1088)
    tall = proc(np.zeros((2000, 300, 3), np.uint8), return_tensors="pt")
    assert tall.pixel_values.shape[2:] == (1344, 224)  # long side capped at 1333, then /32


def test_padding_and_pixel_mask(photos):
    proc = Mask2FormerImageProcessor(do_resize=False)
    small, big = photos["chelsea"], photos["coffee"]
    batch = proc([small, big], return_tensors="pt")
    assert batch.pixel_values.shape == (2, 3, 400, 600)
    mask = batch.pixel_mask[0]
    assert mask[:300, :451].all() and mask.sum() == 300 * 451
    assert (batch.pixel_values[0][:, 300:] == 0).all() and (
        batch.pixel_values[0][:, :, 451:] == 0
    ).all()


def _label_maps(rng, shapes, num_labels=6):
    maps = []
    for h, w in shapes:
        seg = np.zeros((h, w), np.int64)
        for _ in range(8):
            y, x = rng.integers(0, h), rng.integers(0, w)
            seg[y : y + h // 3, x : x + w // 3] = rng.integers(1, num_labels)
        seg[: h // 10, : w // 10] = 255
        maps.append(seg)
    return maps


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ignore_index": 255},
        {"ignore_index": 255, "reduce_labels": True},
        {"ignore_index": 3},  # (without ignore_index the reference cannot pad its masks)
    ],
)
def test_semantic_labels_match_reference(photos, kwargs):
    images = [photos["chelsea"], photos["odd_crop"]]
    maps = _label_maps(np.random.default_rng(0), [im.shape[:2] for im in images])
    size = {"shortest_edge": 256, "longest_edge": 400}
    ours = Mask2FormerImageProcessor(size=size, **kwargs)(images, maps, return_tensors="pt")
    ref = _reference(size=size, **kwargs)(images, maps, return_tensors="pt")
    _compare_labels(ours, ref)


def _compare_labels(ours, ref):
    for i in range(len(ours.mask_labels)):
        h, w = (int(ours.pixel_mask[i].sum(0).max()), int(ours.pixel_mask[i].sum(1).max()))
        assert torch.equal(ours.class_labels[i], ref["class_labels"][i])
        ours_masks, ref_masks = ours.mask_labels[i], ref["mask_labels"][i]
        assert ours_masks.shape == ref_masks.shape
        assert torch.equal(ours_masks[:, :h, :w], ref_masks[:, :h, :w])
        assert (ours_masks[:, h:] == 0).all() and (ours_masks[:, :, w:] == 0).all()


def test_instance_labels_match_reference(photos):
    images = [photos["chelsea"], photos["rocket"]]
    maps = _label_maps(np.random.default_rng(1), [im.shape[:2] for im in images], num_labels=9)
    maps = [np.where(m == 255, 0, m) for m in maps]
    mapping = {i: 10 + i % 3 for i in range(0, 9)}
    size = {"height": 200, "width": 240}
    for per_image in (mapping, [mapping, {i: 20 + i for i in range(9)}]):
        ours = Mask2FormerImageProcessor(size=size, ignore_index=0)(
            images, maps, instance_id_to_semantic_id=per_image, return_tensors="pt"
        )
        ref = _reference(size=size, ignore_index=0)(
            images, maps, instance_id_to_semantic_id=per_image, return_tensors="pt"
        )
        _compare_labels(ours, ref)


def test_encode_inputs_example_and_empty_map():
    proc = Mask2FormerImageProcessor()
    image = np.zeros((3, 1, 4), np.float32)
    out = proc.encode_inputs([image], [np.array([[2, 6, 7, 9]])], return_tensors="pt")
    assert out.class_labels[0].tolist() == [2, 6, 7, 9]
    assert torch.equal(out.mask_labels[0][:, 0], torch.eye(4))
    empty = proc.encode_inputs(
        [image, np.zeros((3, 2, 5), np.float32)],
        [np.full((1, 4), 255), np.full((2, 5), 255)],
        ignore_index=255,
        return_tensors="pt",
    )
    assert empty.mask_labels[0].shape == (0, 2, 5) and empty.class_labels[0].shape == (0,)


def test_reduce_labels_and_large_ids():
    proc = Mask2FormerImageProcessor(do_resize=False, ignore_index=255, reduce_labels=True)
    seg = np.array([[0, 1, 300], [300, 2, 0]])
    out = proc(np.zeros((2, 3, 3), np.uint8), seg, return_tensors="pt")
    assert out.class_labels[0].tolist() == [0, 1, 299]
    resized = Mask2FormerImageProcessor(size={"height": 4, "width": 6}, size_divisor=0)(
        np.zeros((2, 3, 3), np.uint8), seg, return_tensors="np"
    )
    assert resized["class_labels"][0].tolist() == [0, 1, 2, 300]


def test_input_types_agree():
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    proc = Mask2FormerImageProcessor(size={"height": 64, "width": 64})
    expected = proc(hwc, return_tensors="pt").pixel_values
    variants = [
        Image.fromarray(hwc),
        hwc.transpose(2, 0, 1),
        torch.from_numpy(hwc.transpose(2, 0, 1).copy()),
        np.dstack([hwc, np.full((37, 53), 255, np.uint8)]),  # RGBA
    ]
    for v in variants:
        assert torch.allclose(proc(v, return_tensors="pt").pixel_values, expected, atol=1e-6)
    as_float = proc(hwc.astype(np.float32), return_tensors="pt").pixel_values
    assert torch.allclose(as_float, expected, atol=2e-2)  # float resize has no 8-bit rounding
    gray = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    rgb = proc(np.dstack([gray] * 3), return_tensors="pt").pixel_values
    for v in (gray, Image.fromarray(gray), Image.fromarray(gray).convert("P")):
        assert torch.allclose(proc(v, return_tensors="pt").pixel_values, rgb, atol=1e-6)
    sixteen = proc(gray.astype(np.uint16) * 257, return_tensors="pt").pixel_values
    assert torch.allclose(sixteen, rgb, atol=2e-2)  # resized in float too


def test_exif_orientation_is_applied():
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = 255
    image = Image.fromarray(arr)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    image.save(buf, format="JPEG", exif=exif.tobytes())
    loaded = Image.open(io.BytesIO(buf.getvalue()))
    out = Mask2FormerImageProcessor(do_resize=False)(loaded, return_tensors="pt")
    assert out.pixel_values.shape == (1, 3, 40, 20)
    top = out.pixel_values[0, 0, :20].mean()
    assert top > out.pixel_values[0, 0, 20:].mean()  # the white half is now on top


def test_return_types_and_batch_feature():
    proc = Mask2FormerImageProcessor(size={"height": 32, "width": 32})
    images = [np.zeros((10, 12, 3), np.uint8)] * 2
    maps = [np.ones((10, 12), np.int64)] * 2
    as_lists = proc(images, maps)
    assert isinstance(as_lists, BatchFeature) and isinstance(as_lists.pixel_values, list)
    assert isinstance(as_lists.pixel_values[0], np.ndarray)
    as_np = proc(images, maps, return_tensors="np")
    assert isinstance(as_np["pixel_values"], np.ndarray) and as_np.pixel_values.shape == (
        2,
        3,
        32,
        32,
    )
    as_pt = proc(images, maps, return_tensors="pt", data_format="channels_last")
    assert as_pt.pixel_values.shape == (2, 32, 32, 3)
    moved = as_pt.to("cpu").to(torch.float64)
    assert moved.pixel_values.dtype == torch.float64 and moved.pixel_mask.dtype == torch.int64
    assert moved.class_labels[0].dtype == torch.int64
    with pytest.raises(AttributeError):
        _ = as_pt.nothing


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda p: p("not an image"), TypeError, "images\\[0\\]"),
        (lambda p: p([]), ValueError, "empty"),
        (lambda p: p(np.zeros((0, 5, 3), np.uint8)), ValueError, "empty"),
        (lambda p: p([np.zeros((5, 5, 3), np.uint8), 3]), TypeError, "images\\[1\\]"),
        (
            lambda p: p([np.zeros((5, 5, 3), np.uint8)] * 2, [np.zeros((5, 5)), np.zeros((5, 6))]),
            ValueError,
            "segmentation_maps\\[1\\] has size 5x6 but images\\[1\\] has size 5x5",
        ),
        (
            lambda p: p([np.zeros((5, 5, 3), np.uint8)] * 2, [np.zeros((5, 5))]),
            ValueError,
            "2 images",
        ),
        (
            lambda p: p(np.zeros((5, 5, 3), np.uint8), np.ones((5, 5)), reduce_labels=True),
            ValueError,
            "ignore_index",
        ),
        (
            lambda p: p(
                np.zeros((5, 5, 3), np.uint8), np.ones((5, 5)), instance_id_to_semantic_id={2: 1}
            ),
            ValueError,
            "instance id 1",
        ),
        (
            lambda p: p(np.zeros((5, 5, 3), np.uint8), return_tensors="tf"),
            ValueError,
            "return_tensors",
        ),
        (lambda p: p(np.zeros((5, 5, 3), np.uint8), bogus=1), TypeError, "bogus"),
    ],
)
def test_errors(call, error, message):
    with pytest.raises(error, match=message):
        call(Mask2FormerImageProcessor(size={"height": 8, "width": 8}))


def test_save_load_roundtrip_and_transformers_compat(tmp_path):
    proc = Mask2FormerImageProcessor(size=384, ignore_index=255, num_labels=133)
    proc.save_pretrained(tmp_path)
    written = json.loads((tmp_path / "preprocessor_config.json").read_text())
    ref = _reference(size=384, ignore_index=255)
    expected = {k: v for k, v in ref.to_dict().items() if k != "_processor_class"}
    # do_reduce_labels: the name transformers 5.x reads; pad_size: a 5.x setting, written when
    # None too as 5.x does (4.37.2 keeps both as plain attributes).
    ours_only = ("num_labels", "do_reduce_labels", "pad_size")
    assert {k: v for k, v in written.items() if k not in ours_only} == json.loads(
        json.dumps(expected)
    )
    assert written["num_labels"] == 133 and written["do_reduce_labels"] is False
    assert written["pad_size"] is None and "data_format" not in written
    loaded = Mask2FormerImageProcessor.from_pretrained(tmp_path)
    assert loaded.to_dict() == proc.to_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = transformers.Mask2FormerImageProcessor.from_pretrained(str(tmp_path))
    assert theirs.size == proc.size and theirs.size_divisor == 32 and theirs.ignore_index == 255


# A preprocessor_config.json in the older published layout (deprecated key names).
PUBLISHED_PROCESSOR_CONFIG = {
    "do_normalize": True,
    "do_resize": True,
    "feature_extractor_type": "Mask2FormerFeatureExtractor",
    "ignore_index": 255,
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
    "max_size": 1333,
    "num_labels": 133,
    "reduce_labels": False,
    "resample": 2,
    "size": 384,
    "size_divisibility": 32,
}


def test_published_layout_with_deprecated_keys(tmp_path):
    published = dict(PUBLISHED_PROCESSOR_CONFIG)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(published))
    proc = Mask2FormerImageProcessor.from_pretrained(tmp_path)
    assert proc.size == {"shortest_edge": 384, "longest_edge": 1333}
    assert proc.size_divisor == 32 and proc.ignore_index == 255
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = transformers.Mask2FormerImageProcessor.from_pretrained(str(tmp_path))
    ours, theirs = proc.to_dict(), ref.to_dict()
    for key in ("size", "size_divisor", "ignore_index", "_max_size", "num_labels", "resample"):
        assert ours[key] == theirs[key], key
    override = Mask2FormerImageProcessor.from_pretrained(tmp_path, max_size=500, size=300)
    assert override.size == {"shortest_edge": 300, "longest_edge": 500}


# -- field-by-field validation (issue 20, item 12) ---------------------------------------------


def _write_processor_config(folder, **changes):
    path = folder / "preprocessor_config.json"
    data = Mask2FormerImageProcessor(size={"shortest_edge": 64, "longest_edge": 128}).to_dict()
    data.update(changes)
    path.write_text(json.dumps(data))
    return str(path)


@pytest.mark.parametrize(
    "changes,message",
    [
        (dict(resample=None), "resample: expected an integer, got None"),
        (dict(resample=7), "resample: expected a PIL resampling filter"),
        (dict(image_mean=[0.5, 0.5]), "image_mean: expected 3 entries"),
        (dict(image_mean="0.5"), "image_mean: expected a number or a list of 3 numbers"),
        (dict(image_std=[0.2, 0.0, 0.2]), r"image_std\[1\]: must be in \(0, 65536\]"),
        (dict(image_std=-1), "image_std: must be in"),
        (dict(size=10**12), "size: must be at most"),
        (dict(size={"shortest_edge": 64.5}), "size.shortest_edge: expected an integer"),
        (dict(size={"shortest_edge": 64, "longest_edge": 32}), "longest_edge .* must be larger"),
        (dict(size={"short": 64}), "size: expected the keys"),
        (dict(size_divisor=-32), "size_divisor: must be at least 0"),
        (dict(rescale_factor=0), r"rescale_factor: must be in \(0, 1000\]"),
        (dict(do_resize="yes"), "do_resize: expected true or false"),
        (dict(reduce_labels=1), "reduce_labels: expected true or false"),
        (dict(ignore_index=255.0), "ignore_index: expected an integer"),
        (dict(num_labels=[133]), "num_labels: expected an integer"),
        (dict(_max_size=1e12), "_max_size: expected an integer"),
    ],
)
def test_bad_fields_in_a_file_name_the_file_and_the_field(tmp_path, changes, message):
    path = _write_processor_config(tmp_path, **changes)
    with pytest.raises(ValueError, match=message) as error:
        Mask2FormerImageProcessor.from_pretrained(tmp_path)
    assert str(error.value).startswith(f"{path}: ")


@pytest.mark.parametrize("text", ["[1]", "{", "\xff"])
def test_unreadable_processor_files_name_the_file(tmp_path, text):
    path = tmp_path / "preprocessor_config.json"
    path.write_text(text, encoding="latin-1")
    with pytest.raises(ValueError) as error:
        Mask2FormerImageProcessor.from_pretrained(tmp_path)
    assert str(error.value).startswith(f"{path}: ")


def test_processor_overrides_are_validated(tmp_path):
    path = _write_processor_config(tmp_path)
    with pytest.raises(ValueError) as error:
        Mask2FormerImageProcessor.from_pretrained(tmp_path, resample="bilinear")
    assert str(error.value).startswith(f"{path} with overrides ['resample']: resample: ")


def test_single_number_mean_and_std():
    proc = Mask2FormerImageProcessor(image_mean=0.5, image_std=0.25, do_resize=False)
    assert proc.image_mean == [0.5, 0.5, 0.5] and proc.image_std == [0.25, 0.25, 0.25]
    listed = Mask2FormerImageProcessor(image_mean=[0.5] * 3, image_std=[0.25] * 3, do_resize=False)
    image = np.random.default_rng(0).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    ours = proc(image, return_tensors="pt").pixel_values
    assert torch.equal(ours, listed(image, return_tensors="pt").pixel_values)


def test_single_number_mean_round_trip(tmp_path):
    proc = Mask2FormerImageProcessor(image_mean=0.5)
    proc.save_pretrained(tmp_path)
    written = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert written["image_mean"] == [0.5, 0.5, 0.5]
    assert Mask2FormerImageProcessor.from_pretrained(tmp_path).to_dict() == proc.to_dict()


def test_single_number_mean_in_a_file(tmp_path):
    _write_processor_config(tmp_path, image_mean=0)
    proc = Mask2FormerImageProcessor.from_pretrained(tmp_path)
    assert proc.image_mean == [0.0, 0.0, 0.0]
    batch = proc(np.zeros((20, 30, 3), np.uint8), return_tensors="pt")
    assert torch.isfinite(batch.pixel_values).all()


def test_processor_save_replaces_a_symlink_instead_of_writing_through_it(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    folder = tmp_path / "model"
    folder.mkdir()
    os.symlink(victim, folder / "preprocessor_config.json")
    (path,) = Mask2FormerImageProcessor(size=384).save_pretrained(folder)
    assert victim.read_text() == "keep" and not os.path.islink(path)
    assert Mask2FormerImageProcessor.from_pretrained(folder).size["shortest_edge"] == 384
    assert [p.name for p in folder.iterdir()] == ["preprocessor_config.json"]


@pytest.mark.parametrize(
    "settings",
    [
        (True, 1 / 255, True, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        (True, 0.0039, False, 0.5, 0.5),
        (False, 1 / 255, True, [120.0, 110.5, 100.25], [58.4, 57.1, 57.4]),
        (False, 1.0, False, 0.0, 1.0),
    ],
)
def test_uint8_table_lookup_equals_the_arithmetic(settings):
    """8-bit images go through a per-channel table; every level of every channel must come
    out as the elementwise formula (float64 rescale, float32 normalisation) gives it."""
    from mask2former.processing import transforms

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (31, 45, 3), dtype=np.uint8)
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    for im in (image, levels):
        got = transforms.rescale_and_normalize(im, *settings)
        want = transforms._arithmetic(im, settings)
        assert got.shape == want.shape == im.shape and got.dtype == np.float32
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_batch_of_different_sizes_is_each_image_zero_padded(data_format):
    """The batch is filled image by image into one zeroed array: equal to padding each image
    and stacking them, in either layout, as tensors and as arrays."""
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(20, 30), (34, 16)]]
    proc = Mask2FormerImageProcessor(do_resize=False)
    per_image = proc(images, data_format=data_format).pixel_values  # a list of padded arrays
    for kind in ("np", "pt"):
        batch = proc(images, return_tensors=kind, data_format=data_format).pixel_values
        batch = np.asarray(batch)
        assert batch.dtype == np.float32
        np.testing.assert_array_equal(batch, np.stack(per_image))
    first = per_image[0] if data_format == "channels_first" else per_image[0].transpose(2, 0, 1)
    assert first.shape == (3, 34, 30) and not first[:, 20:].any() and not first[:, :, 30:].any()
