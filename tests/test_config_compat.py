"""The config API that transformers users touch: config-level output flags, build-then-modify
with ``validate()``, aliases, round trips and files (issue 22)."""

from __future__ import annotations

import json
import os

import pytest
import torch

from mask2former import ConfigError, Mask2FormerConfig, ResNetConfig, SwinConfig

STAGES = ["stage1", "stage2", "stage3", "stage4"]


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


def test_torch_dtype_reads_as_a_torch_dtype_and_is_written_by_name(tmp_path):
    # transformers turns the name into a torch.dtype; code compares it with torch.float16.
    config = Mask2FormerConfig(torch_dtype=torch.bfloat16)
    config.validate()
    assert config.torch_dtype == torch.bfloat16
    assert config.to_dict()["torch_dtype"] == "bfloat16"
    assert Mask2FormerConfig(torch_dtype="float16").torch_dtype == torch.float16
    assert Mask2FormerConfig(torch_dtype="torch.float16").torch_dtype == torch.float16
    config.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["torch_dtype"] == "bfloat16"
    assert Mask2FormerConfig.from_pretrained(tmp_path).torch_dtype == torch.bfloat16
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


# -- transformers' other names for fields ----------------------------------------------------


def test_hidden_size_and_num_hidden_layers_name_the_same_fields():
    config = Mask2FormerConfig(hidden_size=64, num_hidden_layers=3)
    assert (config.hidden_dim, config.decoder_layers) == (64, 3)
    config.hidden_size = 32
    config.num_hidden_layers = 4
    assert (config.hidden_dim, config.decoder_layers) == (32, 4)
    config.hidden_dim = 128
    config.decoder_layers = 6
    assert (config.hidden_size, config.num_hidden_layers) == (128, 6)
    # As transformers' tests build their tiny model: both names, the same value.
    config = Mask2FormerConfig(num_hidden_layers=2, decoder_layers=2, hidden_size=64)
    assert (config.decoder_layers, config.hidden_dim) == (2, 64)
    assert config.to_dict()["num_hidden_layers"] == 2
    assert "hidden_size" not in config.to_dict()


def test_transformers_common_properties_are_settable_without_validation():
    # transformers' ConfigTester sets each common property to its index, then builds with it.
    for index, name in enumerate(["hidden_size", "num_attention_heads", "num_hidden_layers"]):
        config = Mask2FormerConfig()
        setattr(config, name, index)
        assert getattr(config, name) == index
        assert getattr(Mask2FormerConfig(**{name: index}), name) == index


def test_hidden_size_and_hidden_dim_that_disagree_are_an_error():
    with pytest.raises(ConfigError, match="hidden_size: 64 disagrees with hidden_dim=128"):
        Mask2FormerConfig(hidden_size=64, hidden_dim=128)


def test_decoder_layers_wins_over_the_num_hidden_layers_copy_of_a_file(tmp_path):
    # config.json holds num_hidden_layers as a copy of decoder_layers; a file (or a to_dict())
    # whose decoder_layers was changed alone builds that many layers, as transformers does.
    data = Mask2FormerConfig(decoder_layers=6).to_dict()
    assert data["num_hidden_layers"] == 6
    data["decoder_layers"] = 10
    assert Mask2FormerConfig.from_dict(data).decoder_layers == 10
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"decoder_layers": 3, "num_hidden_layers": 9}))
    assert Mask2FormerConfig.from_json_file(path).num_hidden_layers == 3
    assert Mask2FormerConfig().decoder_layers == 10


def test_swin_hidden_size_is_settable_information():
    swin = SwinConfig(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2])
    assert swin.hidden_size == 128  # the last stage's channels, as in transformers
    swin.hidden_size = 16  # transformers' tests do this; the model does not read it
    assert swin.hidden_size == 16
    assert swin.embed_dim == 16 and swin.stage_channels == [16, 32, 64, 128]
    swin.validate()
    assert SwinConfig.from_dict(swin.to_dict()) == swin
    assert SwinConfig(num_attention_heads=[2, 4, 8, 16]).num_heads == [2, 4, 8, 16]
    swin.num_attention_heads = [2, 2, 2, 2]
    assert swin.num_heads == [2, 2, 2, 2]


# -- the schema: every key this library reads is a declared field ----------------------------

EXTRAS = dict(
    task=None,
    stuff_label_ids=None,
    object_mask_threshold=None,
    matcher_class_cost=1.0,
    mask_loss_sampling="points",
)


def test_the_library_fields_are_declared_with_the_readers_defaults():
    config = Mask2FormerConfig()
    for name, default in EXTRAS.items():
        assert getattr(config, name) == default, name
        assert config.to_dict()[name] == default, name
    given = dict(
        task="semantic",
        stuff_label_ids=[1, 2],
        object_mask_threshold=0.4,
        matcher_class_cost=5.0,
        mask_loss_sampling="dense",
    )
    config = Mask2FormerConfig(**given)
    config.validate()
    assert {name: getattr(config, name) for name in given} == given


