"""Mask2FormerModel and Mask2FormerForUniversalSegmentation.

Module attribute names follow the published checkpoints (``model.pixel_level_module.*``,
``model.transformer_module.*``, ``class_predictor``, ``criterion.empty_weight``), so a
``state_dict`` maps one to one onto the files.

Padding: like the original and the reference, the network does not mask padded pixels
(GroupNorm, the backbone and the deformable encoder all see them), so an image's result
depends on how much padding its batch added. ``pixel_mask`` is accepted and checked, and the
size of each image's real pixels is handed on to post-processing (``outputs.image_sizes``); for
results that do not depend on the other images, batch only images of the same size.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..config import Mask2FormerConfig
from ..loss.criterion import Mask2FormerLoss
from ..loss.result import LossResult
from .backbone import Backbone, build_backbone
from .init import init_weights
from .outputs import Mask2FormerForUniversalSegmentationOutput, Mask2FormerModelOutput
from .pixel_decoder import PixelDecoder, build_pixel_decoder
from .position_encoding import sine_position_encoding
from .pretrained import PreTrainedMixin
from .transformer_decoder import DecoderOutput, MaskedAttentionDecoder, build_transformer_decoder

__all__ = ["Mask2FormerModel", "Mask2FormerForUniversalSegmentation"]

MIN_IMAGE_SIDE = 32  # one pixel of the stride-32 map


class PixelLevelModule(nn.Module):
    """Backbone (``encoder``) and pixel decoder (``decoder``)."""

    def __init__(self, encoder: Backbone, decoder: PixelDecoder):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder


class TransformerModule(nn.Module):
    """Learned queries, per-level input projections and embeddings, and the decoder."""

    def __init__(self, config: Mask2FormerConfig, decoder: MaskedAttentionDecoder):
        super().__init__()
        hidden, levels = config.hidden_dim, 3
        self.hidden_dim = hidden
        self.queries_embedder = nn.Embedding(config.num_queries, hidden)  # query positions
        self.queries_features = nn.Embedding(config.num_queries, hidden)  # initial content
        needs_projection = config.feature_size != hidden or config.enforce_input_projection
        # A real, saved submodule (the reference keeps these convolutions in a plain list, so
        # they are neither trained with the model nor saved).
        self.input_projections = nn.ModuleList(
            nn.Conv2d(config.feature_size, hidden, kernel_size=1)
            if needs_projection
            else nn.Identity()
            for _ in range(levels)
        )
        self.decoder = decoder
        self.level_embed = nn.Embedding(levels, hidden)

    def forward(
        self,
        multi_scale_features: Sequence[torch.Tensor],
        mask_features: torch.Tensor,
        output_attentions: bool = False,
        auxiliary_masks: bool = True,
    ) -> DecoderOutput:
        """multi_scale_features: 3 maps (B, feature_size, h_i, w_i), coarsest first;
        mask_features (B, mask_feature_size, H/4, W/4); auxiliary_masks: see
        :meth:`MaskedAttentionDecoder.forward`."""
        memories, memory_pos, sizes = [], [], []
        for level, (feature, proj) in enumerate(zip(multi_scale_features, self.input_projections)):
            b, _, h, w = feature.shape
            sizes.append((h, w))
            pos = sine_position_encoding(
                b, h, w, self.hidden_dim // 2, feature.device, feature.dtype
            )
            # Contiguous (B, h*w, C), the memories' layout: every layer's memory + pos and key
            # projection then run on plain row-major operands, with no copy per layer.
            memory_pos.append(pos.flatten(2).transpose(1, 2).contiguous())
            # (B, C, h, w) -> (B, h*w, C); free when the map is channels-last.
            memory = proj(feature).permute(0, 2, 3, 1).reshape(b, h * w, -1)
            memories.append(memory + self.level_embed.weight[level])
        batch = mask_features.shape[0]
        queries = self.queries_features.weight.unsqueeze(0).expand(batch, -1, -1)
        query_pos = self.queries_embedder.weight.unsqueeze(0).expand(batch, -1, -1)
        return self.decoder(
            queries,
            query_pos,
            memories,
            memory_pos,
            sizes,
            mask_features,
            output_attentions,
            auxiliary_masks,
        )


def _check_inputs(
    pixel_values: torch.Tensor, pixel_mask: Optional[torch.Tensor], num_channels: int
) -> Optional[List[Tuple[int, int]]]:
    """Raise a clear error for malformed inputs; return each image's real (h, w) from the mask."""
    if not isinstance(pixel_values, torch.Tensor):
        raise TypeError(f"pixel_values must be a torch.Tensor, got {type(pixel_values).__name__}")
    if pixel_values.dim() != 4:
        raise ValueError(
            f"pixel_values must be (batch, {num_channels}, height, width), got shape "
            f"{tuple(pixel_values.shape)}"
        )
    if not pixel_values.is_floating_point():
        raise TypeError(
            f"pixel_values must be a float tensor (normalized pixels), got {pixel_values.dtype}; "
            "use Mask2FormerImageProcessor to prepare images"
        )
    b, c, h, w = pixel_values.shape
    if c != num_channels:
        raise ValueError(
            f"pixel_values has {c} channels but the model expects {num_channels} "
            f"(shape {tuple(pixel_values.shape)}; channels come second)"
        )
    if h < MIN_IMAGE_SIDE or w < MIN_IMAGE_SIDE:
        raise ValueError(
            f"image of {h}x{w} pixels is too small: the backbone needs at least "
            f"{MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE}"
        )
    if pixel_mask is None:
        return None
    if not isinstance(pixel_mask, torch.Tensor) or tuple(pixel_mask.shape) != (b, h, w):
        shape = tuple(pixel_mask.shape) if isinstance(pixel_mask, torch.Tensor) else None
        raise ValueError(f"pixel_mask must have shape {(b, h, w)} like pixel_values, got {shape}")
    valid = pixel_mask.bool()
    heights = valid.any(2).sum(1).tolist()
    widths = valid.any(1).sum(1).tolist()
    return [(int(y), int(x)) for y, x in zip(heights, widths)]


