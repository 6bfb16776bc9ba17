"""Image and label-map transforms of the image processor: conversion to RGB arrays, the output size
rule, resizing, rescaling, normalization and padding.

Images travel as ``(H, W, 3)`` numpy arrays, either ``uint8`` or ``float32`` on the 0..255 scale
(16-bit images are brought to that scale), so that the rescale factor (1/255 by default) means the
same thing for every input type.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageOps

__all__ = [
    "to_rgb_array",
    "to_label_array",
    "normalize_size",
    "get_output_size",
    "resize_image",
    "resize_label_map",
    "rescale_and_normalize",
    "pad_to",
]

_CHANNEL_COUNTS = (1, 2, 3, 4)


def _is_torch_tensor(x: Any) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return isinstance(x, torch.Tensor)


def _channels_last(arr: np.ndarray, input_data_format: Optional[str], what: str) -> np.ndarray:
    """(H, W, C) view of a 3-d array given or guessing where its channel axis is."""
    fmt = _data_format(input_data_format)
    if fmt is None:
        first, last = arr.shape[0] in _CHANNEL_COUNTS, arr.shape[-1] in _CHANNEL_COUNTS
        if first and not last:
            fmt = "channels_first"
        elif last:
            # A (3, H, 3) image is ambiguous; like the reference, prefer the leading axis then.
            fmt = "channels_first" if first and arr.shape[0] in (1, 3) else "channels_last"
        else:
            raise ValueError(
                f"{what} has shape {arr.shape}: cannot find a channel axis of size 1, 2, 3 or 4 "
                "(pass input_data_format to say where it is)"
            )
    return np.moveaxis(arr, 0, -1) if fmt == "channels_first" else arr


def _data_format(fmt: Any) -> Optional[str]:
    if fmt is None:
        return None
    value = getattr(fmt, "value", fmt)
    if value in ("channels_first", "channels_last"):
        return value
    raise ValueError(f"data format must be 'channels_first' or 'channels_last', got {fmt!r}")


def to_rgb_array(image: Any, input_data_format: Optional[str] = None, what: str = "image"):
    """Any supported image as an ``(H, W, 3)`` array, ``uint8`` or ``float32`` on the 0..255 scale.

    PIL images are turned upright by their EXIF orientation (the reference ignores it); grayscale,
    grayscale+alpha, RGBA, palette and CMYK images become RGB (alpha is dropped); 16-bit data is
    scaled by 255/65535. Numpy arrays and torch tensors may be (H, W), (H, W, C) or (C, H, W).
    """
    if isinstance(image, Image.Image):
        image = ImageOps.exif_transpose(image)
        if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
            arr = np.asarray(image)
        else:
            arr = np.asarray(image.convert("RGB"))
        # A PIL image's channels are last; guessing would misread tiny images (1x1 as 3x1).
        input_data_format = "channels_last"
    elif isinstance(image, np.ndarray):
        arr = image
    elif _is_torch_tensor(image):
        arr = image.detach().cpu().numpy()
    else:
        raise TypeError(
            f"{what} has unsupported type {type(image).__name__}: expected a PIL.Image.Image, a "
            "numpy.ndarray or a torch.Tensor"
        )
    if arr.ndim == 2:
        arr = arr[:, :, None]
    elif arr.ndim == 3:
        arr = _channels_last(arr, input_data_format, what)
    else:
        raise ValueError(f"{what} must have 2 or 3 dimensions, got shape {tuple(arr.shape)}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{what} is empty (size {arr.shape[0]}x{arr.shape[1]})")
    arr = _to_255_scale(arr, what)
    channels = arr.shape[2]
    if channels in (1, 2):  # gray (+ alpha)
        arr = np.repeat(arr[:, :, :1], 3, axis=2)
    elif channels == 4:  # RGBA: drop alpha as PIL's convert("RGB") does
        arr = arr[:, :, :3]
    return np.ascontiguousarray(arr)


def _to_255_scale(arr: np.ndarray, what: str) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if arr.dtype == np.uint16 or (
        np.issubdtype(arr.dtype, np.integer) and arr.size and arr.max() > 255
    ):
        if arr.min() < 0 or arr.max() > 65535:
            raise ValueError(f"{what} has integer values outside 0..65535")
        return (arr.astype(np.float32) * np.float32(255.0 / 65535.0)).astype(np.float32)
    if np.issubdtype(arr.dtype, np.integer):
        if arr.min() < 0:
            raise ValueError(f"{what} has negative integer values")
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
        if not np.isfinite(arr).all():
            raise ValueError(f"{what} contains NaN or infinite values")
        return arr
    raise TypeError(f"{what} has unsupported dtype {arr.dtype}")


def to_label_array(seg_map: Any, what: str = "segmentation map") -> np.ndarray:
    """A label map (PIL image, array or tensor; (H, W) or with one channel) as an int64 (H, W)."""
    if isinstance(seg_map, Image.Image):
        arr = np.asarray(seg_map)
    elif isinstance(seg_map, np.ndarray):
        arr = seg_map
    elif _is_torch_tensor(seg_map):
        arr = seg_map.detach().cpu().numpy()
    else:
        raise TypeError(
            f"{what} has unsupported type {type(seg_map).__name__}: expected a PIL.Image.Image, "
            "a numpy.ndarray or a torch.Tensor"
        )
    if arr.ndim == 3 and 1 in (arr.shape[0], arr.shape[-1]):
        arr = arr.reshape(arr.shape[1:] if arr.shape[0] == 1 else arr.shape[:-1])
    if arr.ndim != 2:
        raise ValueError(f"{what} must be (H, W) or have a single channel, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{what} is empty (size {arr.shape[0]}x{arr.shape[1]})")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.array_equal(arr, np.round(arr)):
            raise ValueError(f"{what} must hold integer labels, got non-integer values")
    elif not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        raise TypeError(f"{what} has unsupported dtype {arr.dtype}")
    return arr.astype(np.int64)


# The forms of a size dict: 4.37.2's three, and 5.x's fit-inside box.
SIZE_KEYS = (
    {"shortest_edge", "longest_edge"},
    {"height", "width"},
    {"shortest_edge"},
    {"max_height", "max_width"},
)


def normalize_size(size: Any, max_size: Optional[int] = None) -> Dict[str, int]:
    """The ``size`` argument as a dict: an int is the shortest edge (longest edge ``max_size``),
    a pair is (height, width), a dict must have shortest_edge (and optionally longest_edge),
    height and width, or max_height and max_width (transformers 5.x)."""
    if isinstance(size, bool):
        raise TypeError(f"size must be an int, a (height, width) pair or a dict, got {size!r}")
    if isinstance(size, int):
        out = {"shortest_edge": size}
        if max_size is not None:
            out["longest_edge"] = max_size
        return out
    if isinstance(size, (tuple, list)) and len(size) == 2:
        return {"height": int(size[0]), "width": int(size[1])}
    if isinstance(size, dict):
        keys = set(size)
        if keys in SIZE_KEYS:
            return {k: int(v) for k, v in size.items()}
    raise ValueError(
        "size must be an int, a (height, width) pair or a dict with keys {'shortest_edge', "
        "'longest_edge'}, {'height', 'width'}, {'shortest_edge'} or {'max_height', "
        f"'max_width'}}; got {size!r}"
    )


def get_output_size(
    height: int, width: int, size: Dict[str, int], size_divisor: int = 0
) -> Tuple[int, int]:
    """(height, width) after resizing: the reference's rule, sides rounded up to size_divisor.

    With shortest_edge s and longest_edge m the short side becomes s and the long side
    ``int(s * long / short)``; if that exceeds m, the long side becomes m and the short side
    ``int(m * s / long)``. 480x640 -> 800x1066 -> 800x1088 with size_divisor 32. With
    max_height and max_width (transformers 5.x) the image is scaled, up or down, by the largest
    factor that fits both: 100x200 in 50x50 -> 25x50.
    """
    if "height" in size:
        out_h, out_w = size["height"], size["width"]
    elif "max_height" in size:
        scale = min(size["max_height"] / height, size["max_width"] / width)
        out_h, out_w = int(height * scale), int(width * scale)
    else:
        short, long = (height, width) if height <= width else (width, height)
        new_short = size["shortest_edge"]
        new_long = int(new_short * long / short)
        max_size = size.get("longest_edge")
        if max_size is not None:
            if max_size <= new_short:
                raise ValueError(
                    f"longest_edge ({max_size}) must be larger than shortest_edge ({new_short})"
                )
            if new_long > max_size:
                new_short, new_long = int(max_size * new_short / new_long), max_size
        out_h, out_w = (new_short, new_long) if height <= width else (new_long, new_short)
    if size_divisor and size_divisor > 0:
        out_h = int(math.ceil(out_h / size_divisor) * size_divisor)
        out_w = int(math.ceil(out_w / size_divisor) * size_divisor)
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f"resizing a {height}x{width} image with {size} gives an empty image")
    return out_h, out_w


def resize_image(image: np.ndarray, out_size: Tuple[int, int], resample: int) -> np.ndarray:
    """Resize an (H, W, 3) image with PIL (as the reference, so pixels agree).

    uint8 images are resized as 8-bit RGB. Float images are resized channel by channel in
    32-bit float mode, so no precision is lost (the reference quantizes them to 8 bits).
    """
    out_h, out_w = out_size
    if image.shape[:2] == (out_h, out_w):
        return image
    if image.dtype == np.uint8:
        resized = Image.fromarray(image, "RGB").resize((out_w, out_h), resample=resample)
        return np.asarray(resized)
    channels = [
        np.asarray(Image.fromarray(image[:, :, c], "F").resize((out_w, out_h), resample=resample))
        for c in range(image.shape[2])
    ]
    return np.stack(channels, axis=2)


def _nearest_index(in_len: int, out_len: int) -> np.ndarray:
    # PIL's nearest rule: output pixel centre (i + 0.5) scaled into the input, then floored.
    scale = in_len / out_len
    idx = np.floor((np.arange(out_len, dtype=np.float64) + 0.5) * scale).astype(np.int64)
    return np.minimum(idx, in_len - 1)


def resize_label_map(seg_map: np.ndarray, out_size: Tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an (H, W) label map, picking the pixels PIL's NEAREST picks,
    but for any label value (the reference goes through 8-bit images and fails above 255)."""
    out_h, out_w = out_size
    if seg_map.shape == (out_h, out_w):
        return seg_map
    rows = _nearest_index(seg_map.shape[0], out_h)
    cols = _nearest_index(seg_map.shape[1], out_w)
    return seg_map[rows[:, None], cols[None, :]]


