"""Pixel decoder: a deformable-attention encoder over the three coarsest backbone levels, then an
FPN step to stride 4 and a 1x1 projection giving the per-pixel mask features.

Attribute names follow the checkpoint keys under ``model.pixel_level_module.decoder``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Mask2FormerConfig
from .deformable_attention import MultiscaleDeformableAttention
from .exporting import is_exporting
from .fast_ops import affine_into, token_mlp
from .grad_checkpoint import run_block
from .position_encoding import sine_position_encoding

__all__ = ["PixelDecoder", "PixelDecoderOutput", "build_pixel_decoder"]

NUM_LEVELS = 3  # the deformable encoder works on strides 32, 16 and 8
NUM_POINTS = 4


@dataclass
class PixelDecoderOutput:
    """mask_features: (B, mask_feature_size, H/4, W/4); multi_scale_features: 3 maps
    (B, feature_size, H/s, W/s) for s = 32, 16, 8; attentions: per encoder layer (B, S, heads, L, P)
    when requested."""

    mask_features: torch.Tensor
    multi_scale_features: Tuple[torch.Tensor, ...]
    attentions: Optional[Tuple[torch.Tensor, ...]] = None


class DeformableEncoderLayer(nn.Module):
    """Post-norm layer: x = norm(x + attn(x)); x = norm(x + fc2(relu(fc1(x))))."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.self_attn = MultiscaleDeformableAttention(dim, num_heads, NUM_LEVELS, NUM_POINTS)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.dropout = dropout
        self.activation = nn.ReLU(inplace=True)  # no parameters: not a checkpoint key

    def _act(self, y: torch.Tensor) -> torch.Tensor:
        # In place: linear's backward does not need its own output.
        return F.dropout(self.activation(y), self.dropout, self.training)

    def forward(
        self,
        x: torch.Tensor,
        pos: torch.Tensor,
        reference_points: torch.Tensor,
        spatial_shapes: List[Tuple[int, int]],
        need_weights: bool = True,
        reuse_input: bool = False,
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """reuse_input: without autograd, x's buffer may be overwritten (the pixel decoder's
        own tokens): both residual sums go into existing buffers, none into fresh memory."""
        if self.training and self.dropout > 0:
            y, weights = self.self_attn(
                x, pos, reference_points, spatial_shapes, need_weights=need_weights
            )
            x = self.self_attn_layer_norm(x + F.dropout(y, self.dropout, self.training))
            y = F.dropout(token_mlp(x, self.fc1, self._act, self.fc2), self.dropout, True)
            return self.final_layer_norm(x + y), weights
        # No dropout: the residuals go into the attention's and the MLP's own output buffers.
        y, weights = self.self_attn(
            x,
            pos,
            reference_points,
            spatial_shapes,
            need_weights=need_weights,
            residual=x,
            into_residual=reuse_input,
        )
        x = self.self_attn_layer_norm(y)
        y = token_mlp(x, self.fc1, self.activation, self.fc2, residual=x, into_residual=True)
        return self.final_layer_norm(y), weights


class DeformableEncoder(nn.Module):
    def __init__(self, layers: Sequence[DeformableEncoderLayer]):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.gradient_checkpointing = False  # per layer (mask2former.modeling.grad_checkpoint)


def reference_points(
    spatial_shapes: Sequence[Tuple[int, int]], batch: int, device, dtype
) -> torch.Tensor:
    """(B, S, L, 2): the normalized centre (x, y) of every pixel of every level, repeated for
    each level (all levels cover the whole image because padding is not masked)."""
    points = []
    for h, w in spatial_shapes:
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack((grid_x.reshape(-1), grid_y.reshape(-1)), -1))
    ref = torch.cat(points, 0).to(dtype)  # (S, 2)
    return ref[None, :, None, :].expand(batch, -1, len(spatial_shapes), -1)


