"""Settings of ``preprocessor_config.json`` that transformers 5.x (and the 4.4x-4.5x fast image
processor) writes or accepts beyond 4.37.2's: each is read with its meaning there, or refused
with a ConfigError naming it where we do not do what it asks (never silently ignored).

- ``pad_size`` ({"height", "width"}): pad every image to this size instead of the largest image
  of the batch (an image larger than it is an error).
- ``data_format``, ``input_data_format``, ``return_tensors``, ``device``: the defaults of the
  same arguments of ``preprocess`` (``device`` needs ``return_tensors="pt"``: the tensors are
  moved there).
- ``do_pad``, ``do_convert_rgb`` (true or null): we always pad and always convert to RGB.
- ``default_to_square`` (false or null): an int ``size`` is the shortest edge, as in 4.37.2.
- ``do_center_crop``, ``crop_size``, ``disable_grouping``: no effect on Mask2Former's results in
  5.x either (its preprocessing has no center crop; grouping only batches the resize); kept.
"""

from __future__ import annotations

from typing import Any, Dict

from .._config_base import MAX_SIDE, ConfigError, check_bool, check_choice, check_int, show

__all__ = ["LATER_KEYS", "read_later_settings", "read_pad_size"]

LATER_KEYS = (
    "pad_size",
    "data_format",
    "input_data_format",
    "return_tensors",
    "device",
    "do_pad",
    "do_convert_rgb",
    "default_to_square",
    "do_center_crop",
    "crop_size",
    "disable_grouping",
)
_FORMATS = ("channels_first", "channels_last")


def read_pad_size(value: Any) -> Dict[str, int]:
    """``pad_size`` checked: {"height": int, "width": int}."""
    if not isinstance(value, dict) or set(value) != {"height", "width"}:
        raise ConfigError(f"pad_size: expected {{'height': int, 'width': int}}, got {show(value)}")
    return {k: check_int(f"pad_size.{k}", value[k], 1, MAX_SIDE) for k in ("height", "width")}


def _only(name: str, value: Any, allowed: bool, why: str) -> bool:
    """A flag we honour with one value only (the one that describes what we always do)."""
    if check_bool(name, value) != allowed:
        raise ConfigError(f"{name}: {str(not allowed).lower()} is not supported ({why})")
    return value


def _device(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"device: expected a device name such as 'cuda', got {show(value)}")
    return value


_CHECKS = {
    "pad_size": read_pad_size,
    "data_format": lambda v: check_choice("data_format", v, _FORMATS),
    "input_data_format": lambda v: check_choice("input_data_format", v, _FORMATS),
    "return_tensors": lambda v: check_choice("return_tensors", v, ("pt", "np")),
    "device": _device,
    "do_pad": lambda v: _only(
        "do_pad", v, True, "a batch is always padded to one size: pad_size or its largest image"
    ),
    "do_convert_rgb": lambda v: _only(
        "do_convert_rgb", v, True, "images are always converted to RGB"
    ),
    "default_to_square": lambda v: _only(
        "default_to_square", v, False, "an int size is the shortest edge, as in transformers"
    ),
    "do_center_crop": lambda v: check_bool("do_center_crop", v),
    "crop_size": lambda v: v,
    "disable_grouping": lambda v: check_bool("disable_grouping", v),
}


def read_later_settings(kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """The checked :data:`LATER_KEYS`, removed from ``kwargs`` (None where absent or null)."""
    out = {}
    for key in LATER_KEYS:
        value = kwargs.pop(key, None)
        out[key] = None if value is None else _CHECKS[key](value)
    return out
