"""The per-image steps of :meth:`Mask2FormerImageProcessor.preprocess`: conversion, resize,
rescale and normalisation of images, and the matching label maps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .transforms import (
    get_output_size,
    rescale_and_normalize,
    resize_image,
    resize_label_map,
    to_label_array,
    to_rgb_array,
)

__all__ = ["PreprocessSettings", "split_maps", "prepare_image", "prepare_map", "looks_rescaled"]


@dataclass
class PreprocessSettings:
    """The processor's settings for one call (its own, or the call's overrides)."""

    do_resize: bool
    size: Dict[str, int]
    size_divisor: int
    resample: int
    do_rescale: bool
    rescale_factor: float
    do_normalize: bool
    image_mean: Sequence[float]
    image_std: Sequence[float]


def split_maps(segmentation_maps: Any, batched: bool, count: int) -> Optional[List[Any]]:
    """One label map per image (a batch may come as a list or an (N, H, W) array)."""
    if segmentation_maps is None:
        return None
    if not batched:
        maps = [segmentation_maps]
    elif isinstance(segmentation_maps, (list, tuple)):
        maps = list(segmentation_maps)
    elif getattr(segmentation_maps, "ndim", 0) == 3:
        maps = [segmentation_maps[i] for i in range(len(segmentation_maps))]
    else:
        maps = [segmentation_maps]
    if len(maps) != count:
        raise ValueError(f"got {count} images but {len(maps)} segmentation maps")
    return maps


def looks_rescaled(arr: np.ndarray) -> bool:
    """Whether a float image already holds 0..1 values (rescaling it again is a mistake)."""
    return arr.dtype != np.uint8 and bool(arr.size) and float(arr.max()) <= 1.0


def prepare_image(
    image: Any, index: int, settings: PreprocessSettings, input_data_format: Optional[str]
) -> Tuple[np.ndarray, Tuple[int, int], Tuple[int, int], bool]:
    """(h, w, 3) float32 model input of one image, its original and its resized size, and
    whether it looked rescaled already (see :func:`looks_rescaled`)."""
    arr = to_rgb_array(image, input_data_format, what=f"images[{index}]")
    rescaled = settings.do_rescale and looks_rescaled(arr)
    orig = out_size = arr.shape[:2]
    if settings.do_resize:
        out_size = get_output_size(arr.shape[0], arr.shape[1], settings.size, settings.size_divisor)
        arr = resize_image(arr, out_size, settings.resample)
    pixels = rescale_and_normalize(
        arr,
        settings.do_rescale,
        settings.rescale_factor,
        settings.do_normalize,
        settings.image_mean,
        settings.image_std,
    )
    return pixels, orig, out_size, rescaled


def prepare_map(
    seg_map: Any,
    index: int,
    image_size: Tuple[int, int],
    out_size: Tuple[int, int],
    do_resize: bool,
    image_name: str = "images",
) -> np.ndarray:
    """One label map, checked against its image's size and resized like it (nearest)."""
    seg = to_label_array(seg_map, what=f"segmentation_maps[{index}]")
    if seg.shape != tuple(image_size):
        raise ValueError(
            f"segmentation_maps[{index}] has size {seg.shape[0]}x{seg.shape[1]} but "
            f"{image_name}[{index}] has size {image_size[0]}x{image_size[1]}"
        )
    return resize_label_map(seg, out_size) if do_resize else seg
