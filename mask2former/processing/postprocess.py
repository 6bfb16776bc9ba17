"""From Mask2Former outputs to semantic, instance and panoptic segmentations.

``outputs`` is any object with ``class_queries_logits`` (B, Q, C+1; the last class is "no object")
and ``masks_queries_logits`` (B, Q, h, w). Mask logits are first taken to the network input size,
(4h, 4w), bilinearly (align_corners=False). Where the processor padded an image, the padding is cut
off before anything is resized to a target size: the real (height, width) of each image in input
coordinates comes from ``image_sizes=`` or, when not given, from ``outputs.image_sizes`` (the model
fills it from ``pixel_mask``); without either the whole input is the image. Results have the target
size, or without ``target_sizes`` the (cropped) input size.

The reference (transformers 4.37.2) resizes mask logits to a fixed 384x384 instead; for unpadded
384x384 inputs (96x96 masks) both agree. Other deliberate differences are listed per function.
All work is vectorized over queries and pixels (only images are looped over); large maps are
evaluated coarse-to-fine (:mod:`._tiles`), which gives the same decisions as evaluating every pixel
(up to float rounding at exact ties).
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import torch
import torch.nn.functional as F

from ..coco import encode_masks
from ._semantic import semantic_map
from ._tiles import TiledLogits, upsample4  # noqa: F401  (upsample4 is part of the API)

__all__ = [
    "post_process_semantic_segmentation",
    "post_process_instance_segmentation",
    "post_process_panoptic_segmentation",
]

_TILE_K = 4  # low-res nodes per tile side: 16x16-pixel tiles


def _prepare(outputs: Any, target_sizes: Any, image_sizes: Any):
    """Logits as float tensors and, per image, its crop (real size) and target size."""
    try:
        class_logits = outputs.class_queries_logits
        mask_logits = outputs.masks_queries_logits
    except AttributeError:
        raise TypeError("outputs must have class_queries_logits and masks_queries_logits") from None
    if class_logits.dim() != 3 or mask_logits.dim() != 4:
        raise ValueError(
            "expected class_queries_logits (B, Q, C+1) and masks_queries_logits (B, Q, h, w), got "
            f"{tuple(class_logits.shape)} and {tuple(mask_logits.shape)}"
        )
    if class_logits.shape[:2] != mask_logits.shape[:2]:
        raise ValueError("class_queries_logits and masks_queries_logits disagree on (B, Q)")
    batch = class_logits.shape[0]
    input_size = (4 * mask_logits.shape[-2], 4 * mask_logits.shape[-1])
    if image_sizes is None:
        image_sizes = getattr(outputs, "image_sizes", None)
    crops = _sizes(image_sizes, batch, "image_sizes") if image_sizes is not None else None
    if crops is None:
        crops = [input_size] * batch
    for i, (h, w) in enumerate(crops):
        if h > input_size[0] or w > input_size[1]:
            raise ValueError(
                f"image_sizes[{i}] = {(h, w)} is larger than the network input {input_size}"
            )
    targets = _sizes(target_sizes, batch, "target_sizes") if target_sizes is not None else crops
    return class_logits.float(), mask_logits.float(), crops, targets


def _sizes(sizes: Any, batch: int, name: str) -> List[Tuple[int, int]]:
    if isinstance(sizes, torch.Tensor):
        sizes = sizes.tolist()
    sizes = list(sizes)
    if len(sizes) != batch:
        raise ValueError(f"{name} has {len(sizes)} entries for a batch of {batch}")
    out = []
    for i, s in enumerate(sizes):
        if len(s) != 2 or int(s[0]) <= 0 or int(s[1]) <= 0:
            raise ValueError(f"{name}[{i}] must be a positive (height, width), got {s}")
        out.append((int(s[0]), int(s[1])))
    return out


def _bilinear(maps: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[None], size=size, mode="bilinear", align_corners=False)[0]


def _first_argmax(values: torch.Tensor) -> torch.Tensor:
    """Index of the first maximum along dim 0 of (K, H, W) ((K, H, W).argmax(0) is slow on CPU)."""
    return values.max(dim=0).indices


# --------------------------------------------------------------------------------- semantic
def post_process_semantic_segmentation(
    outputs: Any,
    target_sizes: Optional[Sequence[Tuple[int, int]]] = None,
    image_sizes: Optional[Sequence[Tuple[int, int]]] = None,
) -> List[torch.Tensor]:
    """One (H, W) int64 map of class ids per image.

    Per pixel: argmax over classes of sum over queries of softmax class probability (no-object
    excluded) x sigmoid mask probability, computed at the input size and then resized (bilinear)
    to the target size, as the reference does (at 384x384).
    """
    class_logits, mask_logits, crops, targets = _prepare(outputs, target_sizes, image_sizes)
    probs = class_logits.softmax(-1)[..., :-1]  # (B, Q, C)
    return [
        semantic_map(probs[i], mask_logits[i], crops[i], targets[i]) for i in range(probs.shape[0])
    ]


# --------------------------------------------------------------------------------- panoptic
def post_process_panoptic_segmentation(
    outputs: Any,
    threshold: float = 0.5,
    mask_threshold: float = 0.5,
    overlap_mask_area_threshold: float = 0.8,
    label_ids_to_fuse: Optional[Set[int]] = None,
    target_sizes: Optional[Sequence[Tuple[int, int]]] = None,
    image_sizes: Optional[Sequence[Tuple[int, int]]] = None,
    merge_fused: bool = False,
) -> List[Dict[str, Any]]:
    """One dict per image: ``segmentation`` (H, W) int32 segment ids (0 = no segment, ids from 1)
    and ``segments_info``: [{"id", "label_id", "was_fused", "score"}].

    Queries whose best class is not no-object and whose probability exceeds ``threshold`` compete;
    each pixel goes to the query with the highest probability x mask probability (computed at the
    input size, then resized bilinearly to the target). A query's segment is kept when the pixels
    it wins are more than ``overlap_mask_area_threshold`` of its own mask (pixels whose probability
    x mask probability >= ``mask_threshold``). Classes in ``label_ids_to_fuse`` get one id per image
    (each fused query still gets its own segments_info entry, as in the reference; with
    ``merge_fused`` a segment is listed once, with its best query's score). As in the
    reference, except that an image without any segment gets an all-0 map (the reference: -1),
    and that ids never collide (after reusing a fused class's id the reference restarts its
    counter from that id, so a later segment can get the id of an earlier one).
    """
    fuse = set(label_ids_to_fuse) if label_ids_to_fuse is not None else set()
    class_logits, mask_logits, crops, targets = _prepare(outputs, target_sizes, image_sizes)
    num_labels = class_logits.shape[-1] - 1
    scores, labels = class_logits.softmax(-1).max(-1)
    results = []
    for i in range(class_logits.shape[0]):
        keep = (labels[i] != num_labels) & (scores[i] > threshold)
        args = (scores[i][keep], labels[i][keep], mask_logits[i][keep], crops[i], targets[i])
        result = _panoptic_one(*args, mask_threshold, overlap_mask_area_threshold, fuse)
        if merge_fused:
            result["segments_info"] = _merge_fused(result["segments_info"])
        results.append(result)
    return results


def _merge_fused(segments: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One entry per segment id, with the best score among the queries fused into it."""
    best: Dict[int, Dict[str, Any]] = {}
    for s in segments:
        if s["id"] not in best or s["score"] > best[s["id"]]["score"]:
            best[s["id"]] = s
    return [best[i] for i in sorted(best)]


def _panoptic_one(
    scores: torch.Tensor,
    labels: torch.Tensor,
    logits: torch.Tensor,
    crop: Tuple[int, int],
    target: Tuple[int, int],
    mask_threshold: float,
    overlap: float,
    fuse: Set[int],
) -> Dict[str, Any]:
    num = scores.shape[0]
    if num == 0:
        return {"segmentation": torch.zeros(target, dtype=torch.int32), "segments_info": []}
    weights = scores.view(-1, 1, 1)
    if target != crop:
        probs = _bilinear(upsample4(logits)[:, : crop[0], : crop[1]].sigmoid(), target) * weights
        owner = _first_argmax(probs)
        won = torch.bincount(owner.flatten(), minlength=num)
        own = (probs >= mask_threshold).flatten(1).sum(1)
    else:
        owner, won, own = _panoptic_tiled(logits, weights, crop, mask_threshold)
    ratio = won.float() / own.float()
    valid = (won > 0) & (own > 0) & (ratio > overlap)
    ids, fused = _segment_ids(labels, valid, fuse)
    lut = torch.where(valid, ids, torch.zeros_like(ids)).to(torch.int32)
    segments = [
        {
            "id": int(ids[k]),
            "label_id": int(labels[k]),
            "was_fused": bool(fused[k]),
            "score": round(float(scores[k]), 6),
        }
        for k in valid.nonzero()[:, 0].tolist()
    ]
    return {"segmentation": lut[owner], "segments_info": segments}


def _panoptic_tiled(
    logits: torch.Tensor, weights: torch.Tensor, crop: Tuple[int, int], mask_threshold: float
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Owner map (H, W), pixels won and pixels over the threshold per query, at the input size."""
    num = logits.shape[0]
    tiled = TiledLogits(logits, crop, _TILE_K)
    th, tw = tiled.shape
    low = tiled.lo.sigmoid() * weights  # (K, Th, Tw) bounds of score x mask probability
    high = tiled.hi.sigmoid() * weights
    margin = 1e-6
    best_low, best = low.max(0)
    rival = high.scatter(0, best[None], float("-inf")).amax(0)
    sure_owner = best_low > rival + margin
    above = low >= mask_threshold + margin  # whole tile over the threshold
    below = high < mask_threshold - margin
    decided = sure_owner & (above | below).all(0)
    own = (above & decided).long().mul(tiled.counts).flatten(1).sum(1)
    todo = (~decided).flatten().nonzero()[:, 0]
    ty, tx = todo // tw, todo % tw
    patches = torch.empty(0, tiled.tile, tiled.tile, dtype=torch.long)
    if len(todo):
        values = tiled.tiles(ty, tx).sigmoid() * weights  # (N, K, t, t)
        patches = values.max(1).indices
        over = values >= mask_threshold
        tiled.clip_to_crop(over, ty, tx)  # pixels beyond the crop do not count
        own += over.sum(dim=(0, 2, 3))
    owner = tiled.assemble(best, ty, tx, patches)
    return owner, torch.bincount(owner.flatten(), minlength=num), own


def _segment_ids(
    labels: torch.Tensor, valid: torch.Tensor, fuse: Set[int]
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Segment id per query (ids 1, 2, ... in query order; a fused class reuses its first id)."""
    fused = torch.tensor([int(x) in fuse for x in labels.tolist()], dtype=torch.bool)
    # A valid fused query that is not the first valid one of its class reuses that one's id.
    same = labels[:, None] == labels[None, :]
    earlier = torch.ones_like(same).tril(-1)
    repeat = fused & valid & (same & earlier & valid[None, :]).any(1)
    new = valid & ~repeat
    ids = torch.cumsum(new.long(), 0)
    first = (same & valid[None, :]).float().argmax(1)  # first valid query of the same class
    ids = torch.where(repeat, ids[first], ids)
    return ids, fused


# --------------------------------------------------------------------------------- instance
def post_process_instance_segmentation(
    outputs: Any,
    threshold: float = 0.5,
    mask_threshold: float = 0.5,
    overlap_mask_area_threshold: float = 0.8,
    target_sizes: Optional[Sequence[Tuple[int, int]]] = None,
    return_coco_annotation: bool = False,
    return_binary_maps: bool = False,
    image_sizes: Optional[Sequence[Tuple[int, int]]] = None,
    top_k: Optional[int] = None,
) -> List[Dict[str, Any]]:
    """One dict per image: ``segmentation`` and ``segments_info``: [{"id", "label_id",
    "was_fused", "score"}], instances sorted by decreasing score, ids 0, 1, ...

    Candidates are the top ``top_k`` (query, class) pairs by class probability (no-object
    excluded; default Q, the number of queries, as the reference; the original's COCO test
    setting is 100, so a query may then stand for several classes). A
    candidate's mask is where its mask probability exceeds ``mask_threshold`` (at the input size;
    nearest-resized to the target); its score is class probability x mean mask probability inside
    the mask. Instances with score >= ``threshold`` and a non-empty mask are kept, and among them
    those whose pixels not covered by a higher-scoring instance are more than
    ``overlap_mask_area_threshold`` of their mask (a negative value keeps all).

    ``segmentation``: an (H, W) int32 map of instance ids where each pixel shows the
    highest-scoring instance covering it (-1: none); with ``return_binary_maps`` an (N, H, W) bool
    tensor of full masks (overlaps included; N may be 0); with ``return_coco_annotation`` one COCO
    RLE dict per entry of segments_info, in the same order (decodable by pycocotools).

    Differences from the reference, which binarizes at 0.5 whatever ``mask_threshold`` says,
    ignores ``overlap_mask_area_threshold``, lets the last query win a pixel, keeps the
    top-k order, returns the id map instead of an empty stack when N = 0, and writes row-major RLE
    of the id map.
    """
    if return_coco_annotation and return_binary_maps:
        raise ValueError("return_coco_annotation and return_binary_maps cannot both be True")
    class_logits, mask_logits, crops, targets = _prepare(outputs, target_sizes, image_sizes)
    num_queries, num_classes = class_logits.shape[1], class_logits.shape[2] - 1
    probs = class_logits.softmax(-1)[..., :-1].flatten(1)  # (B, Q*C)
    if top_k is None:
        top_k = num_queries
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    top_probs, top_idx = probs.topk(min(top_k, probs.shape[1]), dim=1)
    # Mask probability means are below 1, so a score >= threshold needs a class probability above it.
    cut = threshold if threshold > 0 else -math.inf
    results = []
    for i in range(class_logits.shape[0]):
        keep = top_probs[i] >= cut
        cand_probs, cand_idx = top_probs[i][keep], top_idx[i][keep]
        queries = torch.div(cand_idx, num_classes, rounding_mode="floor")
        unique, inverse = torch.unique(queries, return_inverse=True)
        binary, mean_prob, area = _query_masks(
            mask_logits[i][unique], crops[i], targets[i], mask_threshold
        )
        scores = cand_probs * mean_prob[inverse]
        keep = ((scores >= threshold) & (area[inverse] > 0)).nonzero()[:, 0]
        keep = keep[scores[keep].argsort(descending=True, stable=True)]
        scores, labels = scores[keep], cand_idx[keep] % num_classes
        masks = binary[inverse[keep]]  # (N, H, W), by decreasing score
        owner = _first_cover(masks)
        if overlap_mask_area_threshold >= 0 and len(scores):
            visible = torch.bincount(owner.flatten() + 1, minlength=len(scores) + 1)[1:]
            ratio = visible.float() / area[inverse[keep]].float()
            keep = ratio > overlap_mask_area_threshold
            if not bool(keep.all()):
                masks, scores, labels = masks[keep], scores[keep], labels[keep]
                owner = _first_cover(masks)
        segments = [
            {"id": j, "label_id": int(c), "was_fused": False, "score": round(float(s), 6)}
            for j, (c, s) in enumerate(zip(labels.tolist(), scores.tolist()))
        ]
        if return_binary_maps:
            segmentation: Any = masks
        elif return_coco_annotation:
            segmentation = encode_masks(masks)
        else:
            segmentation = owner.to(torch.int32)
        results.append({"segmentation": segmentation, "segments_info": segments})
    return results


def _query_masks(
    logits: torch.Tensor, crop: Tuple[int, int], target: Tuple[int, int], mask_threshold: float
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Masks of U queries: (U, H, W) bool at the target size, mean mask probability inside the
    mask at the input size (U,), and mask area at the target size (U,).

    Only tiles whose logit bound reaches the threshold are evaluated: the others hold no mask
    pixel and add nothing to the sums.
    """
    num = logits.shape[0]
    if num == 0:
        return torch.zeros((0, *target), dtype=torch.bool), torch.zeros(0), torch.zeros(0)
    cut = _logit(mask_threshold)
    tiled = TiledLogits(logits, crop, _TILE_K)
    (th, tw), t = tiled.shape, tiled.tile
    q, ty, tx = (tiled.hi > cut).nonzero(as_tuple=True)
    values = tiled.pair_tiles(q, ty, tx)  # (M, t, t)
    binary = values > cut
    tiled.clip_to_crop(binary, ty, tx)
    prob_sum = torch.zeros(num).index_add_(0, q, (values.sigmoid() * binary).flatten(1).sum(1))
    count = torch.zeros(num).index_add_(0, q, binary.flatten(1).sum(1).float())
    canvas = torch.zeros(num, th, tw, t, t, dtype=torch.bool)
    canvas[q, ty, tx] = binary
    masks = canvas.permute(0, 1, 3, 2, 4).reshape(num, th * t, tw * t)[:, : crop[0], : crop[1]]
    if target != crop:
        masks = F.interpolate(masks[None].to(torch.uint8), size=target, mode="nearest")[0] > 0
        area = masks.flatten(1).sum(1)
    else:
        area = count
    return masks, prob_sum / (count + 1e-6), area


def _logit(p: float) -> float:
    """The logit above which sigmoid(x) > p (0.5 -> 0, as the reference's `> 0`)."""
    if p <= 0:
        return -math.inf
    if p >= 1:
        return math.inf
    return math.log(p / (1 - p))


def _first_cover(masks: torch.Tensor) -> torch.Tensor:
    """(H, W) index of the first mask covering each pixel of an (N, H, W) stack, -1 if none."""
    num = masks.shape[0]
    if num == 0:
        return torch.full(masks.shape[1:], -1, dtype=torch.long)
    dtype = torch.uint8 if num < 255 else torch.int32
    # Weight num - j for mask j: the largest weight present marks the first covering mask.
    weights = torch.arange(num, 0, -1, dtype=dtype).view(-1, 1, 1)
    top = (masks.to(dtype) * weights).amax(0).long()
    return torch.where(top > 0, num - top, torch.full_like(top, -1))
