"""Shared plumbing of the configuration objects: JSON in and out, the error type, the keys and
activation names that every config understands, and the checks that validate one field.

Private: the public names are re-exported by :mod:`mask2former.config`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import numbers
import os
from functools import partial
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Union

__all__ = ["ACTIVATIONS", "CONFIG_NAME", "ConfigError", "JsonConfig"]

CONFIG_NAME = "config.json"

# Keys that the reference writes for every config but that mean nothing to this library; they are
# dropped on load so they do not clutter the config (they are harmless either way).
GENERIC_KEYS = {
    "return_dict", "output_hidden_states", "output_attentions", "torchscript", "use_bfloat16",
    "tf_legacy_loss", "pruned_heads", "tie_word_embeddings", "chunk_size_feed_forward",
    "is_encoder_decoder", "is_decoder", "cross_attention_hidden_size", "add_cross_attention",
    "tie_encoder_decoder", "max_length", "min_length", "do_sample", "early_stopping", "num_beams",
    "num_beam_groups", "diversity_penalty", "temperature", "top_k", "top_p", "typical_p",
    "repetition_penalty", "length_penalty", "no_repeat_ngram_size", "encoder_no_repeat_ngram_size",
    "bad_words_ids", "num_return_sequences", "output_scores", "return_dict_in_generate",
    "forced_bos_token_id", "forced_eos_token_id", "remove_invalid_values",
    "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens",
    "finetuning_task", "tokenizer_class", "prefix", "bos_token_id", "pad_token_id", "eos_token_id",
    "sep_token_id", "decoder_start_token_id", "task_specific_params", "problem_type",
    "_name_or_path", "_commit_hash", "hidden_size", "num_layers", "stage_names", "out_indices",
    "num_hidden_layers", "transformers_version",
}  # fmt: skip

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


def read_json_object(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """The JSON object of config fields in ``path``; a ConfigError naming the file when it is
    not valid JSON or not an object, FileNotFoundError when it is missing."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"config file not found: {path}") from None
    except (ValueError, RecursionError) as e:  # bad JSON, bad UTF-8, absurd nesting
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a JSON object of config fields, got {type(data).__name__}"
        )
    return data


class JsonConfig:
    """Shared JSON plumbing: ``to_dict``/``from_dict``, files, equality and repr."""

    model_type: str = ""
    _fields: tuple = ()

    def _set_extras(self, kwargs: Dict[str, Any]) -> None:
        """Keep keys this class does not model as attributes (written back by ``to_dict``)."""
        for key, value in kwargs.items():
            if key in GENERIC_KEYS or key == "model_type":
                continue
            if hasattr(type(self), key):
                # A key such as "validate" or "stage_channels" would replace a method or fail
                # on a read-only property.
                raise ConfigError(
                    f"{key}: not a field of {type(self).__name__} (the name of one of its methods "
                    "or properties)"
                )
            setattr(self, key, value)

    def to_dict(self) -> Dict[str, Any]:
        """The fields, then any other public attribute (extra keys read from a file, or set
        later such as ``config.task``), so they survive a save/load round trip."""
        out = {name: copy.deepcopy(getattr(self, name)) for name in self._fields}
        for key, value in vars(self).items():
            if not key.startswith("_") and key not in out:
                out[key] = copy.deepcopy(value)
        out["model_type"] = self.model_type
        return out

    def validate(self) -> None:  # pragma: no cover - every config class defines its checks
        raise NotImplementedError

    @classmethod
    def from_dict(cls, data: Dict[str, Any]):
        """The config that ``data`` (e.g. a parsed config.json) describes, validated at once:
        a dict is what a file holds, so its errors are reported here, naming the field."""
        config = cls._from_dict_unchecked(data)
        config.validate()
        return config

    @classmethod
    def _from_dict_unchecked(cls, data: Dict[str, Any]):
        """``cls(**data)`` after checking ``model_type``; the fields are not validated yet
        (the nested backbone of a Mask2Former config is validated with its parent)."""
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__}.from_dict expects a dict, got {type(data).__name__}")
        data = dict(data)
        model_type = data.pop("model_type", cls.model_type)
        if model_type != cls.model_type:
            raise ConfigError(
                f"model_type: {cls.__name__} expects {cls.model_type!r}, got {show(model_type)}"
            )
        return cls(**data)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save_pretrained(self, save_directory: Union[str, os.PathLike]) -> str:
        """Write ``config.json`` into ``save_directory`` (created if needed); returns its path.

        The file is replaced atomically (never left half-written, never written through a
        planted symlink): see :mod:`mask2former.files`.
        """
        from .files import write_text

        os.makedirs(save_directory, exist_ok=True)
        path = os.path.join(save_directory, CONFIG_NAME)
        write_text(path, self.to_json_string())
        return path

    @classmethod
    def from_json_file(cls, path: Union[str, os.PathLike]):
        """Read a config file; any problem with its content is a ConfigError whose message
        starts with the file's path and then names the field."""
        data = read_json_object(path)
        with prefixed(f"{path}: "):
            return cls._from_dict_checked(data)

    @classmethod
    def _from_dict_checked(cls, data: Dict[str, Any]):
        """``from_dict``, turning a TypeError (an argument of the wrong kind that slipped past
        the checks) into a ConfigError so callers have one error type to handle."""
        try:
            return cls.from_dict(data)
        except TypeError as e:
            raise ConfigError(str(e)) from None

    @classmethod
    def from_pretrained(cls, path: Union[str, os.PathLike], **kwargs):
        """Read ``config.json`` from a folder, a file path, or a hub id (``hub`` extra).

        ``kwargs`` change fields; the result is validated like a new config, so a bad override
        is a ConfigError that names the file, the overridden keys and the field.
        """
        from .hub import resolve_file

        file = resolve_file(path, CONFIG_NAME)
        config = cls.from_json_file(file)
        if not kwargs:
            return config
        data = config._merge_overrides(config.to_dict(), kwargs)
        with prefixed(f"{file} with overrides {sorted(kwargs)}: "):
            return cls._from_dict_checked(data)

    def _merge_overrides(self, data: Dict[str, Any], overrides: Dict[str, Any]) -> Dict[str, Any]:
        """``data`` (this config's ``to_dict()``) with ``overrides`` applied."""
        data.update(overrides)
        return data

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"