def rescale_and_normalize(
    image: np.ndarray,
    do_rescale: bool,
    rescale_factor: float,
    do_normalize: bool,
    mean: Union[float, Sequence[float]],
    std: Union[float, Sequence[float]],
) -> np.ndarray:
    """float32 (H, W, 3): ``(image * rescale_factor - mean) / std`` (each step optional).

    An 8-bit image has only 256 values per channel: the same arithmetic runs on a table of
    them, and each pixel is one lookup (the same float32 numbers, a quarter of the time). That
    result lies channels-first in memory, the model's layout, seen as (H, W, 3).
    """
    steps = (do_rescale, rescale_factor, do_normalize, mean, std)
    if image.dtype != np.uint8 or image.ndim != 3:
        return _arithmetic(image, steps)
    levels = np.arange(256, dtype=np.uint8)[:, None].repeat(image.shape[2], axis=1)
    table = np.ascontiguousarray(_arithmetic(levels, steps).T)  # (C, 256)
    out = np.empty((image.shape[2],) + image.shape[:2], dtype=np.float32)
    for channel, values in enumerate(table):
        # mode="clip" never clips a uint8 index; it lets take write into out unbuffered.
        np.take(values, image[..., channel], out=out[channel], mode="clip")
    return out.transpose(1, 2, 0)


def _arithmetic(image: np.ndarray, steps: tuple) -> np.ndarray:
    """:func:`rescale_and_normalize` elementwise; ``steps`` are its arguments after the image."""
    do_rescale, rescale_factor, do_normalize, mean, std = steps
    out = image.astype(np.float32)
    if do_rescale:
        out = (out * np.float64(rescale_factor)).astype(np.float32)
    if do_normalize:
        mean_arr = np.broadcast_to(np.asarray(mean, dtype=np.float32), (3,))
        std_arr = np.broadcast_to(np.asarray(std, dtype=np.float32), (3,))
        out = (out - mean_arr) / std_arr
    return out


def pad_to(array: np.ndarray, height: int, width: int, value: float = 0) -> np.ndarray:
    """Pad the first two axes of ``array`` at the bottom and right to (height, width)."""
    pad_h, pad_w = height - array.shape[0], width - array.shape[1]
    if pad_h == 0 and pad_w == 0:
        return array
    pads = [(0, pad_h), (0, pad_w)] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, pads, mode="constant", constant_values=value)
