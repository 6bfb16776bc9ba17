"""Config fields, defaults, config.json in the published layout, validation."""

from __future__ import annotations

import json
import os

import pytest

from mask2former import ConfigError, Mask2FormerConfig, ResNetConfig, SwinConfig
from mask2former.hub import BUILTIN_MODELS_DIR

API_DEFAULTS = dict(
    feature_size=256,
    mask_feature_size=256,
    hidden_dim=256,
    encoder_feedforward_dim=1024,
    activation_function="relu",
    encoder_layers=6,
    decoder_layers=10,
    num_attention_heads=8,
    dropout=0.0,
    dim_feedforward=2048,
    pre_norm=False,
    enforce_input_projection=False,
    common_stride=4,
    ignore_value=255,
    num_queries=100,
    no_object_weight=0.1,
    class_weight=2.0,
    mask_weight=5.0,
    dice_weight=5.0,
    train_num_points=12544,
    oversample_ratio=3.0,
    importance_sample_ratio=0.75,
    init_std=0.02,
    init_xavier_std=1.0,
    use_auxiliary_loss=True,
    feature_strides=[4, 8, 16, 32],
    output_auxiliary_logits=None,
)


def test_defaults_follow_the_api():
    config = Mask2FormerConfig()
    for name, value in API_DEFAULTS.items():
        assert getattr(config, name) == value, name
    bb = config.backbone_config
    assert (bb.embed_dim, bb.depths, bb.num_heads, bb.window_size) == (
        96,
        [2, 2, 18, 2],
        [3, 6, 12, 24],
        7,
    )
    assert bb.drop_path_rate == 0.3
    assert bb.out_features == ["stage1", "stage2", "stage3", "stage4"]


def test_num_labels_comes_from_id2label():
    config = Mask2FormerConfig(id2label={"0": "cat", "1": "dog", "2": "sky"})
    assert config.num_labels == 3 and config.id2label[2] == "sky"
    assert config.label2id == {"cat": 0, "dog": 1, "sky": 2}
    assert Mask2FormerConfig(num_labels=7).num_labels == 7
    with pytest.raises(ConfigError, match="disagrees"):
        Mask2FormerConfig(num_labels=4, id2label={0: "a"})


def test_json_round_trip_and_layout(tmp_path):
    config = Mask2FormerConfig(num_labels=3, pre_norm=True, architectures=["X"])
    path = config.save_pretrained(tmp_path)
    data = json.loads(open(path).read())
    assert data["model_type"] == "mask2former"
    assert data["backbone_config"]["model_type"] == "swin"
    assert set(data["id2label"]) == {"0", "1", "2"}
    assert data["architectures"] == ["X"]
    again = Mask2FormerConfig.from_pretrained(tmp_path)
    assert again == config


def test_reads_and_is_read_by_transformers(tmp_path):
    import transformers

    ref = transformers.Mask2FormerConfig(num_labels=4, hidden_dim=128, decoder_layers=7)
    ref.save_pretrained(tmp_path / "ref")
    ours = Mask2FormerConfig.from_pretrained(tmp_path / "ref")
    assert (ours.num_labels, ours.hidden_dim, ours.decoder_layers) == (4, 128, 7)
    assert ours.backbone_config.depths == [2, 2, 18, 2]
    ours.save_pretrained(tmp_path / "ours")
    back = transformers.Mask2FormerConfig.from_pretrained(tmp_path / "ours")
    assert back.to_dict()["backbone_config"]["depths"] == [2, 2, 18, 2]
    for name in API_DEFAULTS:
        assert getattr(back, name) == getattr(ours, name), name
    assert back.id2label == ours.id2label


def test_from_backbone_config():
    bb = SwinConfig(
        embed_dim=64, depths=[2, 2, 2, 2], num_heads=[2, 4, 8, 16], out_indices=[1, 2, 3, 4]
    )
    config = Mask2FormerConfig.from_backbone_config(bb, num_labels=5)
    assert config.backbone_config.out_features == ["stage1", "stage2", "stage3", "stage4"]
    assert config.num_labels == 5


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(feature_size=100), "GroupNorm"),
        (dict(mask_feature_size=48), "GroupNorm"),
        (dict(hidden_dim=96, num_attention_heads=5), "must divide hidden_dim"),
        (dict(decoder_layers=0), "decoder_layers"),
        (dict(activation_function="nope"), "activation"),
        (dict(backbone_config={"model_type": "convnext"}), "model_type 'convnext'"),
    ],
)
def test_validation_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Mask2FormerConfig(**kwargs).validate()


