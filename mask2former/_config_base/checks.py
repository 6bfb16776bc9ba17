"""The error type, the limits and the checks that validate one config field: each takes the
field's name and value and returns the value in its canonical form, or raises ConfigError
naming the field.

Private: the public names are re-exported by :mod:`mask2former.config`.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from functools import partial
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Union

ACTIVATIONS = ("relu", "gelu", "silu", "swish", "gelu_new", "quick_gelu", "tanh", "sigmoid")

# Sanity limits. They lie far above every published model (Swin-L: embed_dim 192, depths
# [2, 2, 18, 2], stage widths up to 1536; 200 queries; 133 to 847 classes; feed-forward 2048) but
# low enough that a typo (an extra zero or two) or a hostile file fails at once, instead of
# building billions of layers, hanging, or allocating absurd memory.
MAX_LAYERS = 1000  # decoder_layers, encoder_layers, and the blocks of a backbone in all
MAX_WIDTH = 16384  # channels of any feature map, embedding or attention
MAX_FEEDFORWARD = 65536  # hidden width of a feed-forward block
MAX_QUERIES = 100_000
MAX_LABELS = 1_000_000
MAX_SIDE = 16384  # pixels of an image side
MAX_INPUT_CHANNELS = 1024
MAX_STAGES = 8  # backbone stages: widths double at each, so more would exceed MAX_WIDTH anyway
MAX_LOSS_WEIGHT = 1e6
INT32 = (-(2**31), 2**31 - 1)  # label values (ignore_value, ignore_index)

# What a field check is: (field name, value) -> the value in its canonical form.
Check = Callable[[str, Any], Any]


class ConfigError(ValueError):
    """A configuration value is invalid or inconsistent."""


# -- field checks ------------------------------------------------------------------------------


def show(value: Any, limit: int = 60) -> str:
    """``repr(value)``, shortened: error messages must stay one readable line."""
    try:
        text = repr(value)
    except ValueError:  # an int of more digits than Python will print
        return f"<a {type(value).__name__} too large to print>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_int(name: str, value: Any, low: Optional[int] = None, high: Optional[int] = None) -> int:
    """An integer in ``[low, high]`` (None: unbounded). Floats (even 20.0), bools and strings are
    refused: a JSON ``1e12`` or ``true`` where a count belongs is a mistake, not a count."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{name}: expected an integer, got {show(value)}")
    value = int(value)
    if low is not None and value < low:
        need = "positive" if low == 1 else f"at least {low}"
        raise ConfigError(f"{name}: must be {need}, got {show(value)}")
    if high is not None and value > high:
        raise ConfigError(f"{name}: must be at most {high}, got {show(value)}")
    return value


def check_float(
    name: str,
    value: Any,
    low: Optional[float] = None,
    high: Optional[float] = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """A finite number (an int is fine) in the interval from ``low`` to ``high`` (None:
    unbounded; ``*_open``: that end excluded), returned as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name}: expected a number, got {show(value)}")
    try:
        value = float(value)
    except OverflowError:  # an int beyond the float range
        value = math.inf
    if not math.isfinite(value):
        raise ConfigError(f"{name}: expected a finite number, got {show(value)}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        if high is None:
            need = f"{'>' if low_open else '>='} {low:g}"
        elif low is None:
            need = f"{'<' if high_open else '<='} {high:g}"
        else:
            need = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ConfigError(f"{name}: must be {need}, got {show(value)}")
    return value


def check_bool(name: str, value: Any) -> bool:
    """``True`` or ``False`` (JSON true/false); 0, 1 and "false" are refused as ambiguous."""
    if not isinstance(value, bool):
        raise ConfigError(f"{name}: expected true or false, got {show(value)}")
    return value


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """One of the strings ``choices``."""
    if not isinstance(value, str):
        raise ConfigError(f"{name}: expected one of {list(choices)}, got {show(value)}")
    if value not in choices:
        raise ConfigError(f"{name}: unknown {name} {show(value)}; choose from {list(choices)}")
    return value


def check_list(
    name: str, value: Any, item: Check, min_len: int = 0, max_len: int = MAX_LAYERS
) -> List[Any]:
    """A list (or tuple) of ``min_len..max_len`` entries, each checked by ``item`` under the
    name ``name[i]``; returned as a new list."""
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{name}: expected a list, got {show(value)}")
    if not min_len <= len(value) <= max_len:
        count = str(min_len) if min_len == max_len else f"{min_len} to {max_len}"
        raise ConfigError(f"{name}: expected {count} entries, got {len(value)}: {show(value)}")
    return [item(f"{name}[{i}]", entry) for i, entry in enumerate(value)]


def int_list(name: str, value: Any, min_len: int = 1, max_len: int = 64) -> List[int]:
    """A list of integers (ranges are the caller's, whose messages say why)."""
    return check_list(name, value, check_int, min_len, max_len)


def stage_names_of(num_stages: int) -> List[str]:
    return ["stem"] + [f"stage{i + 1}" for i in range(num_stages)]


def check_probability(name: str, value: Any) -> float:
    """A dropout-like rate: 1 would drop everything (and divide by zero in drop path)."""
    return check_float(name, value, 0.0, 1.0, high_open=True)


def check_stage_names(name: str, value: Any) -> List[str]:
    def item(entry_name: str, entry: Any) -> str:
        if not isinstance(entry, str):
            raise ConfigError(f"{entry_name}: expected a stage name, got {show(entry)}")
        return entry

    return check_list(name, value, item, min_len=1, max_len=MAX_STAGES + 1)


def check_image_size(name: str, value: Any) -> Union[int, List[int]]:
    """An int, or (height, width) as transformers also accepts."""
    side = partial(check_int, low=1, high=MAX_SIDE)
    if isinstance(value, (list, tuple)):
        return check_list(name, value, side, min_len=2, max_len=2)
    return side(name, value)


def check_stage_sizes(name: str, value: Any) -> List[int]:
    """A list with one integer per stage (ranges are checked with the other stage fields)."""
    return int_list(name, value, min_len=1, max_len=MAX_STAGES)


def take_alias(kwargs: Dict[str, Any], alias: str, name: str, value: Any, default: Any) -> Any:
    """The value of field ``name``, given ``value`` as its own argument and perhaps ``alias``
    (transformers' common name for the same field) in ``kwargs``, from where it is removed.

    The alias wins over the field's default, as in transformers (where it is set last); two
    different values given for both are a ConfigError naming both.
    """
    if alias not in kwargs:
        return value
    given = kwargs.pop(alias)
    if value != default and given != value:
        raise ConfigError(
            f"{alias}: {show(given)} disagrees with {name}={show(value)} ({alias} is another "
            f"name for {name})"
        )
    return given


def optional(check: Check) -> Check:
    """``check``, letting None (JSON null) through."""

    def run(name: str, value: Any) -> Any:
        return None if value is None else check(name, value)

    return run


def apply_checks(config: Any, checks: Dict[str, Check], present_only: bool = False) -> None:
    """Replace each attribute named in ``checks`` by its checked, canonical value; with
    ``present_only`` the attributes that are not set are skipped (optional extra keys)."""
    for name, check in checks.items():
        if present_only and not hasattr(config, name):
            continue
        setattr(config, name, check(name, getattr(config, name)))


@contextlib.contextmanager
def prefixed(prefix: str) -> Iterator[None]:
    """Re-raise a ConfigError with ``prefix`` in front of its message (the file a config came
    from, or ``backbone_config.`` for the nested fields)."""
    try:
        yield
    except ConfigError as e:
        raise ConfigError(f"{prefix}{e}") from None
