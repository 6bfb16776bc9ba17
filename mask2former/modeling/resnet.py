"""ResNet backbone (He et al., 2016) returning the outputs of its four stages.

Attribute names follow the keys of transformers' ``ResNetBackbone`` under
``model.pixel_level_module.encoder`` (``embedder.embedder.*``, ``encoder.stages.{i}.layers.{j}``
with ``shortcut`` and ``layer.{k}``, each a ``convolution`` + ``normalization`` pair), so a
checkpoint written by transformers loads here and gives the same numbers, and the reverse.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..config import ResNetConfig
from .activations import get_activation
from .grad_checkpoint import run_block

__all__ = ["ResNetBackbone", "build_resnet_backbone"]

# The reference applies ``hidden_act`` only in the stem and after each residual sum; the
# convolutions inside a layer always use ReLU. Kept, so that checkpoints give the same numbers.
INNER_ACT = "relu"
BOTTLENECK_REDUCTION = 4


class ConvNormAct(nn.Module):
    """Bias-free convolution, BatchNorm, optional activation.

    (B, C_in, H, W) -> (B, C_out, ceil(H / stride), ceil(W / stride)); "same" padding for odd
    kernels.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        act: Optional[str] = INNER_ACT,
    ):
        super().__init__()
        self.convolution = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size=kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            bias=False,
        )
        self.normalization = nn.BatchNorm2d(out_channels)
        self.activation = get_activation(act) if act is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.normalization(self.convolution(x)))


class ResNetLayer(nn.Module):
    """Residual layer: act(layer(x) + shortcut(x)).

    ``layer`` is the stack of convolutions (two 3x3 for a basic layer; 1x1, 3x3, 1x1 for a
    bottleneck); ``shortcut`` is the identity, or a strided 1x1 convolution + BatchNorm where
    the layer changes the width or the resolution.
    """

    def __init__(self, layer: nn.Sequential, shortcut: nn.Module, act: str):
        super().__init__()
        self.shortcut = shortcut
        self.layer = layer
        self.activation = get_activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H / stride, W / stride)."""
        return self.activation(self.layer(x) + self.shortcut(x))


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    if in_channels == out_channels and stride == 1:
        return nn.Identity()
    return ConvNormAct(in_channels, out_channels, kernel_size=1, stride=stride, act=None)


def basic_layer(in_channels: int, out_channels: int, stride: int, act: str) -> ResNetLayer:
    """Two 3x3 convolutions; the first one carries the stride."""
    layer = nn.Sequential(
        ConvNormAct(in_channels, out_channels, kernel_size=3, stride=stride),
        ConvNormAct(out_channels, out_channels, kernel_size=3, act=None),
    )
    return ResNetLayer(layer, _shortcut(in_channels, out_channels, stride), act)


def bottleneck_layer(
    in_channels: int, out_channels: int, stride: int, act: str, stride_in_1x1: bool
) -> ResNetLayer:
    """1x1 down to a quarter of ``out_channels``, 3x3, 1x1 back up.

    The stride sits on the 3x3 convolution ("ResNet v1.5", the torchvision and transformers
    default) or, with ``stride_in_1x1``, on the first 1x1 (the original paper's placement).
    """
    mid = out_channels // BOTTLENECK_REDUCTION
    layer = nn.Sequential(
        ConvNormAct(in_channels, mid, kernel_size=1, stride=stride if stride_in_1x1 else 1),
        ConvNormAct(mid, mid, kernel_size=3, stride=1 if stride_in_1x1 else stride),
        ConvNormAct(mid, out_channels, kernel_size=1, act=None),
    )
    return ResNetLayer(layer, _shortcut(in_channels, out_channels, stride), act)


class ResNetStage(nn.Module):
    def __init__(self, layers: Sequence[ResNetLayer]):
        super().__init__()
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class ResNetEncoder(nn.Module):
    def __init__(self, stages: Sequence[ResNetStage]):
        super().__init__()
        self.stages = nn.ModuleList(stages)


class ResNetEmbeddings(nn.Module):
    """The stem: 7x7 stride-2 convolution, BatchNorm, activation, 3x3 stride-2 max-pool."""

    def __init__(self, in_channels: int, dim: int, act: str):
        super().__init__()
        self.embedder = ConvNormAct(in_channels, dim, kernel_size=7, stride=2, act=act)
        self.pooler = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, dim, ceil(H / 4), ceil(W / 4))."""
        return self.pooler(self.embedder(pixel_values))


class ResNetBackbone(nn.Module):
    """ResNet backbone: (B, 3, H, W) -> the maps named in ``out_features``, finest first.

    For Mask2Former these are stage1..stage4: (B, hidden_sizes[i], H / 2^(i+2), W / 2^(i+2)),
    rounded up. ``channels`` lists the width of each returned map.
    """

    def __init__(
        self,
        embedder: ResNetEmbeddings,
        encoder: ResNetEncoder,
        channels: List[int],
        out_features: List[str],
    ):
        """``channels``: the stem's width, then each stage's."""
        super().__init__()
        self.embedder = embedder
        self.encoder = encoder
        names = _stage_names(len(encoder.stages))
        self.out_features = [name for name in names if name in out_features]
        self.channels = [c for c, name in zip(channels, names) if name in out_features]
        self.gradient_checkpointing = False  # per stage (mask2former.modeling.grad_checkpoint)

    def forward(self, pixel_values: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        x = self.embedder(pixel_values)
        features = [x] if "stem" in self.out_features else []
        for name, stage in zip(_stage_names(len(self.encoder.stages))[1:], self.encoder.stages):
            x = run_block(self, stage, x)
            if name in self.out_features:
                features.append(x)
        return tuple(features)


def _stage_names(num_stages: int) -> List[str]:
    return ["stem"] + [f"stage{i + 1}" for i in range(num_stages)]


def build_resnet_backbone(config: ResNetConfig) -> ResNetBackbone:
    """ResNet backbone for ``config``.

    Every stage but the first halves the resolution in its first layer (the first too with
    ``downsample_in_first_stage``); that layer also changes the width to the stage's.
    """
    stages = []
    in_channels = config.embedding_size
    for i, (width, depth) in enumerate(zip(config.hidden_sizes, config.depths)):
        stride = 2 if i > 0 or config.downsample_in_first_stage else 1
        layers = []
        for j in range(depth):
            layer_in, layer_stride = (in_channels, stride) if j == 0 else (width, 1)
            if config.layer_type == "bottleneck":
                layer = bottleneck_layer(
                    layer_in,
                    width,
                    layer_stride,
                    config.hidden_act,
                    stride_in_1x1=config.downsample_in_bottleneck,
                )
            else:
                layer = basic_layer(layer_in, width, layer_stride, config.hidden_act)
            layers.append(layer)
        stages.append(ResNetStage(layers))
        in_channels = width
    return ResNetBackbone(
        embedder=ResNetEmbeddings(config.num_channels, config.embedding_size, config.hidden_act),
        encoder=ResNetEncoder(stages),
        channels=[config.embedding_size] + list(config.hidden_sizes),
        out_features=config.out_features,
    )
