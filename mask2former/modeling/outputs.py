"""Output containers of the models: attribute access, key access and ``to_tuple()``.

With ``return_dict=False`` the models return ``to_tuple()``: the non-None fields in declaration
order, as the reference does. Fields the reference does not have (declared with
:func:`extra_field`) are attributes only: ``to_tuple()``, ``keys()``, indexing and iteration
skip them, so both views stay exactly the reference's.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional, Tuple

import torch

from ..loss.result import LossResult

__all__ = [
    "ModelOutput",
    "Mask2FormerModelOutput",
    "Mask2FormerForUniversalSegmentationOutput",
]


_EXTRA = "outside_reference"


def extra_field() -> Any:
    """A field (default None) that is not part of the reference's output: left out of
    ``to_tuple()``, ``keys()``, indexing and iteration."""
    return field(default=None, metadata={_EXTRA: True})


class ModelOutput:
    """Base of the output dataclasses: ``out.field``, ``out["field"]``, ``out[0]``, ``keys()``."""

    def _reference_fields(self) -> List[str]:
        return [f.name for f in fields(self) if not f.metadata.get(_EXTRA)]

    def to_tuple(self) -> Tuple[Any, ...]:
        values = (getattr(self, name) for name in self._reference_fields())
        return tuple(v for v in values if v is not None)

    def keys(self) -> List[str]:
        return [name for name in self._reference_fields() if getattr(self, name) is not None]

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
    """Outputs of :class:`Mask2FormerModel` (B images, Q queries, C = hidden_dim; the decoder
    has decoder_layers - 1 layers and makes decoder_layers predictions). The layouts are the
    reference's: the decoder's per-layer states are queries-first, (Q, B, C).

    - encoder_last_hidden_state: (B, C4, H/32, W/32) last backbone stage.
    - pixel_decoder_last_hidden_state: (B, mask_feature_size, H/4, W/4) per-pixel mask features.
    - transformer_decoder_last_hidden_state: (B, Q, C) the last decoder layer's output, before
      the decoder's layer norm.
    - encoder_hidden_states: the 4 backbone stage maps (B, C_i, H/s_i, W/s_i), s_i = 4, 8, 16,
      32; only with ``output_hidden_states``.
    - pixel_decoder_hidden_states: the 3 multi-scale maps (B, feature_size, H/s, W/s), s = 32,
      16, 8 (coarsest first); only with ``output_hidden_states``.
    - transformer_decoder_hidden_states: decoder_layers tensors (Q, B, C): the initial queries
      and each layer's output, not normalised; only with ``output_hidden_states``.
    - transformer_decoder_intermediate_states: decoder_layers tensors (Q, B, C): the
      layer-normalised queries each prediction is made from.
    - masks_queries_logits: decoder_layers mask predictions (B, Q, H/4, W/4), the last is final.
    - attentions: each decoder layer's self-attention weights (B, heads, Q, Q); only with
      ``output_attentions``.

    Outside the tuple form: ``image_sizes``, as in
    :class:`Mask2FormerForUniversalSegmentationOutput`.
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
    image_sizes: Optional[List[Tuple[int, int]]] = extra_field()


@dataclass
class Mask2FormerForUniversalSegmentationOutput(ModelOutput):
    """Outputs of :class:`Mask2FormerForUniversalSegmentation`.

    - loss: 0-d total loss when labels were given.
    - class_queries_logits: (B, Q, num_labels + 1); the last class is "no object".
    - masks_queries_logits: (B, Q, H/4, W/4).
    - auxiliary_logits: one dict {"class_queries_logits", "masks_queries_logits"} per
      intermediate prediction (decoder_layers - 1 of them), when requested.
    - the remaining fields as in :class:`Mask2FormerModelOutput` (no intermediate states).

    Fields outside the tuple form and the keys (the reference has none of them):

    - loss_dict: when labels were given, the weighted terms in the reference's names
      (``loss_mask``, ``loss_dice``, ``loss_cross_entropy``, then ``loss_mask_0``, ... of the
      auxiliary predictions); their sum is ``loss``.
    - losses: when labels were given, the same terms unweighted and typed: the final
      prediction's and the auxiliary ones' apart (:class:`~mask2former.loss.LossResult`).
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
    loss_dict: Optional[Dict[str, torch.Tensor]] = extra_field()
    losses: Optional[LossResult] = extra_field()
    image_sizes: Optional[List[Tuple[int, int]]] = extra_field()