class Mask2FormerModel(PreTrainedMixin, nn.Module):
    """Backbone + pixel decoder + masked-attention decoder, without the class head."""

    def __init__(self, config: Mask2FormerConfig):
        super().__init__()
        config.validate()  # a config built and then changed field by field is checked here
        self.config = config
        backbone = build_backbone(config.backbone_config)
        self.pixel_level_module = PixelLevelModule(
            backbone, build_pixel_decoder(config, backbone.channels)
        )
        self.transformer_module = TransformerModule(config, build_transformer_decoder(config))
        init_weights(self, config.init_std, config.init_xavier_std)
        # Here and not in the head model: this one holds every checkpointed block.
        self._apply_legacy_checkpointing_flag()

    def forward(
        self,
        pixel_values: torch.Tensor,
        pixel_mask: Optional[torch.Tensor] = None,
        output_hidden_states: Optional[bool] = None,
        output_attentions: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        *,
        auxiliary_masks: bool = True,
    ) -> Union[Mask2FormerModelOutput, tuple]:
        """pixel_values (B, 3, H, W) float; pixel_mask (B, H, W), 1 = real pixel.
        ``auxiliary_masks=False`` (not in transformers) leaves out the intermediate layers'
        full-size mask logits: ``masks_queries_logits`` then holds the final one only.
        ``output_hidden_states`` / ``output_attentions`` left None take the config's fields of
        those names (as in transformers); ``return_dict`` None gives a ModelOutput.

        Layouts match the reference: ``transformer_decoder_hidden_states`` and
        ``transformer_decoder_intermediate_states`` are (Q, B, C) per entry,
        ``transformer_decoder_last_hidden_state`` is (B, Q, C).
        """
        image_sizes = _check_inputs(
            pixel_values, pixel_mask, self.config.backbone_config.num_channels
        )
        config = self.config
        if output_hidden_states is None:
            output_hidden_states = config.output_hidden_states
        if output_attentions is None:
            output_attentions = config.output_attentions
        if return_dict is None:  # as transformers: the config's return_dict (default True)
            return_dict = self.config.use_return_dict
        features = self.pixel_level_module.encoder(pixel_values)
        pixel = self.pixel_level_module.decoder(features)
        dec = self.transformer_module(
            pixel.multi_scale_features, pixel.mask_features, output_attentions, auxiliary_masks
        )
        queries_first = dec.queries_first
        out = Mask2FormerModelOutput(
            encoder_last_hidden_state=features[-1],
            pixel_decoder_last_hidden_state=pixel.mask_features,
            transformer_decoder_last_hidden_state=dec.hidden_states[-1],
            encoder_hidden_states=tuple(features) if output_hidden_states else None,
            pixel_decoder_hidden_states=pixel.multi_scale_features
            if output_hidden_states
            else None,
            transformer_decoder_hidden_states=tuple(queries_first)
            if output_hidden_states
            else None,
            transformer_decoder_intermediate_states=tuple(
                h.transpose(0, 1) for h in dec.intermediate
            ),
            masks_queries_logits=tuple(dec.masks),
            attentions=tuple(dec.attentions) if output_attentions else None,
            image_sizes=image_sizes,
        )
        if not return_dict:
            return out.to_tuple()
        return out