class PixelDecoder(nn.Module):
    """Backbone features (strides 4, 8, 16, 32) -> multi-scale features and mask features."""

    def __init__(
        self,
        in_channels: Sequence[int],
        feature_size: int,
        mask_feature_size: int,
        encoder: DeformableEncoder,
    ):
        super().__init__()
        self.feature_size = feature_size
        self.level_embed = nn.Parameter(torch.zeros(NUM_LEVELS, feature_size))
        # input_projections[0] is the coarsest level (stride 32), as in the checkpoints.
        self.input_projections = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, feature_size, kernel_size=1), nn.GroupNorm(32, feature_size))
            for c in list(in_channels)[-NUM_LEVELS:][::-1]
        )
        self.encoder = encoder
        self.mask_projection = nn.Conv2d(feature_size, mask_feature_size, kernel_size=1)
        # One FPN step: stride 8 -> stride 4.
        self.adapter_1 = nn.Sequential(
            nn.Conv2d(in_channels[0], feature_size, kernel_size=1, bias=False),
            nn.GroupNorm(32, feature_size),
        )
        self.layer_1 = nn.Sequential(
            nn.Conv2d(feature_size, feature_size, kernel_size=3, padding=1, bias=False),
            nn.GroupNorm(32, feature_size),
            nn.ReLU(inplace=True),
        )

    def forward(
        self, features: Sequence[torch.Tensor], output_attentions: bool = False
    ) -> PixelDecoderOutput:
        """features: 4 maps (B, C_i, H/s_i, W/s_i), finest first."""
        coarse = list(features[-NUM_LEVELS:])[::-1]  # strides 32, 16, 8
        batch = coarse[0].shape[0]
        shapes = [(f.shape[2], f.shape[3]) for f in coarse]  # symbolic when exported
        tokens, pos = [], []
        for level, (feature, proj) in enumerate(zip(coarse, self.input_projections)):
            h, w = shapes[level]
            # (B, C, h, w) -> (B, h*w, C); free when the map is channels-last.
            tokens.append(proj(feature).permute(0, 2, 3, 1).reshape(batch, h * w, -1))
            enc = sine_position_encoding(
                batch, h, w, self.feature_size // 2, feature.device, feature.dtype
            )
            pos.append(enc.flatten(2).transpose(1, 2) + self.level_embed[level].view(1, 1, -1))
        x = torch.cat(tokens, 1)  # (B, S, C)
        pos_all = torch.cat(pos, 1)
        # float32 even in a bfloat16 model: sampling positions need sub-pixel precision.
        ref = reference_points(shapes, batch, x.device, torch.promote_types(x.dtype, torch.float32))
        attentions = []
        for layer in self.encoder.layers:
            reuse_input = True  # x is this decoder's own tensor: layers may overwrite it
            x, weights = run_block(
                self.encoder, layer, x, pos_all, ref, shapes, output_attentions, reuse_input
            )
            if output_attentions:
                attentions.append(weights)

        sizes = [h * w for h, w in shapes]
        # Channels-last NCHW views of the tokens (no copy); the FPN convolutions below and the
        # decoder's memories keep that layout.
        outputs = [
            t.reshape(batch, h, w, -1).permute(0, 3, 1, 2)
            for t, (h, w) in zip(x.split(sizes, dim=1), shapes)
        ]
        finest = features[0].contiguous(memory_format=torch.channels_last)
        if torch.is_grad_enabled() or is_exporting():
            mask_features = self._fpn_step(finest, outputs[-1])
        else:
            mask_features = self._fpn_step_inference(finest, outputs[-1])
        return PixelDecoderOutput(
            mask_features=mask_features,
            multi_scale_features=tuple(outputs),
            attentions=tuple(attentions) if output_attentions else None,
        )

    def _fpn_step(self, finest: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """finest (B, C_0, H/4, W/4), coarse (B, C, H/8, W/8) -> mask features (B, Cm, H/4,
        W/4): lateral projection + upsampled coarse map, 3x3 convolution, 1x1 projection."""
        fine = self.adapter_1(finest)
        # In place (here and the ReLU of layer_1): at stride 4 every fresh map is tens of MB
        # of new pages; group norm's backward needs its input, not its output, so autograd
        # allows both.
        fine = fine.add_(
            F.interpolate(coarse, size=fine.shape[-2:], mode="bilinear", align_corners=False)
        )
        return self.mask_projection(self.layer_1(fine))

    def _fpn_step_inference(self, finest: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """:meth:`_fpn_step` without autograd, with two stride-4 maps fewer: the upsampled
        coarse map is written into the lateral convolution's output (free once normalised)
        and the mask features into the 3x3 convolution's output (free likewise). Each map
        is ~55 MB at 800x1088, fresh pages from the kernel every call (~10 ms each); the
        values are the same (the 1x1 convolution is the same matrix product)."""
        conv, norm = self.adapter_1
        lateral = conv(finest)
        fine = norm(lateral)
        up = torch._C._nn.upsample_bilinear2d(coarse, fine.shape[-2:], False, out=lateral)
        fine = fine.add_(up)
        del lateral, up
        conv, norm, act = self.layer_1
        spent = conv(fine)
        del fine
        fine = act(norm(spent))
        proj = self.mask_projection
        b, c, h, w = fine.shape
        # The 3x3 output holds the mask features when they have as many channels (the 1x1
        # projection is a matrix product over channels-last rows).
        reusable = (
            proj.out_channels == spent.shape[1]
            and spent.is_contiguous(memory_format=torch.channels_last)
            and fine.is_contiguous(memory_format=torch.channels_last)
        )
        if not reusable:
            return proj(fine)
        rows = spent.permute(0, 2, 3, 1).view(b * h * w, proj.out_channels)
        pixels = fine.permute(0, 2, 3, 1).view(b * h * w, c)
        affine_into(pixels, proj.weight.view(proj.out_channels, c), proj.bias, rows)
        return spent


def build_pixel_decoder(config: Mask2FormerConfig, in_channels: Sequence[int]) -> PixelDecoder:
    layers = [
        DeformableEncoderLayer(
            config.feature_size,
            config.num_attention_heads,
            config.encoder_feedforward_dim,
            config.dropout,
        )
        for _ in range(config.encoder_layers)
    ]
    return PixelDecoder(
        in_channels=in_channels,
        feature_size=config.feature_size,
        mask_feature_size=config.mask_feature_size,
        encoder=DeformableEncoder(layers),
    )
