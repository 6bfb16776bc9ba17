"""The config API that transformers users touch: config-level output flags, build-then-modify
with ``validate()``, aliases, round trips and files (issue 22)."""

from __future__ import annotations

import json

import pytest
import torch

from mask2former import ConfigError, Mask2FormerConfig, ResNetConfig, SwinConfig


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
    config = Mask2FormerConfig(torch_dtype=torch.bfloat16)
    config.validate()
    assert config.torch_dtype == "bfloat16"
    assert Mask2FormerConfig(torch_dtype="float16").torch_dtype == "float16"
    with pytest.raises(ConfigError, match="torch_dtype"):
        Mask2FormerConfig(torch_dtype="int8").validate()


@pytest.mark.parametrize("name", ["output_hidden_states", "output_attentions", "return_dict"])
def test_output_flags_must_be_booleans(name):
    with pytest.raises(ConfigError, match=name):
        Mask2FormerConfig(**{name: 1}).validate()


# -- build, then modify, then validate -------------------------------------------------------


def test_a_config_can_be_built_invalid_and_fixed_before_validation():
    # transformers' own tests build with feature_size=16 (not a multiple of GroupNorm's 32
    # groups) and set the real sizes afterwards.
    config = Mask2FormerConfig(feature_size=16, num_attention_heads=4)
    with pytest.raises(ConfigError, match="feature_size: 16"):
        config.validate()
    config.feature_size = 64
    config.mask_feature_size = 64
    config.hidden_dim = 64
    config.backbone_config.embed_dim = 16
    config.backbone_config.depths = [1, 1, 1, 1]
    config.backbone_config.num_heads = [1, 1, 2, 2]
    config.validate()
    config.hidden_dim = 30  # 4 heads do not divide it
    with pytest.raises(ConfigError, match="num_attention_heads: 4 must divide hidden_dim=30"):
        config.validate()


def test_backbone_configs_validate_on_demand():
    swin = SwinConfig(embed_dim=96, num_heads=[5, 6, 12, 24])
    with pytest.raises(ConfigError, match="heads do not divide"):
        swin.validate()
    swin.num_heads = [3, 6, 12, 24]
    swin.validate()
    resnet = ResNetConfig(hidden_sizes=[1, 2, 3, 4])
    with pytest.raises(ConfigError, match="hidden_sizes"):
        resnet.validate()
    config = Mask2FormerConfig(backbone_config={"model_type": "swin", "window_size": 10**6})
    with pytest.raises(ConfigError, match="backbone_config.window_size: must be at most"):
        config.validate()


def test_from_dict_and_files_still_validate_at_once(tmp_path):
    with pytest.raises(ConfigError, match="feature_size: 16"):
        Mask2FormerConfig.from_dict({"feature_size": 16})
    with pytest.raises(ConfigError, match="backbone_config.window_size: must be at most"):
        Mask2FormerConfig.from_dict({"backbone_config": {"window_size": 10**6}})
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "mask2former", "hidden_dim": 30}))
    with pytest.raises(ConfigError) as error:
        Mask2FormerConfig.from_json_file(path)
    assert str(error.value).startswith(f"{path}: num_attention_heads: 8 must divide")
