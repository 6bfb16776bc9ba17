"""Training augmentation of the original Mask2Former recipes, on samples of this package.

* :class:`LargeScaleJitter` (COCO panoptic / instance): random horizontal flip, resize so the
  image fits a random ``scale`` (0.1-2.0) times the crop, random fixed-size crop, padding to the
  crop size (detectron2's ``RandomFlip`` + ``ResizeScale`` + ``FixedSizeCrop``).
* :class:`ResizeShortestEdgeCrop` (ADE20K-style semantic): resize the short side to a random
  choice, random crop (optionally avoiding crops dominated by one class, ``cat_max_ratio``),
  random flip, pad to the crop size.

Both take a sample dict (``image``, ``masks``, per-mask arrays, optional ``semantic``) and a
``numpy.random.Generator``; the same generator state gives the same output. Masks are moved
with the image, and so are ``semantic`` / ``panoptic`` maps (padded with ``ignore_index`` / 0);
masks left empty are dropped together with their per-mask entries; a stale ``segments_info`` is
removed. The output also has ``pixel_mask`` (H, W) bool, False on padding.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

__all__ = ["LargeScaleJitter", "ResizeShortestEdgeCrop", "PER_MASK_KEYS", "MAP_KEYS"]

#: (H, W) maps moved with the image, and the value their padding gets (None: ``ignore_index``).
MAP_KEYS = {"semantic": None, "panoptic": 0}

#: Arrays with one entry per mask, filtered alongside ``masks``.
PER_MASK_KEYS = ("labels", "isthing", "iscrowd", "segment_ids", "annotation_ids", "scores")

Size = Union[int, Tuple[int, int]]


def _pair(size: Size) -> Tuple[int, int]:
    return (
        (int(size), int(size))
        if isinstance(size, (int, np.integer))
        else (int(size[0]), int(size[1]))
    )


def _nearest_index(src: int, dst: int) -> np.ndarray:
    """Source index of each of ``dst`` output pixels, pixel centres aligned (as PIL NEAREST)."""
    return np.minimum(((np.arange(dst) + 0.5) * (src / dst)).astype(np.int64), src - 1)


def _flip(sample: Dict[str, Any]) -> Dict[str, Any]:
    out = dict(sample)
    out["image"] = sample["image"][:, ::-1]
    out["masks"] = sample["masks"][:, :, ::-1]
    for key in MAP_KEYS:
        if key in sample:
            out[key] = sample[key][:, ::-1]
    return out


def _resize_crop_pad(
    sample: Dict[str, Any],
    new_hw: Tuple[int, int],
    box: Tuple[int, int, int, int],
    out_hw: Tuple[int, int],
    pad_value: float,
    ignore_index: int,
) -> Dict[str, Any]:
    """Resize to ``new_hw``, keep ``box`` = (y0, x0, h, w) of it, pad bottom/right to ``out_hw``.

    Masks and the semantic map are gathered straight from the source with nearest-neighbour
    indices of the cropped window only, so a 2x upscale never materialises (N, 2H, 2W) masks.
    """
    h, w = sample["image"].shape[:2]
    nh, nw = new_hw
    y0, x0, ch, cw = box
    oh, ow = out_hw
    img = Image.fromarray(np.ascontiguousarray(sample["image"])).resize((nw, nh), Image.BILINEAR)
    image = np.full((oh, ow, 3), pad_value, dtype=np.uint8)
    image[:ch, :cw] = np.asarray(img)[y0 : y0 + ch, x0 : x0 + cw]
    rows = _nearest_index(h, nh)[y0 : y0 + ch]
    cols = _nearest_index(w, nw)[x0 : x0 + cw]
    out = dict(sample)
    out["image"] = image
    masks = np.zeros((sample["masks"].shape[0], oh, ow), dtype=bool)
    masks[:, :ch, :cw] = sample["masks"][:, rows[:, None], cols[None, :]]
    out["masks"] = masks
    for key, pad in MAP_KEYS.items():
        if key in sample:
            arr = np.full((oh, ow), ignore_index if pad is None else pad, dtype=np.int64)
            arr[:ch, :cw] = sample[key][rows[:, None], cols[None, :]]
            out[key] = arr
    # Areas and boxes of the segment list no longer hold; the masks are the truth now.
    out.pop("segments_info", None)
    pixel_mask = np.zeros((oh, ow), dtype=bool)
    pixel_mask[:ch, :cw] = True
    out["pixel_mask"] = pixel_mask
    return out


def _drop_empty(sample: Dict[str, Any]) -> Dict[str, Any]:
    keep = sample["masks"].any(axis=(1, 2))
    if keep.all():
        return sample
    out = dict(sample)
    out["masks"] = sample["masks"][keep]
    for key in PER_MASK_KEYS:
        if key in sample:
            out[key] = np.asarray(sample[key])[keep]
    return out


class LargeScaleJitter:
    """Large-scale jitter: flip, scale to ``[min_scale, max_scale]`` x crop, crop, pad.

    Args:
        crop_size: output (height, width) or one int; 1024 in the original COCO recipe.
        min_scale, max_scale: range of the random scale of the crop size the image is fitted to.
        flip_prob: probability of a horizontal flip.
        pad_value: image value of padding (128 as detectron2's ``FixedSizeCrop``); masks are
            padded with False, a semantic map with ``ignore_index``.
    """

    def __init__(
        self,
        crop_size: Size = 1024,
        min_scale: float = 0.1,
        max_scale: float = 2.0,
        flip_prob: float = 0.5,
        pad_value: float = 128,
        ignore_index: int = 255,
    ) -> None:
        if not 0 < min_scale <= max_scale:
            raise ValueError("need 0 < min_scale <= max_scale")
        self.crop_size = _pair(crop_size)
        self.min_scale, self.max_scale = float(min_scale), float(max_scale)
        self.flip_prob = float(flip_prob)
        self.pad_value = pad_value
        self.ignore_index = ignore_index

    def __call__(self, sample: Dict[str, Any], rng: np.random.Generator) -> Dict[str, Any]:
        """Augment one sample (not modified in place); output images are ``crop_size``."""
        if rng.uniform() < self.flip_prob:
            sample = _flip(sample)
        h, w = sample["image"].shape[:2]
        th, tw = self.crop_size
        s = rng.uniform(self.min_scale, self.max_scale)
        # Fit the image inside the scaled crop, keeping its aspect ratio (ResizeScale).
        scale = min(s * th / h, s * tw / w)
        nh, nw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
        # Random offset where the image is larger than the crop (FixedSizeCrop).
        y0 = int(round(max(nh - th, 0) * rng.uniform()))
        x0 = int(round(max(nw - tw, 0) * rng.uniform()))
        box = (y0, x0, min(th, nh), min(tw, nw))
        out = _resize_crop_pad(sample, (nh, nw), box, (th, tw), self.pad_value, self.ignore_index)
        return _drop_empty(out)


class ResizeShortestEdgeCrop:
    """Semantic-segmentation augmentation: random short-side resize, random crop, flip, pad.

    Args:
        crop_size: (height, width) or one int; 512 in the original ADE20K recipe.
        short_edges: choices for the resized short side. Default: as the original ADE20K recipe
            scaled to the crop, ``int(crop * 1.25 * x / 10)`` for x in 5..20 (320..1280 for 512).
        max_size: cap of the long side after resizing (default 5 x crop, 2560 for 512).
        cat_max_ratio: when < 1, up to 10 crops are drawn until no class (``ignore_index``
            excluded) covers more than this fraction of the crop (detectron2's
            ``RandomCrop_CategoryAreaConstraint``); 1.0, the original's setting, disables it.
        flip_prob: probability of a horizontal flip (after the crop, as in the original).
        pad_value, ignore_index: padding of the image and of the semantic map.
    """

    def __init__(
        self,
        crop_size: Size = 512,
        short_edges: Optional[Sequence[int]] = None,
        max_size: Optional[int] = None,
        cat_max_ratio: float = 1.0,
        flip_prob: float = 0.5,
        pad_value: float = 128,
        ignore_index: int = 255,
    ) -> None:
        self.crop_size = _pair(crop_size)
        base = min(self.crop_size) * 1.25
        self.short_edges = tuple(short_edges or [int(base * x / 10) for x in range(5, 21)])
        self.max_size = int(max_size or 5 * max(self.crop_size))
        self.cat_max_ratio = float(cat_max_ratio)
        self.flip_prob = float(flip_prob)
        self.pad_value = pad_value
        self.ignore_index = ignore_index

    def _class_map(self, sample: Dict[str, Any]) -> np.ndarray:
        if "semantic" in sample:
            return sample["semantic"]
        sem = np.full(sample["masks"].shape[1:], self.ignore_index, dtype=np.int64)
        for m, label in zip(sample["masks"], sample["labels"]):
            sem[m] = label
        return sem

    def __call__(self, sample: Dict[str, Any], rng: np.random.Generator) -> Dict[str, Any]:
        """Augment one sample (not modified in place); output images are ``crop_size``."""
        h, w = sample["image"].shape[:2]
        short = self.short_edges[int(rng.integers(len(self.short_edges)))]
        scale = short / min(h, w)
        if max(h, w) * scale > self.max_size:
            scale = self.max_size / max(h, w)
        nh, nw = max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))
        ch, cw = min(self.crop_size[0], nh), min(self.crop_size[1], nw)

        def draw() -> Tuple[int, int]:
            return int(rng.integers(nh - ch + 1)), int(rng.integers(nw - cw + 1))

        y0, x0 = draw()
        if self.cat_max_ratio < 1.0:
            sem = self._class_map(sample)
            rows, cols = _nearest_index(h, nh), _nearest_index(w, nw)
            for _ in range(10):
                crop = sem[rows[y0 : y0 + ch, None], cols[None, x0 : x0 + cw]]
                _, cnt = np.unique(crop[crop != self.ignore_index], return_counts=True)
                if len(cnt) > 1 and cnt.max() / cnt.sum() < self.cat_max_ratio:
                    break
                y0, x0 = draw()
        out = _resize_crop_pad(
            sample, (nh, nw), (y0, x0, ch, cw), self.crop_size, self.pad_value, self.ignore_index
        )
        if rng.uniform() < self.flip_prob:
            # Flip only the valid window so padding stays bottom/right.
            out = dict(out)
            for key in ("image", *MAP_KEYS):
                if key in out:
                    arr = out[key].copy()
                    arr[:ch, :cw] = arr[:ch, :cw][:, ::-1]
                    out[key] = arr
            masks = out["masks"].copy()
            masks[:, :ch, :cw] = masks[:, :ch, :cw][:, :, ::-1]
            out["masks"] = masks
        return _drop_empty(out)
