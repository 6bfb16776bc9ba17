"""Mask logits as products of query embeddings with every pixel of the mask features.

Every decoder prediction (L + 1 of them when training) multiplies its own query embeddings
with the same pixel map. Autograd would give each product its own pixel gradient, a fresh
(B, Cm, H/4, W/4) map per prediction, and then sum them. :func:`layer_mask_logits` makes all
of them one autograd node: its backward accumulates every prediction's pixel gradient into one
buffer, already in the channels-last layout of the pixel decoder's map, so no per-prediction
maps are allocated, added or transposed.
"""

from __future__ import annotations

from typing import List, Sequence

import torch

from .exporting import is_exporting
from .fast_ops import autocast_dtype

__all__ = ["layer_mask_logits", "query_pixel_products"]


def query_pixel_products(embed: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """embed (B, Q, C) @ pixels (B, C, N) -> (B, Q, N).

    The pixels of a channels-last map come as a transposed (C, N) view. A plain matrix product
    takes such an operand as it is, while the batched one copies it in bfloat16 (a 55 MB copy
    at 800x1088, ten times the product itself): without autograd, one product per image.
    """
    training = torch.is_grad_enabled() and (embed.requires_grad or pixels.requires_grad)
    if training or is_exporting():  # out= has no autograd; an exported graph wants one op
        return torch.bmm(embed, pixels)
    out = embed.new_empty(embed.shape[0], embed.shape[1], pixels.shape[2])
    for image in range(embed.shape[0]):
        torch.mm(embed[image], pixels[image], out=out[image])
    return out


def layer_mask_logits(
    embeds: Sequence[torch.Tensor], mask_features: torch.Tensor
) -> List[torch.Tensor]:
    """Each embedding (B, Q, Cm) times the mask features (B, Cm, H, W) -> (B, Q, H, W) each.

    The results equal ``einsum("bqc,bchw->bqhw")`` per embedding; with autograd the pixel
    gradient of all of them is summed inside one backward (see the module's docstring).
    """
    b, cm, h, w = mask_features.shape
    # (B, N, Cm): free for a channels-last map (the pixel decoder's), a copy otherwise.
    pixels = mask_features.permute(0, 2, 3, 1).reshape(b, h * w, cm)
    needs_grad = torch.is_grad_enabled() and (
        pixels.requires_grad or any(e.requires_grad for e in embeds)
    )
    if needs_grad and not is_exporting():
        # Under autocast, the cast a bmm would get is made here, outside the function: its
        # backward then sees the dtypes its forward saw.
        dtype = autocast_dtype(pixels.device.type)
        if dtype is not None:
            pixels, embeds = pixels.to(dtype), [e.to(dtype) for e in embeds]
        with torch.autocast(pixels.device.type, enabled=False):
            masks = _SharedPixelProducts.apply(pixels, *embeds)
    else:
        masks = [query_pixel_products(e, pixels.transpose(1, 2)) for e in embeds]
    return [m.view(b, -1, h, w) for m in masks]


class _SharedPixelProducts(torch.autograd.Function):
    """pixels (B, N, C) and embeddings E_i (B, Q_i, C) -> E_i @ pixels^T, (B, Q_i, N) each."""

    @staticmethod
    def forward(ctx, pixels: torch.Tensor, *embeds: torch.Tensor):
        ctx.save_for_backward(pixels, *embeds)
        ctx.set_materialize_grads(False)  # a prediction outside the loss costs no product
        return tuple(torch.bmm(e, pixels.transpose(1, 2)) for e in embeds)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor):
        pixels, *embeds = ctx.saved_tensors
        grad_pixels = None
        grad_embeds = []
        for i, (embed, grad) in enumerate(zip(embeds, grads)):
            if grad is None:
                grad_embeds.append(None)
                continue
            grad_embeds.append(torch.bmm(grad, pixels) if ctx.needs_input_grad[1 + i] else None)
            if not ctx.needs_input_grad[0]:
                continue
            # (B, N, Q) @ (B, Q, C): the (B, N, C) layout of ``pixels``, summed in place.
            rows = grad.transpose(1, 2)
            if grad_pixels is None:
                grad_pixels = torch.bmm(rows, embed)
                if grad_pixels.dtype in _HALF:  # summed in float32; autograd casts it back
                    grad_pixels = grad_pixels.float()
            elif grad_pixels.dtype == grad.dtype:
                grad_pixels.baddbmm_(rows, embed)
            else:
                grad_pixels.add_(torch.bmm(rows, embed))
        return (grad_pixels, *grad_embeds)


_HALF = (torch.bfloat16, torch.float16)
