"""Weight initialisation, equal in effect to the reference's.

The reference applies per-module rules children-first, so its outer rule for the pixel-level
module (normal(0, init_std) for every Linear/Conv2d of the backbone and pixel decoder) overrides
the inner ones. We write the resulting rules directly. One deliberate difference: the deformable
attention keeps the Deformable DETR start for its sampling offsets (points spread around the
reference point) and uniform attention, which the reference means to set but then overwrites;
it only matters when training from scratch.

A ResNet backbone gets the usual from-scratch start instead of the pixel-level normal(0,
init_std): He normal (fan-out) convolutions and BatchNorm at identity, as transformers'
ResNet initialises itself. Loaded weights replace all of this, so parity is unaffected.
"""

from __future__ import annotations

from torch import nn

from .deformable_attention import MultiscaleDeformableAttention
from .resnet import ResNetBackbone
from .transformer_decoder import MaskedAttentionDecoderLayer

__all__ = ["init_weights"]


def _normal_init(module: nn.Module, std: float) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.LayerNorm, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _resnet_init(backbone: ResNetBackbone) -> None:
    # The reference leaves these to the pixel-level normal(0, init_std) rule; He fan-out is the
    # standard start of a BatchNorm ResNet and keeps activations at unit scale in eval mode too.
    for m in backbone.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
            m.reset_running_stats()


def init_weights(model: nn.Module, init_std: float, init_xavier_std: float) -> None:
    """Initialise a Mask2FormerModel or Mask2FormerForUniversalSegmentation in place."""
    _normal_init(model, init_std)
    for m in model.modules():
        if isinstance(m, MaskedAttentionDecoderLayer):
            for p in m.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p, gain=init_xavier_std)
            nn.init.zeros_(m.cross_attn.in_proj_bias)
        elif isinstance(m, MultiscaleDeformableAttention):
            m.reset_sampling_parameters()
        elif isinstance(m, ResNetBackbone):
            _resnet_init(m)
    for m in model.modules():
        transformer_module = getattr(m, "transformer_module", None)
        if transformer_module is not None:
            for proj in transformer_module.input_projections:
                if isinstance(proj, nn.Conv2d):
                    nn.init.xavier_uniform_(proj.weight, gain=init_xavier_std)
                    nn.init.zeros_(proj.bias)
        pixel_level = getattr(m, "pixel_level_module", None)
        if pixel_level is not None:
            nn.init.zeros_(pixel_level.decoder.level_embed)
            for name, p in pixel_level.encoder.named_parameters():
                if name.endswith("relative_position_bias_table"):
                    nn.init.zeros_(p)
