"""Semantic maps: argmax over classes of ``sum_q P[q, c] * sigmoid(mask logit of q)``.

Evaluated coarse-to-fine (see :mod:`._tiles`) so that the result equals evaluating every pixel
(up to float rounding at exact ties), at a fraction of the cost:

1. Queries split into *major* ones (a class probability >= ``_MAJOR``) and the rest. A minor
   query adds at most ``P[q, c] * sigmoid(max of its logits)`` to class ``c`` anywhere: one
   residual bound per class. Tile bounds are computed for major queries only.
2. Per tile, class score bounds decide the tiles where one class beats every other.
3. In the other tiles, pixels are scored exactly with the major queries (tiles with a few
   candidate classes each get their own list; the rest share the union of theirs); a pixel is
   settled if its best class still wins against every other class plus that class's residual.
4. At the remaining pixels (near-ties, or regions only minor queries cover) the minor queries'
   upsampled logits are interpolated pixel by pixel and added.
"""

from __future__ import annotations

from typing import List, Tuple

import torch
import torch.nn.functional as F

from ._tiles import TiledLogits, upsample4

__all__ = ["semantic_map"]

_TILE_K = 4  # low-res nodes per tile side: 16x16-pixel tiles
_FEW = 4  # undecided tiles with at most this many candidate classes
_MAJOR = 0.01  # class probability that makes a query "major"
_DENSE = 0.5  # above this fraction of undecided tiles, evaluate every pixel at once


