"""Model architectures for training from scratch, by name."""

from __future__ import annotations

from typing import Dict

from ..config import Mask2FormerConfig, ResNetConfig, SwinConfig

__all__ = ["PRESETS", "model_config", "preset_config"]


def _shapes_tiny(id2label: Dict[int, str]) -> Mask2FormerConfig:
    """A ~1.8M-parameter Mask2Former (Swin widths 32..256, 64-wide decoder) sized to train on
    2 CPU cores. Trained from scratch it does not learn the shapes' classes in that budget; the
    built-in model uses ``shapes-resnet`` (see mask2former/weights/shapes/RECIPE.md)."""
    backbone = SwinConfig(
        embed_dim=32,
        depths=[1, 1, 2, 1],
        num_heads=[1, 2, 4, 8],
        window_size=7,
        drop_path_rate=0.1,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    return Mask2FormerConfig(
        backbone_config=backbone,
        id2label=id2label,
        feature_size=64,
        mask_feature_size=64,
        hidden_dim=64,
        num_attention_heads=4,
        encoder_layers=2,
        encoder_feedforward_dim=256,
        decoder_layers=4,
        dim_feedforward=256,
        num_queries=20,
        train_num_points=2048,
        # At 256 px the stride-4 masks have 64x64 cells: comparing every cell is cheaper than
        # the point sampling and learns far faster (RECIPE.md of the built-in model).
        mask_loss_sampling="dense",
    )


def _shapes_resnet(id2label: Dict[int, str]) -> Mask2FormerConfig:
    """The built-in model: ``shapes-tiny`` with a basic-block ResNet (widths 32..256, one
    layer per stage, 1.2M parameters) in place of the Swin. Its convolutions learn outlines
    from scratch far faster than the Swin's attention does."""
    config = _shapes_tiny(id2label)
    config.backbone_config = ResNetConfig(
        embedding_size=32,
        hidden_sizes=[32, 64, 128, 256],
        depths=[1, 1, 1, 1],
        layer_type="basic",
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    return config


def _swin_tiny(id2label: Dict[int, str]) -> Mask2FormerConfig:
    """The published Swin-T architecture (train from scratch only with a lot of compute)."""
    backbone = SwinConfig(
        embed_dim=96,
        depths=[2, 2, 6, 2],
        num_heads=[3, 6, 12, 24],
        window_size=7,
        drop_path_rate=0.3,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    return Mask2FormerConfig(backbone_config=backbone, id2label=id2label)


PRESETS = {"shapes-tiny": _shapes_tiny, "shapes-resnet": _shapes_resnet, "swin-tiny": _swin_tiny}


def preset_config(name: str, id2label: Dict[int, str]) -> Mask2FormerConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name](id2label)


def model_config(spec: str, id2label: Dict[int, str]) -> Mask2FormerConfig:
    """The architecture ``spec`` names (a preset, or a config.json path) for these labels."""
    if spec in PRESETS:
        return preset_config(spec, id2label)
    loaded = Mask2FormerConfig.from_json_file(spec)
    return Mask2FormerConfig.from_dict({**loaded.to_dict(), "id2label": id2label, "label2id": None})
