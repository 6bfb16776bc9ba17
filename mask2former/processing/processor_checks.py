"""Field checks of ``preprocessor_config.json`` (and of the processor's constructor arguments):
each bad value is a :class:`~mask2former._config_base.ConfigError` naming its field."""

from __future__ import annotations

import numbers
import warnings
from typing import Any, Dict, List

import numpy as np

from .._config_base import (
    MAX_SIDE,
    ConfigError,
    check_bool,
    check_float,
    check_int,
    check_list,
    optional,
    show,
)
from .transforms import SIZE_KEYS, normalize_size

__all__ = [
    "check_resample",
    "channel_stats",
    "pop_max_size",
    "read_reduce_labels",
    "read_size",
    "RESAMPLE_FILTERS",
]

DEFAULT_MAX_SIZE = 1333
RESAMPLE_FILTERS = {0: "NEAREST", 1: "LANCZOS", 2: "BILINEAR", 3: "BICUBIC", 4: "BOX", 5: "HAMMING"}
# Per-channel statistics are in pixel units after rescaling: 0..1, or up to 65535 for 16-bit
# images that are not rescaled. Beyond that a value is a mistake (and 1e308 overflows float32).
MAX_PIXEL_STAT = 65536.0


def _side(name: str, value: Any) -> int:
    return check_int(name, value, 1, MAX_SIDE)


def _check_size(value: Any) -> None:
    """``size``: an int shortest edge, a (height, width) pair, or a dict with the keys of one
    of SIZE_KEYS, every side an integer in 1..MAX_SIDE."""
    if isinstance(value, (list, tuple)):
        check_list("size", value, _side, min_len=2, max_len=2)
    elif isinstance(value, dict):
        if set(value) not in SIZE_KEYS:
            raise ConfigError(
                "size: expected the keys {'shortest_edge', 'longest_edge'}, {'height', "
                "'width'}, {'shortest_edge'} or {'max_height', 'max_width'}, got "
                f"{show(sorted(map(str, value)))}"
            )
        for key, side in value.items():
            _side(f"size.{key}", side)
    elif isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(
            f"size: expected an int, a (height, width) pair or an object, got {show(value)}"
        )
    else:
        _side("size", value)


def _check_edges(size: Dict[str, int]) -> None:
    """The resize rule needs a longest edge above the shortest one."""
    short, long = size.get("shortest_edge"), size.get("longest_edge")
    if short is not None and long is not None and long <= short:
        raise ConfigError(
            f"size: longest_edge ({long}, max_size when size is an int) must be larger than "
            f"shortest_edge ({short})"
        )


def check_resample(name: str, value: Any) -> int:
    value = check_int(name, value)
    if value not in RESAMPLE_FILTERS:
        raise ConfigError(
            f"{name}: expected a PIL resampling filter "
            f"({', '.join(f'{k} {v}' for k, v in RESAMPLE_FILTERS.items())}), got {value}"
        )
    return value


def channel_stats(name: str, value: Any, positive: bool) -> List[float]:
    """``image_mean``/``image_std``: one number for all three channels, or a list of three."""
    low = 0.0 if positive else -MAX_PIXEL_STAT

    def number(entry_name: str, entry: Any) -> float:
        return check_float(entry_name, entry, low, MAX_PIXEL_STAT, low_open=positive)

    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return check_list(name, value, number, min_len=3, max_len=3)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name}: expected a number or a list of 3 numbers, got {show(value)}")
    return [number(name, value)] * 3


def pop_max_size(kwargs: Dict[str, Any]) -> int:
    """The longest edge for an int ``size``: ``max_size`` (deprecated) or ``_max_size`` (the
    name transformers writes), removed from ``kwargs``; 1333 when neither is set."""
    max_size = optional(_side)("max_size", kwargs.pop("max_size", None))
    private_max = optional(_side)("_max_size", kwargs.pop("_max_size", None))
    return max_size or private_max or DEFAULT_MAX_SIZE


def read_size(size: Any, max_size: int) -> Dict[str, int]:
    """``size`` checked and in its dict form (None: shortest edge 800, longest ``max_size``)."""
    if size is None:
        size = {"shortest_edge": 800, "longest_edge": max_size}
    _check_size(size)
    out = normalize_size(size, max_size)
    _check_edges(out)
    return out


def read_reduce_labels(reduce_labels: Any, kwargs: Dict[str, Any], written_by_4x: bool) -> bool:
    """``reduce_labels`` (transformers 4.x), or ``do_reduce_labels`` (its name in 5.x).

    When both are given and disagree, the file is one that a transformers version wrote while
    keeping the other name as an unused attribute (4.37.2 keeps its tests' ``do_reduce_labels``;
    5.x keeps a 4.x file's ``reduce_labels``): the name that version reads wins, and 4.x files
    are the ones with ``_max_size`` (5.x never writes it). A warning says so."""
    other = kwargs.pop("do_reduce_labels", None)
    other = None if other is None else check_bool("do_reduce_labels", other)
    if reduce_labels is None:
        return False if other is None else other
    reduce_labels = check_bool("reduce_labels", reduce_labels)
    if other is None or other == reduce_labels:
        return reduce_labels
    used, value = ("reduce_labels", reduce_labels) if written_by_4x else ("do_reduce_labels", other)
    warnings.warn(
        f"reduce_labels ({reduce_labels}) and do_reduce_labels ({other}) disagree; using "
        f"{used} ({value}), the name the transformers version that wrote these settings reads",
        stacklevel=3,
    )
    return value