@pytest.mark.parametrize(
    "name,value,message",
    [
        ("task", "detection", "unknown task 'detection'"),
        ("stuff_label_ids", [0, -1], r"stuff_label_ids\[1\]: must be at least 0"),
        ("object_mask_threshold", 1.5, r"object_mask_threshold: must be in \[0, 1\]"),
        ("matcher_class_cost", "high", "matcher_class_cost: expected a number"),
        ("mask_loss_sampling", "all", "unknown mask_loss_sampling 'all'"),
    ],
)
def test_the_library_fields_are_validated(name, value, message):
    config = Mask2FormerConfig()
    setattr(config, name, value)
    with pytest.raises(ConfigError, match=message):
        config.validate()
    with pytest.raises(ConfigError, match=message):
        Mask2FormerConfig.from_dict({name: value})


def test_the_readers_take_the_declared_fields():
    from mask2former.inference.options import ModelInfo
    from mask2former.loss.criterion import Mask2FormerLoss

    info = ModelInfo.from_config(Mask2FormerConfig())
    assert (info.task, info.object_mask_threshold, info.stuff_label_ids) == ("panoptic", None, ())
    config = Mask2FormerConfig(task="instance", stuff_label_ids=[1], object_mask_threshold=0.3)
    info = ModelInfo.from_config(config)
    assert (info.task, info.object_mask_threshold, info.stuff_label_ids) == ("instance", 0.3, (1,))
    loss = Mask2FormerLoss(Mask2FormerConfig(matcher_class_cost=4.0))
    assert loss.matcher.cost_class == 4.0


def test_unknown_keys_of_a_file_stay_attributes(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"architectures": ["Mask2FormerForUniversalSegmentation"]}))
    config = Mask2FormerConfig.from_json_file(path)
    assert config.architectures == ["Mask2FormerForUniversalSegmentation"]
    assert config.to_dict()["architectures"] == ["Mask2FormerForUniversalSegmentation"]


def test_transformers_generic_keys_keep_their_values_and_defaults():
    # PretrainedConfig's keys mean nothing to the model, but user code reads them.
    config = Mask2FormerConfig(torchscript=True, problem_type="x", num_beams=3, max_length=20)
    assert (config.torchscript, config.problem_type, config.num_beams) == (True, "x", 3)
    assert config.tie_word_embeddings is True and config.pad_token_id is None
    data = config.to_dict()
    assert (data["torchscript"], data["problem_type"], data["num_beams"]) == (True, "x", 3)
    assert "max_length" not in data and "tie_word_embeddings" not in data  # defaults
    assert Mask2FormerConfig.from_dict(data) == config
    assert SwinConfig(torchscript=True).torchscript is True
    config = Mask2FormerConfig.from_dict(Mask2FormerConfig().to_dict(), torchscript=True)
    assert config.torchscript is True
    with pytest.raises(AttributeError, match="no_such_key"):
        getattr(Mask2FormerConfig(), "no_such_key")  # noqa: B009


def test_label2id_ids_written_as_digit_strings_are_read_as_ints():
    # Some hub configs write {"cat": "0"}; transformers accepts them.
    config = Mask2FormerConfig(id2label={0: "cat", 1: "dog"}, label2id={"cat": "0", "dog": "1"})
    config.validate()
    assert config.label2id == {"cat": 0, "dog": 1}
    with pytest.raises(ConfigError, match=r"label2id\['cat'\]: expected an integer"):
        Mask2FormerConfig(id2label={0: "cat"}, label2id={"cat": "zero"}).validate()
    with pytest.raises(ConfigError, match=r"label2id\['cat'\]: 7 is not a class id"):
        Mask2FormerConfig(id2label={0: "cat"}, label2id={"cat": "7"}).validate()


# -- round trips and files -------------------------------------------------------------------


def _changed_config() -> Mask2FormerConfig:
    return Mask2FormerConfig(
        backbone_config=ResNetConfig(
            hidden_sizes=[32, 64, 128, 256],
            depths=[1, 1, 1, 1],
            out_features=["stage1", "stage2", "stage3", "stage4"],
        ),
        num_labels=3,
        num_queries=20,
        decoder_layers=4,
        task="semantic",
        stuff_label_ids=[0],
        output_hidden_states=True,
        architectures=["Mask2FormerForUniversalSegmentation"],
    )