class Mask2FormerForUniversalSegmentation(PreTrainedMixin, nn.Module):
    """Mask2FormerModel with the class head and the training loss."""

    def __init__(self, config: Mask2FormerConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.model = Mask2FormerModel(config)
        self.class_predictor = nn.Linear(config.hidden_dim, config.num_labels + 1)
        self.criterion = Mask2FormerLoss(config)
        init_weights(self.class_predictor, config.init_std, config.init_xavier_std)

    def forward(
        self,
        pixel_values: torch.Tensor,
        mask_labels: Optional[List[torch.Tensor]] = None,
        class_labels: Optional[List[torch.Tensor]] = None,
        pixel_mask: Optional[torch.Tensor] = None,
        output_hidden_states: Optional[bool] = None,
        output_auxiliary_logits: Optional[bool] = None,
        output_attentions: Optional[bool] = None,
        return_dict: Optional[bool] = None,
    ) -> Union[Mask2FormerForUniversalSegmentationOutput, tuple]:
        """pixel_values (B, 3, H, W); mask_labels: per image (n_i, H, W) binary masks;
        class_labels: per image (n_i,) class ids. With labels, ``loss`` is the weighted sum of
        the cross-entropy, mask and dice losses of the final and every auxiliary prediction,
        ``outputs.loss_dict`` holds the weighted terms and ``outputs.losses`` the unweighted
        ones, final and auxiliary apart."""
        if (mask_labels is None) != (class_labels is None):
            raise ValueError("mask_labels and class_labels must be given together")
        if return_dict is None:  # as transformers: the config's return_dict (default True)
            return_dict = self.config.use_return_dict
        if output_auxiliary_logits is None:
            output_auxiliary_logits = self.config.output_auxiliary_logits
        outputs = self.model(
            pixel_values,
            pixel_mask=pixel_mask,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
            # Without labels and without auxiliary_logits nobody sees the intermediate masks.
            auxiliary_masks=mask_labels is not None or bool(output_auxiliary_logits),
        )
        class_logits = [
            self.class_predictor(h.transpose(0, 1))
            for h in outputs.transformer_decoder_intermediate_states
        ]
        mask_logits = outputs.masks_queries_logits
        auxiliary = [
            {"masks_queries_logits": m, "class_queries_logits": c}
            for m, c in zip(mask_logits[:-1], class_logits[:-1])
        ]
        losses = None
        if mask_labels is not None:
            losses = self._loss(mask_logits, class_logits, mask_labels, class_labels)
        out = Mask2FormerForUniversalSegmentationOutput(
            loss=None if losses is None else losses.total,
            class_queries_logits=class_logits[-1],
            masks_queries_logits=mask_logits[-1],
            auxiliary_logits=auxiliary if output_auxiliary_logits else None,
            encoder_last_hidden_state=outputs.encoder_last_hidden_state,
            pixel_decoder_last_hidden_state=outputs.pixel_decoder_last_hidden_state,
            transformer_decoder_last_hidden_state=outputs.transformer_decoder_last_hidden_state,
            encoder_hidden_states=outputs.encoder_hidden_states,
            pixel_decoder_hidden_states=outputs.pixel_decoder_hidden_states,
            transformer_decoder_hidden_states=outputs.transformer_decoder_hidden_states,
            attentions=outputs.attentions,
            loss_dict=None if losses is None else losses.terms(weighted=True),
            losses=losses,
            image_sizes=outputs.image_sizes,
        )
        if not return_dict:
            return out.to_tuple()
        return out

    def _loss(
        self,
        mask_logits: Sequence[torch.Tensor],
        class_logits: Sequence[torch.Tensor],
        mask_labels: List[torch.Tensor],
        class_labels: List[torch.Tensor],
    ) -> LossResult:
        """The loss of every prediction (mask logits (B, Q, H/4, W/4), class logits
        (B, Q, num_labels + 1), the final last), computed in float32 even under autocast (the
        sigmoid/softmax cross-entropies and the matching costs lose too much in 16 bits)."""
        device_type = mask_logits[-1].device.type
        with torch.autocast(device_type=device_type, enabled=False):
            masks = [m.float() for m in mask_logits]
            classes = [c.float() for c in class_logits]
            auxiliary = None
            if self.config.use_auxiliary_loss:
                auxiliary = [
                    {"masks_queries_logits": m, "class_queries_logits": c}
                    for m, c in zip(masks[:-1], classes[:-1])
                ]
            return self.criterion(
                masks_queries_logits=masks[-1],
                class_queries_logits=classes[-1],
                mask_labels=mask_labels,
                class_labels=class_labels,
                auxiliary_predictions=auxiliary,
            )