def test_swin_validation():
    with pytest.raises(ConfigError, match="heads do not divide"):
        SwinConfig(embed_dim=96, num_heads=[5, 6, 12, 24]).validate()
    with pytest.raises(ConfigError, match="same length"):
        SwinConfig(depths=[2, 2], num_heads=[3, 6, 12]).validate()
    with pytest.raises(ConfigError, match="4-stage"):
        Mask2FormerConfig(backbone_config=SwinConfig(out_features=["stage4"])).validate()


# -- field-by-field validation (issue 20, item 12) ---------------------------------------------

SHAPES_CONFIG = os.path.join(BUILTIN_MODELS_DIR, "shapes", "config.json")


def _write_config(folder, **changes):
    """The built-in model's config.json with ``changes`` (``backbone_config`` entries merged)."""
    with open(SHAPES_CONFIG, encoding="utf-8") as f:
        data = json.load(f)
    backbone = changes.pop("backbone_config", None)
    if backbone is not None:
        data["backbone_config"].update(backbone)
    data.update(changes)
    path = folder / "config.json"
    path.write_text(json.dumps(data))
    return str(path)


@pytest.mark.parametrize(
    "changes,message",
    [
        (dict(num_queries=20.5), "num_queries: expected an integer, got 20.5"),
        (dict(id2label=[]), "id2label: expected an object"),
        (dict(dim_feedforward=-1), "dim_feedforward: must be positive, got -1"),
        (dict(class_weight=None), "class_weight: expected a number, got None"),
        (dict(decoder_layers=1e12), "decoder_layers: expected an integer"),
        (dict(decoder_layers=10**12), "decoder_layers: must be at most 1000"),
        (dict(hidden_dim=10**9), "hidden_dim: must be at most"),
        (dict(dropout=1.0), r"dropout: must be in \[0, 1\), got 1.0"),
        (dict(pre_norm="false"), "pre_norm: expected true or false"),
        (dict(importance_sample_ratio=1.5), r"importance_sample_ratio: must be in \[0, 1\]"),
        (dict(mask_weight=1e308), "mask_weight: must be in"),
        (dict(id2label={"0": "a", "x": "b"}), "id2label key: expected an integer class id"),
        (dict(id2label={"0": "a", "2": "b"}), "id2label: keys must be 0..num_labels-1"),
        (dict(label2id={"circle": 8}), r"label2id\['circle'\]: 8 is not a class id of id2label"),
        (dict(object_mask_threshold=1.5), r"object_mask_threshold: must be in \[0, 1\]"),
        (dict(task="panoptics"), "task: unknown task 'panoptics'"),
        (dict(stuff_label_ids=[5, "6"]), r"stuff_label_ids\[1\]: expected an integer"),
        (dict(mask_loss_sampling="all"), "mask_loss_sampling: unknown"),
        (dict(backbone_config={"depths": [1, 1, 1.5, 1]}), r"backbone_config.depths\[2\]"),
        (dict(backbone_config={"hidden_sizes": [32, 64, 128, 10**6]}), "backbone_config.hidden"),
        (dict(backbone_config={"model_type": "vit"}), "backbone_config.model_type"),
        (dict(model_type="maskformer"), "model_type: Mask2FormerConfig expects 'mask2former'"),
        (dict(validate=1), "validate: not a field"),
    ],
)
def test_bad_fields_in_a_file_name_the_file_and_the_field(tmp_path, changes, message):
    # Refused by validation, before anything is built (the fuzz test guards against hangs).
    path = _write_config(tmp_path, **changes)
    with pytest.raises(ConfigError, match=message) as error:
        Mask2FormerConfig.from_pretrained(tmp_path)
    assert str(error.value).startswith(f"{path}: ")
    with pytest.raises(ConfigError, match=message):
        Mask2FormerConfig.from_json_file(path)


@pytest.mark.parametrize(
    "text,message",
    [("[1, 2]", "expected a JSON object"), ("{", "not valid JSON"), ("\xff", "not valid JSON")],
)
def test_unreadable_files_name_the_file(tmp_path, text, message):
    path = tmp_path / "config.json"
    path.write_text(text, encoding="latin-1")
    with pytest.raises(ConfigError, match=message) as error:
        Mask2FormerConfig.from_pretrained(tmp_path)
    assert str(error.value).startswith(f"{path}: ")