@pytest.mark.parametrize("make", [Mask2FormerConfig, _changed_config])
def test_dict_string_and_file_round_trips(tmp_path, make):
    config = make()
    assert Mask2FormerConfig.from_dict(config.to_dict()) == config
    assert Mask2FormerConfig.from_dict(config.to_diff_dict()) == config
    assert Mask2FormerConfig.from_dict(json.loads(config.to_json_string())) == config
    full = json.loads(config.to_json_string(use_diff=False))
    assert full == json.loads(json.dumps(config.to_dict()))
    for use_diff in (True, False):
        path = tmp_path / f"config-{use_diff}.json"
        config.to_json_file(path, use_diff=use_diff)
        assert Mask2FormerConfig.from_json_file(path) == config
    assert sorted(os.listdir(tmp_path)) == ["config-False.json", "config-True.json"]


def test_the_diff_holds_only_what_changed():
    diff = Mask2FormerConfig(num_queries=20).to_diff_dict()
    assert diff == {"num_queries": 20, "model_type": "mask2former"}
    swin = SwinConfig(embed_dim=48, num_heads=[3, 6, 12, 24])
    assert swin.to_diff_dict() == {"embed_dim": 48, "model_type": "swin"}


def test_from_pretrained_subfolder_and_options(tmp_path):
    config = _changed_config()
    config.save_pretrained(tmp_path / "sub")
    assert Mask2FormerConfig.from_pretrained(tmp_path, subfolder="sub") == config
    assert Mask2FormerConfig.from_pretrained(pretrained_model_name_or_path=tmp_path / "sub") == (
        config
    )
    changed = Mask2FormerConfig.from_pretrained(tmp_path / "sub", num_hidden_layers=6)
    assert changed.decoder_layers == 6
    with pytest.raises(TypeError, match=r"\['output_loading_info'\] are neither fields"):
        Mask2FormerConfig.from_pretrained(tmp_path / "sub", output_loading_info=True)
    loaded, unused = Mask2FormerConfig.from_pretrained(
        tmp_path / "sub", return_unused_kwargs=True, foo=1, num_queries=7
    )
    assert (unused, loaded.num_queries) == ({"foo": 1}, 7)
    SwinConfig(embed_dim=48).save_pretrained(tmp_path / "swin")
    assert SwinConfig.from_pretrained(tmp_path, subfolder="swin").embed_dim == 48
    with pytest.raises(NotImplementedError, match="push_to_hub"):
        config.save_pretrained(tmp_path / "hub", push_to_hub=True)


def test_our_files_load_in_transformers_and_theirs_in_ours(tmp_path):
    transformers = pytest.importorskip("transformers")
    ours = _changed_config()
    ours.backbone_config = SwinConfig(
        embed_dim=32, depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8], out_features=STAGES
    )
    ours.save_pretrained(tmp_path / "ours")
    theirs = transformers.Mask2FormerConfig.from_pretrained(tmp_path / "ours")
    assert (theirs.num_queries, theirs.decoder_layers, theirs.num_labels) == (20, 4, 3)
    assert theirs.backbone_config.embed_dim == 32 and theirs.task == "semantic"
    theirs.to_json_file(tmp_path / "theirs.json")  # the diff, as transformers writes it
    back = Mask2FormerConfig.from_json_file(tmp_path / "theirs.json")
    assert back.to_dict() == ours.to_dict()


def test_the_dtype_key_of_transformers_5_is_torch_dtype(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"dtype": "bfloat16", "model_type": "mask2former"}))
    config = Mask2FormerConfig.from_json_file(path)
    assert config.torch_dtype == torch.bfloat16 and "dtype" not in config.to_dict()


def test_from_dict_takes_changes_and_return_unused_kwargs():
    data = Mask2FormerConfig().to_dict()
    config = Mask2FormerConfig.from_dict(data, num_queries=7, hidden_size=64, num_hidden_layers=3)
    assert (config.num_queries, config.hidden_dim, config.decoder_layers) == (7, 64, 3)
    config, unused = Mask2FormerConfig.from_dict(data, return_unused_kwargs=True, foo=1)
    assert unused == {"foo": 1} and config == Mask2FormerConfig()
    with pytest.raises(TypeError, match=r"from_dict: \['foo'\] are neither fields"):
        Mask2FormerConfig.from_dict(data, foo=1)
    with pytest.raises(ConfigError, match="num_queries: expected an integer"):
        Mask2FormerConfig.from_dict(data, num_queries=2.5)


def test_the_config_checks_transformers_common_tests_make(tmp_path):
    # What transformers' ConfigTester does with a config class, written out here.
    assert Mask2FormerConfig.is_composition is False
    config = Mask2FormerConfig(num_labels=5)
    assert len(config.id2label) == len(config.label2id) == 5
    config.num_labels = 3
    assert len(config.id2label) == len(config.label2id) == 3
    with pytest.raises(OSError):
        Mask2FormerConfig.from_pretrained(f".{tmp_path}")
