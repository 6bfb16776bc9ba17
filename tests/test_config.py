"""Config fields, defaults, config.json in the published layout, validation."""

from __future__ import annotations

import json

import pytest

from mask2former import ConfigError, Mask2FormerConfig, SwinConfig

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
        Mask2FormerConfig(**kwargs)


def test_swin_validation():
    with pytest.raises(ConfigError, match="heads do not divide"):
        SwinConfig(embed_dim=96, num_heads=[5, 6, 12, 24])
    with pytest.raises(ConfigError, match="same length"):
        SwinConfig(depths=[2, 2], num_heads=[3, 6, 12])
    with pytest.raises(ConfigError, match="4-stage"):
        Mask2FormerConfig(backbone_config=SwinConfig(out_features=["stage4"]))
