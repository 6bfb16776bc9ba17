"""Small file readers shared by the dataset readers: JSON and images (writing goes through
:mod:`mask2former.files`).

Every failure is turned into a :class:`DatasetError` naming the file, so a reader never surfaces a
bare ``FileNotFoundError`` or a PIL traceback without the path.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image

from ..coco import rgb_to_id
from .errors import DatasetError

__all__ = ["load_json", "read_image", "read_label_png"]

PathLike = Union[str, "os.PathLike[str]"]


def load_json(path: PathLike) -> Any:
    """Parse a JSON file; a missing or malformed file raises :class:`DatasetError`."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, "file not found")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(path, f"cannot parse JSON ({e})") from e


def _open(path: Path) -> Image.Image:
    if not path.is_file():
        raise DatasetError(path, "file not found")
    try:
        img = Image.open(path)
        img.load()
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DatasetError(path, f"cannot read image ({e})") from e
    return img


def read_image(path: PathLike) -> np.ndarray:
    """Read an image as RGB.

    Returns:
        (H, W, 3) uint8 array. Grey, palette and RGBA images are converted to RGB; 16-bit
        images are scaled by 255/65535.
    """
    from ..processing.transforms import to_rgb_array

    path = Path(path)
    img = _open(path)
    # No EXIF rotation here: annotations are drawn on the stored pixels. 16-bit and float data
    # are scaled to 0..255, not clipped by a conversion to RGB.
    wide = img.mode.startswith("I") or img.mode == "F"
    arr = np.asarray(img if wide else img.convert("RGB"))
    try:
        arr = to_rgb_array(arr, input_data_format="channels_last", what=str(path))
    except (TypeError, ValueError) as e:
        raise DatasetError(path, f"cannot use image ({e})") from None
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    return arr


def read_label_png(path: PathLike, rgb: bool = False) -> np.ndarray:
    """Read a label PNG.

    Args:
        path: the PNG.
        rgb: decode a COCO-panoptic RGB PNG into ids (``R + 256 G + 256^2 B``).

    Returns:
        (H, W) int64 array of labels (``rgb=False``: the raw single-channel or palette index
        values, never colours) or segment ids (``rgb=True``).
    """
    path = Path(path)
    img = _open(path)
    if rgb:
        if img.mode not in ("RGB", "RGBA"):
            raise DatasetError(path, f"expected an RGB panoptic PNG, got mode {img.mode}")
        return rgb_to_id(np.asarray(img.convert("RGB")))
    if img.mode in ("RGB", "RGBA"):
        # Colour label maps are ambiguous (which colour is which class?): refuse them.
        raise DatasetError(path, f"expected a single-channel label PNG, got mode {img.mode}")
    # 'P' (palette) images keep their indices, which are the labels in ADE20K/VOC-style files.
    return np.asarray(img, dtype=np.int64).copy()