def test_from_pretrained_overrides_are_validated(tmp_path):
    path = _write_config(tmp_path)
    with pytest.raises(ConfigError) as error:
        Mask2FormerConfig.from_pretrained(tmp_path, num_queries=2.5)
    assert str(error.value) == (
        f"{path} with overrides ['num_queries']: num_queries: expected an integer, got 2.5"
    )
    config = Mask2FormerConfig.from_pretrained(tmp_path, num_queries=7, pre_norm=True)
    assert (config.num_queries, config.pre_norm, config.num_labels) == (7, True, 8)
    relabelled = Mask2FormerConfig.from_pretrained(tmp_path, num_labels=3)
    assert relabelled.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
    assert relabelled.label2id == {"LABEL_0": 0, "LABEL_1": 1, "LABEL_2": 2}
    named = Mask2FormerConfig.from_pretrained(tmp_path, id2label={0: "x"})
    assert named.label2id == {"x": 0}


def test_validate_checks_fields_changed_after_construction():
    config = Mask2FormerConfig()
    config.num_queries = 20.5
    with pytest.raises(ConfigError, match="num_queries: expected an integer"):
        config.validate()
    config = Mask2FormerConfig()
    config.backbone_config.window_size = 10**6
    with pytest.raises(ConfigError, match="backbone_config.window_size: must be at most"):
        config.validate()
    with pytest.raises(ConfigError, match="num_labels: expected an integer"):
        config.num_labels = 1e12


def test_canonical_values():
    config = Mask2FormerConfig(class_weight=2, feature_strides=(4, 8, 16, 32))
    config.validate()
    assert config.class_weight == 2.0 and isinstance(config.class_weight, float)
    assert config.feature_strides == [4, 8, 16, 32]
    swin = SwinConfig(depths=(2, 2, 2, 2), num_heads=(3, 6, 12, 24))
    swin.validate()
    assert swin.depths == [2, 2, 2, 2] and swin.num_heads == [3, 6, 12, 24]


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(embed_dim=20.5), "embed_dim: expected an integer"),
        (dict(embed_dim=4096), "embed_dim: stage 4 would have 32768 channels"),
        (dict(depths=[2, 2, 1000, 2]), "depths: 1006 blocks in all"),
        (dict(depths="2222"), "depths: expected a list"),
        (dict(window_size=10**6), "window_size: must be at most 32"),
        (dict(mlp_ratio=None), "mlp_ratio: expected a number"),
        (dict(drop_path_rate=1.0), r"drop_path_rate: must be in \[0, 1\)"),
        (dict(layer_norm_eps=0), r"layer_norm_eps: must be in \(0, 1\]"),
        (dict(qkv_bias=1), "qkv_bias: expected true or false"),
        (dict(image_size=[224]), "image_size: expected 2 entries"),
        (dict(out_indices=[1.0]), r"out_indices\[0\]: expected an integer"),
        (dict(out_features=["stage1"], out_indices=[2]), "name different stages"),
        (dict(use_absolute_embeddings=True), "use_absolute_embeddings: true is not supported"),
    ],
)
def test_swin_field_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        SwinConfig(**kwargs).validate()


def test_mask2former_needs_stride_4_patches():
    stages = ["stage1", "stage2", "stage3", "stage4"]
    backbone = {"model_type": "swin", "patch_size": 8, "out_features": stages}
    with pytest.raises(ConfigError, match="backbone_config.patch_size: 8 gives the stages"):
        Mask2FormerConfig(backbone_config=backbone).validate()


def test_every_field_has_a_check():
    modelled_apart = {"backbone_config", "id2label", "label2id"}
    assert set(Mask2FormerConfig._fields) - modelled_apart == set(Mask2FormerConfig._checks)
    for cls in (SwinConfig, ResNetConfig):
        assert set(cls._fields) == set(cls._checks), cls.__name__


def test_save_pretrained_replaces_a_symlink_instead_of_writing_through_it(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    folder = tmp_path / "model"
    folder.mkdir()
    os.symlink(victim, folder / "config.json")
    path = Mask2FormerConfig(num_labels=2).save_pretrained(folder)
    assert victim.read_text() == "keep"
    assert not os.path.islink(path)
    assert Mask2FormerConfig.from_pretrained(folder).num_labels == 2
    assert [p.name for p in folder.iterdir()] == ["config.json"]  # no temporary file left


def test_optional_keys_accept_what_their_readers_accept():
    """The config checks the optional keys against copies of their readers' lists (so that
    reading a config imports neither the predictor nor the loss); they must not drift apart."""
    from mask2former import config
    from mask2former.checkpoint import _DTYPES
    from mask2former.loss.criterion import MASK_LOSS_SAMPLING
    from mask2former.predictor import TASKS

    assert config.TASKS == TASKS
    assert config.MASK_LOSS_SAMPLING == MASK_LOSS_SAMPLING
    assert {name.replace("torch.", "") for name in config.DTYPES} == set(_DTYPES)
