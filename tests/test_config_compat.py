"""The config API that transformers users touch: config-level output flags, build-then-modify
with ``validate()``, aliases, round trips and files (issue 22)."""

from __future__ import annotations

import pytest
import torch

from mask2former import ConfigError, Mask2FormerConfig


def test_output_flags_are_declared_fields_with_transformers_defaults():
    config = Mask2FormerConfig()
    assert config.output_hidden_states is False
    assert config.output_attentions is False
    assert config.return_dict is True
    assert config.use_return_dict is True
    assert config.torch_dtype is None
    data = config.to_dict()
    assert (data["output_hidden_states"], data["output_attentions"], data["return_dict"]) == (
        False,
        False,
        True,
    )


def test_output_flags_survive_a_round_trip(tmp_path):
    config = Mask2FormerConfig(output_hidden_states=True, output_attentions=True, return_dict=False)
    assert config.use_return_dict is False
    config.save_pretrained(tmp_path)
    loaded = Mask2FormerConfig.from_pretrained(tmp_path)
    assert (loaded.output_hidden_states, loaded.output_attentions, loaded.return_dict) == (
        True,
        True,
        False,
    )


def test_torch_dtype_is_stored_by_name():
    assert Mask2FormerConfig(torch_dtype=torch.bfloat16).torch_dtype == "bfloat16"
    assert Mask2FormerConfig(torch_dtype="float16").torch_dtype == "float16"
    with pytest.raises(ConfigError, match="torch_dtype"):
        Mask2FormerConfig(torch_dtype="int8")


@pytest.mark.parametrize("name", ["output_hidden_states", "output_attentions", "return_dict"])
def test_output_flags_must_be_booleans(name):
    with pytest.raises(ConfigError, match=name):
        Mask2FormerConfig(**{name: 1})
