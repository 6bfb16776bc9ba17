"""ResNet backbone: parity with transformers 4.37.2 in both directions, config, training step."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from mask2former import (
    ConfigError,
    Mask2FormerConfig,
    Mask2FormerForUniversalSegmentation,
    ResNetConfig,
    SwinConfig,
)
from mask2former.modeling.backbone import build_backbone
from mask2former.modeling.resnet import ResNetBackbone

from .reference_models import assert_close_tree, center_mask_features, randomize

ATOL = 1e-4
STAGES = ["stage1", "stage2", "stage3", "stage4"]
TINY_RESNET = dict(
    embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], out_features=STAGES
)
TINY_HEAD = dict(
    num_labels=5,
    feature_size=64,
    mask_feature_size=64,
    hidden_dim=64,
    encoder_layers=1,
    decoder_layers=3,
    num_attention_heads=4,
    num_queries=8,
    dim_feedforward=96,
    encoder_feedforward_dim=96,
    train_num_points=400,
)

CASES = {
    # name: (backbone overrides, batch, height, width)
    "basic": ({"layer_type": "basic"}, 1, 64, 64),
    "bottleneck": ({"layer_type": "bottleneck"}, 1, 64, 64),
    # hidden_act reaches only the stem and the residual sums; odd sizes round up at each stride.
    "bottleneck_stride_in_1x1_gelu": (
        {
            "layer_type": "bottleneck",
            "downsample_in_bottleneck": True,
            "hidden_act": "gelu",
            "depths": [1, 2, 1, 1],
        },
        2,
        70,
        50,
    ),
}


@torch.no_grad()
def randomize_batchnorm_stats(model: nn.Module, seed: int = 0) -> None:
    """Running statistics far from (0, 1), so eval-mode BatchNorm changes the numbers."""
    gen = torch.Generator().manual_seed(seed + 1000)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(0.3 * torch.randn(m.running_mean.shape, generator=gen))
            m.running_var.copy_(0.5 + 1.5 * torch.rand(m.running_var.shape, generator=gen))
            m.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=gen)))


def _reference_resnet(tmp_path, seed: int = 0, **backbone_overrides):
    """A randomized transformers Mask2Former with a ResNet backbone, saved; (model, folder)."""
    from transformers import Mask2FormerConfig as RefConfig
    from transformers import Mask2FormerForUniversalSegmentation as RefModel
    from transformers import ResNetConfig as RefResNet

    backbone = RefResNet(**{**TINY_RESNET, **backbone_overrides})
    torch.manual_seed(seed)
    model = RefModel(RefConfig(backbone_config=backbone, **TINY_HEAD))
    randomize(model, seed=seed).eval()
    randomize_batchnorm_stats(model, seed)
    center_mask_features(model.model, size=64)
    folder = tmp_path / "ref"
    model.save_pretrained(folder)
    return model, folder


def _ours(seed: int = 0, **backbone_overrides) -> Mask2FormerForUniversalSegmentation:
    backbone = ResNetConfig(**{**TINY_RESNET, "layer_type": "basic", **backbone_overrides})
    torch.manual_seed(seed)
    return Mask2FormerForUniversalSegmentation(
        Mask2FormerConfig(backbone_config=backbone, **TINY_HEAD)
    )


def _compare(ref_out, our_out) -> None:
    assert set(ref_out.keys()) == set(our_out.keys())
    for key in ref_out.keys():
        assert_close_tree(ref_out[key], our_out[key], ATOL, key)


@pytest.mark.parametrize("case", sorted(CASES))
def test_loads_transformers_checkpoint_with_identical_outputs(tmp_path, case):
    overrides, batch, height, width = CASES[case]
    ref, folder = _reference_resnet(tmp_path, **overrides)
    ours = Mask2FormerForUniversalSegmentation.from_pretrained(folder)  # strict: raises on misfit
    assert isinstance(ours.model.pixel_level_module.encoder, ResNetBackbone)
    saved_keys = set(load_file(folder / "model.safetensors"))
    assert saved_keys == set(ours.state_dict())
    assert any(k.endswith("running_var") for k in saved_keys)

    torch.manual_seed(1)
    pixels = torch.randn(batch, 3, height, width)
    with torch.no_grad():
        ref_out = ref(pixels, output_hidden_states=True)
        our_out = ours(pixels, output_hidden_states=True)
    _compare(ref_out, our_out)
    strides = [4, 8, 16, 32]
    for feature, stride, width_ in zip(our_out.encoder_hidden_states, strides, [16, 32, 64, 128]):
        assert feature.shape == (batch, width_, -(-height // stride), -(-width // stride))
    # The masked attention must really block something, or the comparison proves little.
    assert 0.05 < (our_out.masks_queries_logits < 0).float().mean() < 0.95
    # The running statistics are in use: batch statistics would give other features.
    with torch.no_grad():
        eval_features = ours.model.pixel_level_module.encoder(pixels)
        train_features = ours.model.pixel_level_module.encoder.train()(pixels)
    assert (eval_features[-1] - train_features[-1]).abs().max() > 1e-2


def test_our_checkpoint_loads_in_transformers(tmp_path):
    from transformers import Mask2FormerForUniversalSegmentation as RefModel

    ours = _ours(seed=2, layer_type="bottleneck", depths=[2, 1, 1, 2])
    with torch.no_grad():
        randomize(ours, seed=2)
        randomize_batchnorm_stats(ours, seed=2)
    ours.eval()
    ours.save_pretrained(tmp_path / "ours")
    data = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert data["backbone_config"]["model_type"] == "resnet"
    ref, info = RefModel.from_pretrained(tmp_path / "ours", output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    assert info["mismatched_keys"] == []
    assert ref.config.backbone_config.model_type == "resnet"
    assert ref.config.backbone_config.layer_type == "bottleneck"
    ref.eval()
    pixels = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        _compare(ref(pixels), ours(pixels))


def test_backbone_shapes_and_channels():
    backbone = build_backbone(ResNetConfig(**TINY_RESNET, layer_type="basic"))
    assert isinstance(backbone, ResNetBackbone)
    assert backbone.channels == [16, 32, 64, 128]
    features = backbone.eval()(torch.randn(2, 3, 64, 96))
    assert [tuple(f.shape) for f in features] == [
        (2, 16, 16, 24),
        (2, 32, 8, 12),
        (2, 64, 4, 6),
        (2, 128, 2, 3),
    ]
    with_stem = build_backbone(ResNetConfig(**{**TINY_RESNET, "out_features": ["stem", "stage2"]}))
    assert with_stem.channels == [16, 32]
    assert [f.shape[1] for f in with_stem.eval()(torch.randn(1, 3, 32, 32))] == [16, 32]


def test_config_round_trip(tmp_path):
    backbone = ResNetConfig(**TINY_RESNET, layer_type="basic", hidden_act="gelu")
    config = Mask2FormerConfig(backbone_config=backbone, num_labels=3)
    again = Mask2FormerConfig.from_dict(config.to_dict())
    assert again == config and isinstance(again.backbone_config, ResNetConfig)
    config.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["backbone_config"]["model_type"] == "resnet"
    assert data["backbone_config"]["out_indices"] == [1, 2, 3, 4]
    loaded = Mask2FormerConfig.from_pretrained(tmp_path)
    assert loaded == config
    assert loaded.backbone_config.hidden_sizes == [16, 32, 64, 128]
    assert loaded.backbone_config.layer_type == "basic"
    # A dict is dispatched on its model_type; one without model_type is read as Swin.
    as_dict = Mask2FormerConfig(backbone_config=backbone.to_dict(), num_labels=3)
    assert as_dict == config
    swin = dict(SwinConfig(out_features=STAGES).to_dict())
    swin.pop("model_type")
    assert isinstance(Mask2FormerConfig(backbone_config=swin).backbone_config, SwinConfig)
    assert ResNetConfig(out_indices=[1, 2, 3, 4]).out_features == STAGES
    assert ResNetConfig().out_features == ["stage4"]


def test_config_is_read_and_written_like_transformers(tmp_path):
    import transformers

    ref_backbone = transformers.ResNetConfig(**TINY_RESNET, layer_type="basic")
    ref = transformers.Mask2FormerConfig(backbone_config=ref_backbone, num_labels=4)
    ref.save_pretrained(tmp_path / "ref")
    ours = Mask2FormerConfig.from_pretrained(tmp_path / "ref")
    bb = ours.backbone_config
    assert isinstance(bb, ResNetConfig)
    assert (bb.embedding_size, bb.hidden_sizes, bb.depths, bb.layer_type) == (
        16,
        [16, 32, 64, 128],
        [1, 1, 1, 1],
        "basic",
    )
    assert bb.out_features == STAGES
    ours.save_pretrained(tmp_path / "ours")
    back = transformers.Mask2FormerConfig.from_pretrained(tmp_path / "ours").backbone_config
    assert isinstance(back, transformers.ResNetConfig)
    fields = ResNetConfig._fields
    assert {k: getattr(back, k) for k in fields} == {k: getattr(ref_backbone, k) for k in fields}


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(layer_type="wide"), "unknown layer_type 'wide'"),
        (dict(hidden_sizes=[8, 16], depths=[1, 1, 1]), "same length"),
        (dict(depths=[1, 0, 1, 1]), "at least one layer"),
        (dict(out_features=["stage1", "stage9"]), r"\['stage9'\] are not stages"),
        (dict(out_features=["stage2", "stage1"]), "stage order"),
        (dict(out_indices=[1, 7]), "out of range"),
        (dict(out_features=["stage1"], out_indices=[2]), "name different stages"),
        (dict(hidden_act="mish"), "unknown hidden_act 'mish'"),
        (dict(layer_type="bottleneck", hidden_sizes=[2, 8, 16, 32]), "at least 4"),
        (dict(embedding_size=0), "must be positive"),
    ],
)
def test_resnet_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ResNetConfig(**kwargs).validate()


def test_mask2former_config_backbone_errors():
    with pytest.raises(ConfigError, match="'convnext'"):
        Mask2FormerConfig(backbone_config={"model_type": "convnext"}).validate()
    with pytest.raises(ConfigError, match="4-stage"):
        # out_features: the last stage only
        Mask2FormerConfig(backbone_config=ResNetConfig()).validate()
    with pytest.raises(ConfigError, match="downsample_in_first_stage"):
        Mask2FormerConfig(
            backbone_config=ResNetConfig(out_features=STAGES, downsample_in_first_stage=True)
        ).validate()
    with pytest.raises(ConfigError, match="ResNetConfig"):
        Mask2FormerConfig(backbone_config=object()).validate()


def test_from_scratch_init_and_training_step():
    model = _ours(seed=0, layer_type="bottleneck")
    stem = model.model.pixel_level_module.encoder.embedder.embedder
    fan_out = 16 * 7 * 7  # 16 filters of 7x7
    expected = math.sqrt(2.0 / fan_out)
    assert abs(stem.convolution.weight.std().item() / expected - 1) < 0.15
    assert torch.equal(stem.normalization.weight, torch.ones(16))
    assert torch.equal(stem.normalization.bias, torch.zeros(16))

    model.train()
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randn(2, 3, 64, 64, generator=gen)
    masks = [(torch.rand(n, 64, 64, generator=gen) > 0.5).float() for n in (2, 3)]
    classes = [torch.tensor([0, 3]), torch.tensor([1, 1, 4])]
    out = model(pixels, mask_labels=masks, class_labels=classes)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    grads = [p.grad for p in model.model.pixel_level_module.encoder.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert stem.convolution.weight.grad.abs().sum() > 0
    assert int(stem.normalization.num_batches_tracked) == 1  # batch statistics were used
