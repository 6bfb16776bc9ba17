"""The JSON side of the configuration objects: ``config.json`` in and out (dicts, strings,
files, folders and hub ids), the keys every transformers config writes, equality and repr.

Private: the public names are re-exported by :mod:`mask2former.config`.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any, Dict, Tuple, Union

from .checks import ConfigError, prefixed, show

CONFIG_NAME = "config.json"

# transformers' PretrainedConfig keys (4.x) and their defaults. They mean nothing to a
# segmentation model here (the output flags are Mask2FormerConfig's own fields), but user code
# and the reference's tests read them: a value other than the default is kept as an attribute
# and written back; a key left at its default is answered by ``__getattr__`` and not stored, so
# files stay uncluttered.
GENERIC_DEFAULTS: Dict[str, Any] = {
    "return_dict": True, "output_hidden_states": False, "output_attentions": False,
    "torchscript": False, "use_bfloat16": False, "tf_legacy_loss": False, "pruned_heads": {},
    "tie_word_embeddings": True, "chunk_size_feed_forward": 0, "is_encoder_decoder": False,
    "is_decoder": False, "cross_attention_hidden_size": None, "add_cross_attention": False,
    "tie_encoder_decoder": False, "max_length": 20, "min_length": 0, "do_sample": False,
    "early_stopping": False, "num_beams": 1, "num_beam_groups": 1, "diversity_penalty": 0.0,
    "temperature": 1.0, "top_k": 50, "top_p": 1.0, "typical_p": 1.0, "repetition_penalty": 1.0,
    "length_penalty": 1.0, "no_repeat_ngram_size": 0, "encoder_no_repeat_ngram_size": 0,
    "bad_words_ids": None, "num_return_sequences": 1, "output_scores": False,
    "return_dict_in_generate": False, "forced_bos_token_id": None, "forced_eos_token_id": None,
    "remove_invalid_values": False, "exponential_decay_length_penalty": None,
    "suppress_tokens": None, "begin_suppress_tokens": None, "architectures": None,
    "finetuning_task": None, "tokenizer_class": None, "prefix": None, "bos_token_id": None,
    "pad_token_id": None, "eos_token_id": None, "sep_token_id": None,
    "decoder_start_token_id": None, "task_specific_params": None, "problem_type": None,
}  # fmt: skip

# Keys the reference writes that are derived from other fields or describe the writer: dropped
# on load (the fields they derive from are read; a config class that has them as properties,
# such as the backbone's ``stage_names``, takes them before this applies).
DERIVED_KEYS = {
    "_name_or_path", "_commit_hash", "transformers_version", "hidden_size", "num_layers",
    "stage_names", "out_indices", "num_hidden_layers", "model_type",
}  # fmt: skip


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
    is_composition = False  # as transformers: a config that can be built without arguments
    _fields: tuple = ()

    def _set_extras(self, kwargs: Dict[str, Any]) -> None:
        """Keep keys this class does not model as attributes (written back by ``to_dict``)."""
        for key, value in kwargs.items():
            if key in DERIVED_KEYS:
                continue
            if key in GENERIC_DEFAULTS:
                if value != GENERIC_DEFAULTS[key]:
                    setattr(self, key, copy.deepcopy(value))
                continue
            if hasattr(type(self), key):
                # A key such as "validate" or "stage_channels" would replace a method or fail
                # on a read-only property.
                raise ConfigError(
                    f"{key}: not a field of {type(self).__name__} (the name of one of its methods "
                    "or properties)"
                )
            setattr(self, key, value)

    def __getattr__(self, name: str) -> Any:
        # Only reached when ``name`` is not set: the defaults of the generic keys.
        if name in GENERIC_DEFAULTS:
            return copy.deepcopy(GENERIC_DEFAULTS[name])
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

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
    def from_dict(cls, config_dict: Dict[str, Any], **kwargs: Any):
        """The config that ``config_dict`` (e.g. a parsed config.json) describes, validated at
        once: a dict is what a file holds, so its errors are reported here, naming the field.

        ``kwargs``: fields to change, and ``return_unused_kwargs`` (also return the keywords
        that are not fields, instead of a TypeError naming them), as in transformers.
        """
        return_unused = kwargs.pop("return_unused_kwargs", False)
        config = cls._from_dict_unchecked(config_dict)
        overrides, unused = config._split_kwargs(kwargs, "from_dict", return_unused)
        if overrides:
            data = config._merge_overrides(config.to_dict(), overrides)
            config = cls._from_dict_unchecked(data)
        config.validate()
        return (config, unused) if return_unused else config

    def _split_kwargs(
        self, kwargs: Dict[str, Any], caller: str, return_unused: bool
    ) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        """``(fields to change, other keywords)``; the others are a TypeError naming them
        unless ``return_unused``. A field is a key of ``to_dict()`` or a settable property."""
        known = set(self.to_dict()) | _settable_properties(type(self)) | set(GENERIC_DEFAULTS)
        unused = {key: value for key, value in kwargs.items() if key not in known}
        if unused and not return_unused:
            name = type(self).__name__
            raise TypeError(
                f"{name}.{caller}: {sorted(unused)} are neither fields of {name} nor loading "
                "options (return_unused_kwargs=True returns them)"
            )
        return {key: value for key, value in kwargs.items() if key in known}, unused

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

    def to_diff_dict(self) -> Dict[str, Any]:
        """``to_dict()`` without the entries that a config built with no arguments has too
        (``model_type`` stays); a nested config keeps the entries that differ from its own
        class's defaults, so the dict reads back as the same config."""
        out = _diff(self.to_dict(), type(self)().to_dict())
        for key in out:
            nested = vars(self).get(key)
            if isinstance(nested, JsonConfig):
                out[key] = nested.to_diff_dict()
        return out

    def to_json_string(self, use_diff: bool = True) -> str:
        """The config as JSON text (sorted keys, 2-space indent): with ``use_diff`` (the
        default, as in transformers) only what differs from the defaults."""
        data = self.to_diff_dict() if use_diff else self.to_dict()
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    def to_json_file(self, json_file_path: Union[str, os.PathLike], use_diff: bool = True) -> None:
        """Write :meth:`to_json_string` to ``json_file_path`` (replaced atomically, through
        :mod:`mask2former.files`)."""
        from ..files import write_text

        write_text(json_file_path, self.to_json_string(use_diff=use_diff))

    def update(self, config_dict: Dict[str, Any]) -> None:
        """Set each attribute of ``config_dict`` (not validated until :meth:`validate`)."""
        for key, value in config_dict.items():
            setattr(self, key, value)

    def save_pretrained(
        self, save_directory: Union[str, os.PathLike], push_to_hub: bool = False
    ) -> str:
        """Write ``config.json`` (every field, not only the changed ones) into
        ``save_directory`` (created if needed); returns its path.

        The file is replaced atomically (never left half-written, never written through a
        planted symlink): see :mod:`mask2former.files`. ``push_to_hub`` is not supported.
        """
        from ..files import write_text

        if push_to_hub:
            raise NotImplementedError(
                "save_pretrained(push_to_hub=True) is not supported: save the folder, then upload "
                "it with huggingface_hub"
            )
        os.makedirs(save_directory, exist_ok=True)
        path = os.path.join(save_directory, CONFIG_NAME)
        write_text(path, self.to_json_string(use_diff=False))
        return path

    @classmethod
    def from_json_file(cls, json_file: Union[str, os.PathLike]):
        """Read a config file; any problem with its content is a ConfigError whose message
        starts with the file's path and then names the field."""
        data = read_json_object(json_file)
        with prefixed(f"{json_file}: "):
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
    def from_pretrained(cls, pretrained_model_name_or_path: Union[str, os.PathLike], **kwargs):
        """Read ``config.json`` from a folder, a file path, or a hub id (``hub`` extra).

        Keywords: ``subfolder`` (the file lies in that folder of the checkpoint), the download
        options of :data:`mask2former.hub.HUB_OPTIONS` (``use_auth_token`` is ``token``),
        ``return_unused_kwargs`` (also return the keywords that are not fields, instead of a
        TypeError naming them), and fields to change. The result is validated like a new
        config, so a bad change is a ConfigError that names the file, the changed keys and the
        field.
        """
        from ..hub import HUB_OPTIONS, resolve_file

        options = {key: kwargs.pop(key) for key in HUB_OPTIONS if key in kwargs}
        if "use_auth_token" in kwargs:
            if "token" in options:
                raise TypeError("from_pretrained: give token or use_auth_token, not both")
            options["token"] = kwargs.pop("use_auth_token")
        subfolder = kwargs.pop("subfolder", "") or ""
        return_unused = kwargs.pop("return_unused_kwargs", False)
        file = resolve_file(
            pretrained_model_name_or_path, CONFIG_NAME, subfolder=subfolder, **options
        )
        config = cls.from_json_file(file)
        overrides, unused = config._split_kwargs(kwargs, "from_pretrained", return_unused)
        if overrides:
            data = config._merge_overrides(config.to_dict(), overrides)
            with prefixed(f"{file} with overrides {sorted(overrides)}: "):
                config = cls._from_dict_checked(data)
        return (config, unused) if return_unused else config

    def _merge_overrides(self, data: Dict[str, Any], overrides: Dict[str, Any]) -> Dict[str, Any]:
        """``data`` (this config's ``to_dict()``) with ``overrides`` applied."""
        data.update(overrides)
        return data

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"


def _diff(data: Dict[str, Any], default: Dict[str, Any]) -> Dict[str, Any]:
    """The entries of ``data`` that ``default`` lacks or holds with another value, and
    ``model_type``."""
    out = {key: value for key, value in data.items() if key not in default or default[key] != value}
    out["model_type"] = data["model_type"]
    return out


def _settable_properties(cls: type) -> set:
    """The names of ``cls``'s properties that can be set (``num_labels``, aliases)."""
    return {
        name
        for klass in cls.__mro__
        for name, value in vars(klass).items()
        if isinstance(value, property) and value.fset is not None
    }
