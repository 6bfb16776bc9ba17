"""Output containers of the models: attribute access, key access and ``to_tuple()``.

With ``return_dict=False`` the models return ``to_tuple()``: the non-None fields in declaration
order, as the reference does.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Dict, List, Optional, Tuple

import torch

__all__ = [
    "ModelOutput",
    "Mask2FormerModelOutput",
    "Mask2FormerForUniversalSegmentationOutput",
]


class ModelOutput:
    """Base of the output dataclasses: ``out.field``, ``out["field"]``, ``out[0]``, ``keys()``."""

    def to_tuple(self) -> Tuple[Any, ...]:
        return tuple(v for v in (getattr(self, f.name) for f in fields(self)) if v is not None)

    def keys(self) -> List[str]:
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]

    def items(self):
        return [(k, getattr(self, k)) for k in self.keys()]

    def __getitem__(self, key):
        if isinstance(key, str):
            if key not in self.keys():
                raise KeyError(key)
            return getattr(self, key)
        return self.to_tuple()[key]

    def __contains__(self, key: str) -> bool:
        return key in self.keys()

    def __iter__(self):
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())


@dataclass
class Mask2FormerModelOutput(ModelOutput):
    """Outputs of :class:`Mask2FormerModel`.

    - encoder_last_hidden_state: (B, C4, H/32, W/32) last backbone stage.
    - pixel_decoder_last_hidden_state: (B, mask_feature_size, H/4, W/4) per-pixel mask features.
    - transformer_decoder_last_hidden_state: (B, Q, hidden_dim) normalized final queries.
    - encoder_hidden_states: 4 backbone stage maps (B, Ci, H/si, W/si), with hidden states.
    - pixel_decoder_hidden_states: 3 multi-scale maps (B, feature_size, ...), coarsest first,
      then the mask features, with hidden states.
    - transformer_decoder_hidden_states: the initial queries and each layer's, (B, Q, hidden_dim).
    - transformer_decoder_intermediate_states: decoder_layers normalized queries (B, Q, hidden).
    - masks_queries_logits: decoder_layers mask predictions (B, Q, H/4, W/4), the last is final.
    - attentions: each decoder layer's self-attention weights (B, heads, Q, Q).
    """

    encoder_last_hidden_state: Optional[torch.Tensor] = None
    pixel_decoder_last_hidden_state: Optional[torch.Tensor] = None
    transformer_decoder_last_hidden_state: Optional[torch.Tensor] = None
    encoder_hidden_states: Optional[Tuple[torch.Tensor, ...]] = None
    pixel_decoder_hidden_states: Optional[Tuple[torch.Tensor, ...]] = None
    transformer_decoder_hidden_states: Optional[Tuple[torch.Tensor, ...]] = None
    transformer_decoder_intermediate_states: Optional[Tuple[torch.Tensor, ...]] = None
    masks_queries_logits: Optional[Tuple[torch.Tensor, ...]] = None
    attentions: Optional[Tuple[torch.Tensor, ...]] = None


@dataclass
class Mask2FormerForUniversalSegmentationOutput(ModelOutput):
    """Outputs of :class:`Mask2FormerForUniversalSegmentation`.

    - loss: 0-d total loss when labels were given.
    - class_queries_logits: (B, Q, num_labels + 1); the last class is "no object".
    - masks_queries_logits: (B, Q, H/4, W/4).
    - auxiliary_logits: one dict {"class_queries_logits", "masks_queries_logits"} per
      intermediate prediction (decoder_layers - 1 of them), when requested.
    - the remaining fields as in :class:`Mask2FormerModelOutput`.
    Attributes outside the tuple form:

    - loss_dict: the weighted per-term losses (their sum is ``loss``), for logging.
    - image_sizes: when a ``pixel_mask`` was given, the (height, width) of each image's real
      pixels in ``pixel_values`` coordinates (padding is bottom/right), so that post-processing
      can cut the padding off before resizing to a target size; else None.
    """

    loss: Optional[torch.Tensor] = None
    class_queries_logits: Optional[torch.Tensor] = None
    masks_queries_logits: Optional[torch.Tensor] = None
    auxiliary_logits: Optional[List[Dict[str, torch.Tensor]]] = None
    encoder_last_hidden_state: Optional[torch.Tensor] = None
    pixel_decoder_last_hidden_state: Optional[torch.Tensor] = None
    transformer_decoder_last_hidden_state: Optional[torch.Tensor] = None
    encoder_hidden_states: Optional[Tuple[torch.Tensor, ...]] = None
    pixel_decoder_hidden_states: Optional[Tuple[torch.Tensor, ...]] = None
    transformer_decoder_hidden_states: Optional[Tuple[torch.Tensor, ...]] = None
    attentions: Optional[Tuple[torch.Tensor, ...]] = None

    def __post_init__(self) -> None:
        self.loss_dict: Optional[Dict[str, torch.Tensor]] = None
        self.image_sizes: Optional[List[Tuple[int, int]]] = None
