"""The backbone that a config names: Swin or ResNet.

Both take (B, C, H, W) pixels and return a tuple of four maps, strides 4, 8, 16, 32 finest
first, and list their widths in ``channels``; the pixel decoder needs nothing else from them.
Neither reads ``pixel_mask`` (padding is not masked anywhere in the network).
"""

from __future__ import annotations

from typing import Union

from ..config import BackboneConfig, ResNetConfig, SwinConfig
from .resnet import ResNetBackbone, build_resnet_backbone
from .swin import SwinBackbone, build_swin_backbone

__all__ = ["Backbone", "build_backbone"]

Backbone = Union[SwinBackbone, ResNetBackbone]


def build_backbone(config: BackboneConfig) -> Backbone:
    if isinstance(config, SwinConfig):
        return build_swin_backbone(config)
    if isinstance(config, ResNetConfig):
        return build_resnet_backbone(config)
    raise TypeError(f"no backbone for a {type(config).__name__}")
