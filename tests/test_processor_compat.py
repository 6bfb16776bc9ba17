"""Mask2FormerImageProcessor as transformers users handle it: dict, JSON string and file round
trips, from_pretrained/save_pretrained options, unknown keys as attributes (issue 22), with
transformers 4.37.2 as the oracle."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
import transformers

from mask2former import Mask2FormerImageProcessor
from mask2former._config_base import ConfigError

# The settings transformers' own Mask2Former image-processor tests build their processor with.
TRANSFORMERS_TEST_SETTINGS = {
    "do_resize": True,
    "size": {"shortest_edge": 32, "longest_edge": 1333},
    "do_normalize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "size_divisor": 0,
    "num_labels": 10,
    "do_reduce_labels": True,
    "ignore_index": 255,
}


def _theirs():
    return transformers.Mask2FormerImageProcessor


def test_to_json_string_holds_the_settings():
    proc = Mask2FormerImageProcessor(**TRANSFORMERS_TEST_SETTINGS)
    written = json.loads(proc.to_json_string())
    for key, value in TRANSFORMERS_TEST_SETTINGS.items():
        assert written[key] == value, key
    assert proc.reduce_labels is True and proc.do_reduce_labels is True
    assert written["image_processor_type"] == "Mask2FormerImageProcessor"


def test_json_file_round_trip(tmp_path):
    first = Mask2FormerImageProcessor(**TRANSFORMERS_TEST_SETTINGS)
    path = tmp_path / "image_processor.json"
    first.to_json_file(path)
    second = Mask2FormerImageProcessor.from_json_file(path)
    assert second.to_dict() == first.to_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = _theirs().from_json_file(str(path))
    assert theirs.size == first.size and theirs.ignore_index == 255 and theirs.num_labels == 10


def test_from_dict_round_trip_and_overrides():
    proc = Mask2FormerImageProcessor(**TRANSFORMERS_TEST_SETTINGS)
    again = Mask2FormerImageProcessor.from_dict(proc.to_dict())
    assert again.to_dict() == proc.to_dict()
    loaded = Mask2FormerImageProcessor.from_dict(TRANSFORMERS_TEST_SETTINGS)
    assert loaded.size == {"shortest_edge": 32, "longest_edge": 1333} and loaded.size_divisor == 0
    changed = Mask2FormerImageProcessor.from_dict(
        TRANSFORMERS_TEST_SETTINGS, size=42, max_size=84, size_divisibility=8
    )
    assert changed.size == {"shortest_edge": 42, "longest_edge": 84}
    assert changed.size_divisor == 8
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # their deprecation warnings for the old names
        ref = _theirs().from_dict(
            TRANSFORMERS_TEST_SETTINGS, size=42, max_size=84, size_divisibility=8
        )
    assert ref.size == changed.size and ref.size_divisor == changed.size_divisor
    # An override of one spelling replaces the file's other spelling.
    flipped = Mask2FormerImageProcessor.from_dict(proc.to_dict(), reduce_labels=False)
    assert flipped.reduce_labels is False and flipped.to_dict()["do_reduce_labels"] is False


def test_return_unused_kwargs():
    proc, unused = Mask2FormerImageProcessor.from_dict(
        {}, do_normalize=False, foo=False, return_unused_kwargs=True
    )
    assert proc.do_normalize is False and unused == {"foo": False}
    assert not hasattr(proc, "foo")
    _, ref_unused = _theirs().from_dict(
        {}, do_normalize=False, foo=False, return_unused_kwargs=True
    )
    assert ref_unused == unused


def test_unknown_keys_are_attributes_and_written_back(tmp_path):
    proc = Mask2FormerImageProcessor(num_labels=3, my_note="kept", crop_pct=0.9)
    assert proc.my_note == "kept" and proc.crop_pct == 0.9 and proc.num_labels == 3
    assert proc.extra_config == {"my_note": "kept", "crop_pct": 0.9}
    proc.later = [1, 2]  # set after construction: written back too, as in transformers
    proc.save_pretrained(tmp_path)
    loaded = Mask2FormerImageProcessor.from_pretrained(tmp_path)
    assert (loaded.my_note, loaded.crop_pct, loaded.later) == ("kept", 0.9, [1, 2])
    assert loaded.to_dict() == proc.to_dict()


def test_unknown_key_naming_a_method_is_an_error(tmp_path):
    path = tmp_path / "preprocessor_config.json"
    path.write_text(json.dumps({"preprocess": 1}))
    with pytest.raises(ConfigError, match="preprocess: not a setting") as error:
        Mask2FormerImageProcessor.from_pretrained(tmp_path)
    assert str(error.value).startswith(f"{path}: ")


@pytest.mark.parametrize(
    "file, expected",
    [
        # 4.37.2 writes _max_size and reads reduce_labels (do_reduce_labels: a plain attribute)
        ({"_max_size": 1333, "reduce_labels": False, "do_reduce_labels": True}, False),
        # 5.x never writes _max_size and reads do_reduce_labels
        ({"reduce_labels": False, "do_reduce_labels": True}, True),
    ],
)
def test_reduce_labels_spellings_that_disagree(tmp_path, file, expected):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(file))
    with pytest.warns(UserWarning, match="disagree"):
        proc = Mask2FormerImageProcessor.from_pretrained(tmp_path)
    assert proc.reduce_labels is expected and proc.to_dict()["do_reduce_labels"] is expected


def test_reduce_labels_spellings_are_checked(tmp_path):
    path = tmp_path / "preprocessor_config.json"
    path.write_text(json.dumps({"do_reduce_labels": "yes"}))
    with pytest.raises(ConfigError, match="do_reduce_labels: expected true or false") as error:
        Mask2FormerImageProcessor.from_pretrained(tmp_path)
    assert str(error.value).startswith(f"{path}: ")
    assert Mask2FormerImageProcessor(do_reduce_labels=True).reduce_labels is True


def test_saved_reduce_labels_is_read_under_both_names(tmp_path):
    Mask2FormerImageProcessor(reduce_labels=True, ignore_index=255).save_pretrained(tmp_path)
    written = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert written["reduce_labels"] is True and written["do_reduce_labels"] is True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = _theirs().from_pretrained(str(tmp_path))
    assert ref.reduce_labels is True


def test_their_saved_test_processor_loads(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _theirs()(**TRANSFORMERS_TEST_SETTINGS).save_pretrained(str(tmp_path))
    with pytest.warns(UserWarning, match="disagree"):
        proc = Mask2FormerImageProcessor.from_pretrained(tmp_path)
    # 4.37.2 itself does not reduce labels with these settings (it reads reduce_labels)
    assert proc.reduce_labels is False and proc.num_labels == 10 and proc.size_divisor == 0
    assert proc.image_mean == [0.5, 0.5, 0.5]


def test_subfolder(tmp_path):
    Mask2FormerImageProcessor(size=256).save_pretrained(tmp_path / "processor")
    proc = Mask2FormerImageProcessor.from_pretrained(tmp_path, subfolder="processor")
    assert proc.size["shortest_edge"] == 256
    with pytest.raises(FileNotFoundError):
        Mask2FormerImageProcessor.from_pretrained(tmp_path, subfolder="missing")


def test_from_pretrained_options(tmp_path):
    Mask2FormerImageProcessor(size=256).save_pretrained(tmp_path)
    # transformers' signature, defaults included, keyword or positional name
    proc = Mask2FormerImageProcessor.from_pretrained(
        pretrained_model_name_or_path=tmp_path,
        cache_dir=None,
        force_download=False,
        local_files_only=False,
        token=None,
        revision="main",
        resume_download=False,
    )
    assert proc.size["shortest_edge"] == 256
    # download options do nothing for a local folder, as in transformers
    local = Mask2FormerImageProcessor.from_pretrained(
        tmp_path, revision="v1", cache_dir=str(tmp_path / "cache"), local_files_only=True
    )
    assert local.size["shortest_edge"] == 256
    with pytest.raises(TypeError, match="proxies"):
        Mask2FormerImageProcessor.from_pretrained(tmp_path, proxies={"https": "x:1"})


def test_save_pretrained_options(tmp_path):
    proc = Mask2FormerImageProcessor()
    (path,) = proc.save_pretrained(tmp_path, push_to_hub=False)
    assert path.endswith("preprocessor_config.json")
    with pytest.raises(TypeError, match="safe_serialization"):
        proc.save_pretrained(tmp_path, safe_serialization=True)
    with pytest.raises(NotImplementedError, match="push_to_hub"):
        proc.save_pretrained(tmp_path, push_to_hub=True)


# -- preprocessor_config.json written by transformers 5.x (issue 22, item 7) ---------------------

# The keys transformers 5.25 writes for Mask2FormerImageProcessor(size={"shortest_edge": 384,
# "longest_edge": 1333}, ignore_index=255, num_labels=150, do_reduce_labels=True): None-valued
# settings are left out, no _max_size, do_reduce_labels instead of reduce_labels.
FILE_5X = {
    "do_normalize": True,
    "do_reduce_labels": True,
    "do_rescale": True,
    "do_resize": True,
    "ignore_index": 255,
    "image_mean": [0.485, 0.456, 0.406],
    "image_processor_type": "Mask2FormerImageProcessor",
    "image_std": [0.229, 0.224, 0.225],
    "num_labels": 150,
    "resample": 2,
    "rescale_factor": 0.00392156862745098,
    "size": {"longest_edge": 1333, "shortest_edge": 384},
    "size_divisor": 32,
}


def _write(folder, data):
    path = folder / "preprocessor_config.json"
    path.write_text(json.dumps(data, indent=2))
    return path


@pytest.mark.parametrize(
    "type_name",
    ["Mask2FormerImageProcessor", "Mask2FormerImageProcessorFast", "Mask2FormerImageProcessorPil"],
)
def test_a_5x_file_loads_with_its_meaning(tmp_path, type_name):
    _write(tmp_path, {**FILE_5X, "image_processor_type": type_name})
    proc = Mask2FormerImageProcessor.from_pretrained(tmp_path)
    assert proc.reduce_labels is True and proc.do_reduce_labels is True
    assert proc.num_labels == 150 and proc.ignore_index == 255 and proc.resample == 2
    assert proc.size == {"shortest_edge": 384, "longest_edge": 1333} and proc.size_divisor == 32
    # labels are reduced as 5.x (and 4.37.2 with reduce_labels=True) would
    seg = np.array([[0, 1, 2], [2, 3, 0]])
    out = proc(np.zeros((2, 3, 3), np.uint8), seg, return_tensors="np")
    assert out["class_labels"][0].tolist() == [0, 1, 2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = _theirs()(size=proc.size, ignore_index=255, reduce_labels=True)
    ref_out = ref(np.zeros((2, 3, 3), np.uint8), seg, return_tensors="np")
    assert ref_out["class_labels"][0].tolist() == [0, 1, 2]
    # what we write back reads the same in 4.37.2 (reduce_labels) and 5.x (do_reduce_labels)
    proc.save_pretrained(tmp_path / "again")
    again = json.loads((tmp_path / "again" / "preprocessor_config.json").read_text())
    assert again["reduce_labels"] is True and again["do_reduce_labels"] is True


def test_5x_pad_size_and_fit_inside_size(tmp_path):
    _write(
        tmp_path,
        {
            **FILE_5X,
            "size": {"max_height": 500, "max_width": 600},
            "pad_size": {"height": 640, "width": 640},
            "do_pad": True,
            "disable_grouping": False,
        },
    )
    proc = Mask2FormerImageProcessor.from_pretrained(tmp_path)
    images = [np.zeros((100, 200, 3), np.uint8), np.zeros((300, 100, 3), np.uint8)]
    batch = proc(images, return_tensors="pt")
    # 100x200 scaled by min(500/100, 600/200) = 3 -> 300x600 -> 320x608 (size_divisor 32);
    # 300x100 by min(5/3, 6) -> 500x166 -> 512x192; both padded to pad_size
    assert batch.pixel_values.shape == (2, 3, 640, 640)
    assert batch.pixel_mask[0].sum() == 320 * 608 and batch.pixel_mask[1].sum() == 512 * 192
    with pytest.raises(ValueError, match="larger than pad_size 100x100"):
        proc(images, pad_size={"height": 100, "width": 100})
    written = proc.to_dict()
    assert written["pad_size"] == {"height": 640, "width": 640} and written["do_pad"] is True
    assert "device" not in written  # None-valued 5.x settings are left out, as 5.x does


def test_5x_output_defaults(tmp_path):
    _write(tmp_path, {**FILE_5X, "return_tensors": "pt", "data_format": "channels_last"})
    proc = Mask2FormerImageProcessor.from_pretrained(tmp_path)
    batch = proc(np.zeros((20, 30, 3), np.uint8))
    assert isinstance(batch.pixel_values, torch.Tensor)
    assert batch.pixel_values.shape[-1] == 3
    assert proc(np.zeros((20, 30, 3), np.uint8), return_tensors="np").pixel_values.ndim == 4
    cpu = Mask2FormerImageProcessor(device="cpu")(
        np.zeros((20, 30, 3), np.uint8), return_tensors="pt"
    )
    assert cpu.pixel_values.device.type == "cpu"
    with pytest.raises(ValueError, match="needs return_tensors='pt'"):
        Mask2FormerImageProcessor(device="cpu")(np.zeros((20, 30, 3), np.uint8))


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"do_pad": False}, "do_pad: false is not supported"),
        ({"do_convert_rgb": False}, "do_convert_rgb: false is not supported"),
        ({"default_to_square": True}, "default_to_square: true is not supported"),
        ({"pad_size": {"height": 64}}, "pad_size: expected"),
        ({"pad_size": {"height": 64, "width": 0}}, "pad_size.width: must be"),
        ({"data_format": "NCHW"}, "data_format: unknown data_format"),
        ({"return_tensors": "tf"}, "return_tensors: unknown return_tensors"),
        ({"device": 0}, "device: expected a device name"),
        ({"size": {"max_height": 500}}, "size: expected the keys"),
        ({"disable_grouping": "no"}, "disable_grouping: expected true or false"),
    ],
)
def test_5x_settings_we_do_not_follow_are_errors(tmp_path, changes, message):
    path = _write(tmp_path, {**FILE_5X, **changes})
    with pytest.raises(ConfigError, match=message) as error:
        Mask2FormerImageProcessor.from_pretrained(tmp_path)
    assert str(error.value).startswith(f"{path}: ")


def test_5x_null_settings_are_accepted(tmp_path):
    nulls = {
        "pad_size": None,
        "do_pad": None,
        "do_convert_rgb": None,
        "device": None,
        "return_tensors": None,
        "crop_size": None,
        "do_center_crop": None,
        "input_data_format": None,
        "num_labels": None,
    }
    _write(tmp_path, {**FILE_5X, **nulls})
    proc = Mask2FormerImageProcessor.from_pretrained(tmp_path)
    assert proc.pad_size is None and proc.num_labels is None
    assert proc(np.zeros((20, 30, 3), np.uint8), return_tensors="pt").pixel_values.shape[:2] == (
        1,
        3,
    )


# -- binary_mask_to_rle (issue 22, item 6) -------------------------------------------------------


def _their_rle(mask):
    from transformers.models.mask2former.image_processing_mask2former import binary_mask_to_rle

    return [int(v) for v in binary_mask_to_rle(mask)]


def test_binary_mask_to_rle_is_exported_where_transformers_has_it():
    from mask2former.processing import binary_mask_to_rle as from_package
    from mask2former.processing.image_processor import binary_mask_to_rle as from_module

    assert from_package is from_module


def test_binary_mask_to_rle_example():
    from mask2former.processing import binary_mask_to_rle

    mask = np.zeros((20, 50))
    mask[0, 20:] = 1
    mask[1, :15] = 1
    mask[5, :10] = 1
    rle = binary_mask_to_rle(mask)
    # row 0 from column 20 runs on into row 1: one run of 30 + 15 pixels starting at pixel 21
    assert rle == [21, 45, 251, 10] == _their_rle(mask)
    assert all(type(v) is int for v in rle)


@pytest.mark.parametrize("seed", range(6))
def test_binary_mask_to_rle_matches_transformers(seed):
    from mask2former.processing import binary_mask_to_rle

    rng = np.random.default_rng(seed)
    h, w = rng.integers(1, 40, size=2)
    mask = rng.random((h, w)) < rng.random()
    if seed == 0:
        mask[:] = False
    if seed == 1:
        mask[:] = True
    expected = _their_rle(mask.astype(np.int64))
    assert binary_mask_to_rle(mask) == expected  # bool
    assert binary_mask_to_rle(mask.astype(np.float32)) == expected  # 0.0 / 1.0
    assert binary_mask_to_rle(torch.from_numpy(mask.astype(np.int64))) == expected
    assert _their_rle(torch.from_numpy(mask.astype(np.int64))) == expected


def test_download_options_go_to_the_hub_for_a_hub_id(tmp_path, monkeypatch):
    import mask2former.processing.processor_files as processor_files

    path = Mask2FormerImageProcessor(size=256).save_pretrained(tmp_path)[0]
    calls = []

    def fake_resolve(source, filename, **options):
        calls.append((source, filename, options))
        return path

    monkeypatch.setattr(processor_files, "resolve_file", fake_resolve)
    proc = Mask2FormerImageProcessor.from_pretrained(
        "owner/name", revision="v1", use_auth_token="t", subfolder="proc", force_download=False
    )
    assert proc.size["shortest_edge"] == 256
    assert calls == [
        ("owner/name", "proc/preprocessor_config.json", {"revision": "v1", "token": "t"})
    ]
    with pytest.raises(ValueError, match="not both"):
        Mask2FormerImageProcessor.from_pretrained("owner/name", token="a", use_auth_token="b")
