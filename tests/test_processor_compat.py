"""Mask2FormerImageProcessor as transformers users handle it: dict, JSON string and file round
trips, from_pretrained/save_pretrained options, unknown keys as attributes (issue 22), with
transformers 4.37.2 as the oracle."""

from __future__ import annotations

import json
import warnings

import pytest
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
