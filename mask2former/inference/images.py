"""Reading the images a user hands in: paths, PIL images or arrays, to checked RGB arrays."""

from __future__ import annotations

import io
import os
import warnings
from typing import Any

import numpy as np

from ..processing.transforms import to_rgb_array

__all__ = ["ImageError", "load_image", "load_image_bytes", "MIN_SIDE", "MAX_ASPECT"]

MIN_SIDE = 8  # smaller images hold less than one feature cell of the backbone's last stage
MAX_ASPECT = 20.0  # beyond this the resized short side collapses to a few pixels


class ImageError(ValueError):
    """An input image cannot be segmented (missing, unreadable, not an image, bad shape)."""


def _read(name: Any, what: str) -> Any:
    """The decoded PIL image of a file name or binary stream (warnings of damaged files become
    the error's text)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            # Pillow warns (rather than fails) on some damaged files and huge images.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            warnings.simplefilter("ignore", UserWarning)
            with Image.open(name) as img:
                img.load()  # the pixels stay in memory after the file is closed
                return img
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{what}: image too large ({e})") from None
    except Image.UnidentifiedImageError:
        raise ImageError(f"{what}: not an image (unrecognised file format)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        # Truncated or corrupt data surfaces as any of these, depending on the codec.
        raise ImageError(f"{what}: cannot read image ({e})") from None


def load_image(image: Any) -> np.ndarray:
    """An (H, W, 3) uint8 RGB array from a path, a PIL image or an array, upright (EXIF
    orientation applied) and checked for a usable size; :class:`ImageError` naming the file
    otherwise."""
    what = "image"
    if isinstance(image, (str, os.PathLike)):
        what = os.fspath(image)
        if not os.path.exists(what):
            raise ImageError(f"{what}: no such file")
        if os.path.isdir(what):
            raise ImageError(f"{what}: is a folder, not an image")
    if isinstance(image, (str, os.PathLike)):
        image = _read(image, what)
    return _checked_array(image, what)


def load_image_bytes(data: bytes, name: str) -> np.ndarray:
    """:func:`load_image` of an encoded file held in memory (an upload); errors name ``name``.
    Nothing is written to disk."""
    if not data:
        raise ImageError(f"{name}: empty file")
    return _checked_array(_read(io.BytesIO(data), name), name)


def _checked_array(image: Any, what: str) -> np.ndarray:
    """A PIL image or array as (H, W, 3) uint8 RGB, upright, of a usable size."""
    try:
        # The image processor's conversion: EXIF orientation, gray / alpha / 16-bit handling.
        arr = to_rgb_array(image, what=what)
    except (TypeError, ValueError) as e:
        raise ImageError(str(e)) from None
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    h, w = arr.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise ImageError(f"{what}: image too small ({w}x{h}; needs at least {MIN_SIDE} px a side)")
    if max(h, w) / min(h, w) > MAX_ASPECT:
        raise ImageError(f"{what}: extreme aspect ratio ({w}x{h}; at most {MAX_ASPECT:g}:1)")
    return np.ascontiguousarray(arr)