def semantic_map(
    probs: torch.Tensor, logits: torch.Tensor, crop: Tuple[int, int], target: Tuple[int, int]
) -> torch.Tensor:
    """probs (Q, C) class probabilities without no-object, logits (Q, h, w) -> (H, W) class ids
    at the target size (scores resized bilinearly from the crop when the sizes differ)."""
    major = (probs.amax(1) >= _MAJOR).nonzero()[:, 0]
    minor = (probs.amax(1) < _MAJOR).nonzero()[:, 0]
    tiled = TiledLogits(logits[major], crop, _TILE_K)
    th, tw = tiled.shape
    p_major = probs[major]
    residual = logits[minor].flatten(1).amax(1).sigmoid() @ probs[minor]  # (C,)
    # Class score bounds per tile: scores are increasing in every mask probability.
    low = tiled.lo.sigmoid().flatten(1).T @ p_major  # (T, C)
    high = tiled.hi.sigmoid().flatten(1).T @ p_major + residual
    # Float sums of up to Q terms may differ from exact ones by a few ulps: keep a margin.
    margin = 1e-5 * high.amax(1) + 1e-30
    if target != crop:
        # A target pixel blends input pixels of at most 2x2 neighbouring tiles: a class can only
        # win if it can beat, in the 3x3 neighbourhood, the class with the best guaranteed score.
        low = -F.max_pool2d(-low.T.reshape(-1, th, tw)[None], 3, 1, 1)[0].reshape(-1, th * tw).T
        high = F.max_pool2d(high.T.reshape(-1, th, tw)[None], 3, 1, 1)[0].reshape(-1, th * tw).T
        margin = F.max_pool2d(margin.view(1, th, tw), 3, 1, 1).flatten()
    best_low, best = low.max(1)
    candidates = high >= (best_low - margin)[:, None]  # (T, C)
    if target != crop:
        classes = candidates.any(0).nonzero()[:, 0]
        mask_probs = upsample4(logits)[:, : crop[0], : crop[1]].sigmoid()
        scores = torch.einsum("qc,qhw->chw", probs[:, classes], mask_probs)
        scores = F.interpolate(scores[None], size=target, mode="bilinear", align_corners=False)[0]
        return classes[scores.max(0).indices]

    count = candidates.sum(1)
    if (count > 1).float().mean() > _DENSE:
        # Mostly undecided (logits unlike a trained model's): one dense pass is cheaper.
        classes = candidates.any(0).nonzero()[:, 0]
        mask_probs = upsample4(logits)[:, : crop[0], : crop[1]].sigmoid().flatten(1)
        scores = mask_probs.T @ probs[:, classes]  # (H*W, classes)
        return classes[scores.argmax(-1)].view(crop)
    tiles: List[torch.Tensor] = []
    patches: List[torch.Tensor] = []
    few = ((count > 1) & (count <= _FEW)).nonzero()[:, 0]
    many = (count > _FEW).nonzero()[:, 0]
    for group, per_tile in ((few, True), (many, False)):
        if len(group) == 0:
            continue
        if per_tile:
            classes = _candidate_list(candidates[group], best[group])  # (N, F)
        else:  # tiles with many candidates share the union of their classes
            classes = candidates[group].any(0).nonzero()[:, 0]  # (F,)
        ty, tx = group // tw, group % tw
        scores = _scores(tiled, ty, tx, p_major, classes)  # (N, P, F) from major queries only
        if not per_tile:  # classes that cannot win in a tile stay out of its argmax
            scores.masked_fill_(~candidates[group][:, classes][:, None, :], float("-inf"))
        pick = scores.argmax(-1)
        # Settled where the best beats every other class even with that class's residual.
        res = residual[classes] if per_tile else residual[classes].expand(len(group), -1)
        rival = scores + res[:, None, :] + margin[group][:, None, None]
        if per_tile:  # the padding repeats a class: none of its copies is a rival
            picked = classes.gather(1, pick)  # (N, P)
            rival.masked_fill_(classes[:, None, :] == picked[..., None], float("-inf"))
        else:
            rival.scatter_(2, pick[..., None], float("-inf"))
        unsettled = (scores.gather(2, pick[..., None])[..., 0] <= rival.amax(-1)).nonzero()
        if len(unsettled) and len(minor):
            n, px = unsettled[:, 0], unsettled[:, 1]
            rows = ty[n] * tiled.tile + torch.div(px, tiled.tile, rounding_mode="floor")
            cols = tx[n] * tiled.tile + px % tiled.tile
            cls = classes[n] if per_tile else classes
            extra = _minor_scores(logits[minor], probs[minor], rows, cols, cls)
            pick[n, px] = (scores[n, px] + extra).argmax(-1)
        tiles.append(group)
        patches.append(classes.gather(1, pick) if per_tile else classes[pick])
    if not tiles:
        empty = torch.empty(0, dtype=torch.long)
        return tiled.assemble(best.view(th, tw), empty, empty, empty.view(0, 1, 1))
    done = torch.cat(tiles)
    exact = torch.cat(patches).view(-1, tiled.tile, tiled.tile)
    return tiled.assemble(best.view(th, tw), done // tw, done % tw, exact)


def _minor_scores(
    logits: torch.Tensor,
    probs: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    classes: torch.Tensor,
) -> torch.Tensor:
    """Class scores (M, F) that queries (K, h, w) with probabilities (K, C) add at M pixels of
    the 4x upsampled map, for classes (M, F) per pixel or (F,) shared."""
    h, w = logits.shape[1:]

    def source(index: torch.Tensor, size: int):
        # align_corners=False: pixel centre (i + 0.5) / 4 - 0.5, clamped at the border.
        src = ((index.float() + 0.5) * 0.25 - 0.5).clamp(min=0)
        low = src.floor().long().clamp(max=size - 1)
        return low, (low + 1).clamp(max=size - 1), src - low

    r0, r1, dr = source(rows, h)
    c0, c1, dc = source(cols, w)
    top = logits[:, r0, c0] * (1 - dc) + logits[:, r0, c1] * dc
    bottom = logits[:, r1, c0] * (1 - dc) + logits[:, r1, c1] * dc
    mask_probs = (top * (1 - dr) + bottom * dr).sigmoid().T  # (M, K)
    if classes.dim() == 1:
        return mask_probs @ probs[:, classes]
    return torch.einsum("mk,mfk->mf", mask_probs, probs.T[classes])


def _candidate_list(candidates: torch.Tensor, best: torch.Tensor) -> torch.Tensor:
    """(N, C) bool -> (N, _FEW) candidate class ids in increasing order, padded with ``best``
    (a repeated class cannot change the argmax: the first of equal scores wins)."""
    key = candidates * torch.arange(candidates.shape[1], 0, -1)
    top_key, classes = key.topk(_FEW, dim=1)
    return torch.where(top_key > 0, classes, best[:, None])


def _scores(
    tiled: TiledLogits,
    ty: torch.Tensor,
    tx: torch.Tensor,
    probs: torch.Tensor,
    classes: torch.Tensor,
) -> torch.Tensor:
    """Exact class scores (N, P, F) of the pixels of tiles (ty, tx) for classes (N, F) per tile
    or (F,) shared."""
    mask_probs = tiled.tiles(ty, tx).sigmoid().flatten(2)  # (N, K, P)
    weights = probs[:, classes] if classes.dim() == 1 else probs.T[classes].transpose(1, 2)
    return mask_probs.transpose(1, 2) @ weights
