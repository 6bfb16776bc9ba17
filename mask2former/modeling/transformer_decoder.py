"""Masked-attention transformer decoder and the mask predictor.

Learned queries attend, layer by layer, to one level of the multi-scale features (layer i to
level i % 3, coarsest first), restricted to where the previous prediction's mask is on (the
paper's masked attention). Each layer is cross-attention -> self-attention -> FFN, post-norm by
default. Attribute names follow the checkpoint keys under ``model.transformer_module``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Mask2FormerConfig
from .activations import get_activation
from .grad_checkpoint import run_block
from .mask_products import layer_mask_logits, query_pixel_products

__all__ = ["DecoderOutput", "MaskedAttentionDecoder", "MaskPredictor", "build_transformer_decoder"]


@dataclass
class DecoderOutput:
    """What :class:`MaskedAttentionDecoder` returns; L layers make L + 1 predictions.

    - hidden_states: the queries entering the first layer and each layer's output, L + 1
      tensors (B, Q, C), not normalised.
    - intermediate: the layer-normalised queries each prediction is made from, L + 1 tensors
      (B, Q, C); the class head reads them.
    - masks: the mask logits of each prediction, L + 1 tensors (B, Q, H/4, W/4); the last is
      the final prediction. Only that one when the decoder ran with ``auxiliary_masks=False``.
    - attentions: each layer's self-attention weights (B, heads, Q, Q) when asked, else empty.
    - queries_first: ``hidden_states`` as (Q, B, C) views, the reference's layout of the
      returned states; the computation continues from them, so that a gradient reaches the
      tensors the model returns (``retain_grad`` on them works, as in transformers).
    """

    hidden_states: List[torch.Tensor]
    intermediate: List[torch.Tensor]
    masks: List[torch.Tensor]
    attentions: List[torch.Tensor] = field(default_factory=list)
    queries_first: List[torch.Tensor] = field(default_factory=list)


class SelfAttention(nn.Module):
    """Multi-head self-attention with position embeddings added to queries and keys only."""

    def __init__(self, dim: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(
        self, x: torch.Tensor, pos: torch.Tensor, need_weights: bool = False
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """x, pos: (B, Q, C) -> output (B, Q, C) and weights (B, heads, Q, Q) if asked."""
        b, q, c = x.shape
        heads = self.num_heads
        qk = x + pos
        query = self.q_proj(qk).view(b, q, heads, -1).transpose(1, 2)
        key = self.k_proj(qk).view(b, q, heads, -1).transpose(1, 2)
        value = self.v_proj(x).view(b, q, heads, -1).transpose(1, 2)
        p = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            weights = (query @ key.transpose(-1, -2) * (c // heads) ** -0.5).softmax(-1)
            out = F.dropout(weights, p, self.training) @ value
        else:
            out = F.scaled_dot_product_attention(query, key, value, dropout_p=p)
        out = out.transpose(1, 2).reshape(b, q, c)
        return self.out_proj(out), weights


class MaskedCrossAttention(nn.Module):
    """Cross-attention from queries to pixels, blocked where ``blocked`` is True.

    Parameters are stored as ``in_proj_weight`` (3C, C) = [W_q; W_k; W_v], ``in_proj_bias`` and
    ``out_proj``, the layout of ``torch.nn.MultiheadAttention`` used by the checkpoints.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        blocked: torch.Tensor,
    ) -> torch.Tensor:
        """query (B, Q, C); key, value (B, N, C); blocked (B, Q, N) bool -> (B, Q, C)."""
        b, q, c = query.shape
        heads = self.num_heads
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        query = F.linear(query, w_q, b_q).view(b, q, heads, -1).transpose(1, 2)
        key = F.linear(key, w_k, b_k).view(b, -1, heads, c // heads).transpose(1, 2)
        value = F.linear(value, w_v, b_v).view(b, -1, heads, c // heads).transpose(1, 2)
        p = self.dropout if self.training else 0.0
        # The mask is the same for every head: broadcast it instead of copying per head.
        out = F.scaled_dot_product_attention(
            query, key, value, attn_mask=~blocked[:, None], dropout_p=p
        )
        return self.out_proj(out.transpose(1, 2).reshape(b, q, c))


class MaskedAttentionDecoderLayer(nn.Module):
    def __init__(
        self,
        dim: int,
        num_heads: int,
        ffn_dim: int,
        dropout: float,
        activation: str,
        pre_norm: bool,
    ):
        super().__init__()
        self.pre_norm = pre_norm
        self.dropout = dropout
        self.self_attn = SelfAttention(dim, num_heads, dropout)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.cross_attn = MaskedCrossAttention(dim, num_heads, dropout)
        self.cross_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.activation = get_activation(activation)

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.dropout, self.training)

    def forward(
        self,
        x: torch.Tensor,
        query_pos: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        blocked: torch.Tensor,
        need_weights: bool = False,
        memory_keys: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """x, query_pos: (B, Q, C); memory, memory_pos: (B, N, C); blocked: (B, Q, N);
        memory_keys: ``memory + memory_pos`` if the caller has it (every layer attending to a
        level uses the same sum)."""
        pre = self.pre_norm
        keys = memory + memory_pos if memory_keys is None else memory_keys

        def cross(y: torch.Tensor) -> torch.Tensor:
            return self.cross_attn(y + query_pos, keys, memory, blocked)

        def ffn(y: torch.Tensor) -> torch.Tensor:
            return self._drop(self.fc2(self._drop(self.activation(self.fc1(y)))))

        if pre:
            x = x + self._drop(cross(self.cross_attn_layer_norm(x)))
            y, weights = self.self_attn(self.self_attn_layer_norm(x), query_pos, need_weights)
            x = x + self._drop(y)
            x = x + ffn(self.final_layer_norm(x))
        else:
            x = self.cross_attn_layer_norm(x + self._drop(cross(x)))
            y, weights = self.self_attn(x, query_pos, need_weights)
            x = self.self_attn_layer_norm(x + self._drop(y))
            x = self.final_layer_norm(x + ffn(x))
        return x, weights


class MlpBlock(nn.Module):
    """Linear + activation stored as ``{i}.0`` (the checkpoints' key layout)."""

    def __init__(self, in_dim: int, out_dim: int, activation: nn.Module):
        super().__init__()
        self.add_module("0", nn.Linear(in_dim, out_dim))
        self.add_module("1", activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._modules["1"](self._modules["0"](x))


class MaskPredictor(nn.Module):
    """Mask logits from normalized queries: 3-layer MLP, then a dot product with every pixel."""

    def __init__(self, hidden_dim: int, mask_feature_size: int):
        super().__init__()
        dims = [hidden_dim, hidden_dim, hidden_dim, mask_feature_size]
        self.mask_embedder = nn.Sequential(
            *(
                MlpBlock(dims[i], dims[i + 1], nn.ReLU() if i < 2 else nn.Identity())
                for i in range(3)
            )
        )

    def forward(
        self, queries: torch.Tensor, mask_features: torch.Tensor, target_size: Tuple[int, int]
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """queries (B, Q, C), mask_features (B, Cm, H, W) -> mask logits (B, Q, H, W) and the
        attention block mask (B, Q, h*w) at ``target_size`` for the next layer."""
        return self.predict(queries, mask_features, resize_features(mask_features, target_size))

    def predict(
        self,
        queries: torch.Tensor,
        mask_features: torch.Tensor,
        small_features: torch.Tensor,
        full_size: bool = True,
    ) -> Tuple[Optional[torch.Tensor], torch.Tensor]:
        """:meth:`forward` with the mask features already resized to the attention size:
        small_features (B, Cm, h*w) from :func:`resize_features`. ``full_size=False`` skips
        the full-size logits (None) and gives only the block mask."""
        embed = self.mask_embedder(queries)
        masks = layer_mask_logits([embed], mask_features)[0] if full_size else None
        return masks, self.block_mask(embed, small_features)

    @torch.no_grad()
    def block_mask(self, embed: torch.Tensor, small_features: torch.Tensor) -> torch.Tensor:
        """embed (B, Q, Cm) from ``mask_embedder``, small_features (B, Cm, h*w) -> (B, Q, h*w)
        True where the next layer's attention is blocked."""
        # Bilinear resizing is linear per channel, so resizing the features and taking the
        # dot product equals resizing the full-size logits, at a fraction of the cost (and
        # the resized features are shared by every layer that attends to that level).
        small = query_pixel_products(embed.detach(), small_features.to(embed.dtype))
        blocked = small.sigmoid() < 0.5
        # A query whose mask is empty everywhere may attend everywhere (else its softmax
        # would have no support).
        blocked &= ~blocked.all(-1, keepdim=True)
        return blocked


@torch.no_grad()
def resize_features(mask_features: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """(B, Cm, H, W) -> (B, Cm, h*w): bilinearly resized (align_corners=False), detached."""
    small = F.interpolate(mask_features, size=size, mode="bilinear", align_corners=False)
    return small.flatten(2)


class MaskedAttentionDecoder(nn.Module):
    def __init__(
        self,
        layers: Sequence[MaskedAttentionDecoderLayer],
        hidden_dim: int,
        mask_predictor: MaskPredictor,
    ):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.layernorm = nn.LayerNorm(hidden_dim)
        self.mask_predictor = mask_predictor
        self.gradient_checkpointing = False  # per layer (mask2former.modeling.grad_checkpoint)

    def forward(
        self,
        queries: torch.Tensor,
        query_pos: torch.Tensor,
        memories: List[torch.Tensor],
        memory_pos: List[torch.Tensor],
        sizes: List[Tuple[int, int]],
        mask_features: torch.Tensor,
        output_attentions: bool = False,
        auxiliary_masks: bool = True,
    ) -> DecoderOutput:
        """
        Args:
            queries, query_pos: (B, Q, C) initial query content and positions.
            memories, memory_pos: per level (B, h*w, C), coarsest first; sizes their (h, w).
            mask_features: (B, Cm, H/4, W/4).
            output_attentions: also return each layer's self-attention weights.
            auxiliary_masks: False keeps only the final full-size mask logits (``masks`` then
                has one entry); the intermediate ones feed only the auxiliary loss and
                ``auxiliary_logits``, and at 800x1088 they are about 28 GFLOP and 200 MB.
        """
        # level -> mask features resized to that level, shared by the layers attending to it
        # (keyed by level, not size: sizes are symbolic, unhashable, when exported)
        resized: Dict[int, torch.Tensor] = {}

        predictor = self.mask_predictor
        embeds: List[torch.Tensor] = []  # (B, Q, Cm) per prediction

        def predict(normed: torch.Tensor, level: int) -> torch.Tensor:
            if level not in resized:
                resized[level] = resize_features(mask_features, sizes[level])
            embeds.append(predictor.mask_embedder(normed))
            return predictor.block_mask(embeds[-1], resized[level])

        queries_first = [queries.transpose(0, 1)]
        x = queries_first[0].transpose(0, 1)  # the same strides as ``queries``: free
        hidden_states = [x]
        normed = self.layernorm(x)
        intermediate = [normed]
        blocked = predict(normed, 0)
        attentions = []
        levels = len(memories)
        # The attention keys' input, once per level instead of once per layer.
        keys = [memory + pos for memory, pos in zip(memories, memory_pos)]
        for i, layer in enumerate(self.layers):
            level = i % levels
            x, weights = run_block(
                self,
                layer,
                x,
                query_pos,
                memories[level],
                memory_pos[level],
                blocked,
                output_attentions,
                keys[level],
            )
            queries_first.append(x.transpose(0, 1))
            x = queries_first[-1].transpose(0, 1)
            hidden_states.append(x)
            normed = self.layernorm(x)
            intermediate.append(normed)
            blocked = predict(normed, (i + 1) % levels)
            if output_attentions:
                attentions.append(weights)
        # The full-size logits last, all in one product node (see mask_products).
        all_masks = layer_mask_logits(embeds if auxiliary_masks else embeds[-1:], mask_features)
        return DecoderOutput(hidden_states, intermediate, all_masks, attentions, queries_first)


def build_transformer_decoder(config: Mask2FormerConfig) -> MaskedAttentionDecoder:
    """The decoder of ``decoder_layers - 1`` layers and ``decoder_layers`` predictions.

    No layer is ever skipped: the reference reuses ``dropout`` as a layer-drop rate (so a
    dropout above 0 would change the number of auxiliary predictions during training); the
    original has no layer drop.
    """
    layers = [
        MaskedAttentionDecoderLayer(
            dim=config.hidden_dim,
            num_heads=config.num_attention_heads,
            ffn_dim=config.dim_feedforward,
            dropout=config.dropout,
            activation=config.activation_function,
            pre_norm=config.pre_norm,
        )
        for _ in range(config.decoder_layers - 1)
    ]
    return MaskedAttentionDecoder(
        layers,
        hidden_dim=config.hidden_dim,
        mask_predictor=MaskPredictor(config.hidden_dim, config.mask_feature_size),
    )
