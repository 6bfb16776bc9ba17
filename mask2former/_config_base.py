"""Shared plumbing of the configuration objects: JSON in and out, the error type, and the keys
and activation names that every config understands.

Private: the public names are re-exported by :mod:`mask2former.config`.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any, Dict, Union

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


class ConfigError(ValueError):
    """A configuration value is invalid or inconsistent."""


class JsonConfig:
    """Shared JSON plumbing: ``to_dict``/``from_dict``, files, equality and repr."""

    model_type: str = ""
    _fields: tuple = ()

    def _set_extras(self, kwargs: Dict[str, Any]) -> None:
        for key, value in kwargs.items():
            if key in GENERIC_KEYS or key == "model_type":
                continue
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

    @classmethod
    def from_dict(cls, data: Dict[str, Any]):
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__}.from_dict expects a dict, got {type(data).__name__}")
        data = dict(data)
        model_type = data.pop("model_type", cls.model_type)
        if model_type != cls.model_type:
            raise ConfigError(
                f"{cls.__name__} expects model_type {cls.model_type!r}, the config says {model_type!r}"
            )
        return cls(**data)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save_pretrained(self, save_directory: Union[str, os.PathLike]) -> str:
        """Write ``config.json`` into ``save_directory`` (created if needed); returns its path."""
        os.makedirs(save_directory, exist_ok=True)
        path = os.path.join(save_directory, CONFIG_NAME)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(self.to_json_string())
        os.replace(tmp, path)
        return path

    @classmethod
    def from_json_file(cls, path: Union[str, os.PathLike]):
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            raise FileNotFoundError(f"config file not found: {path}") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path} is not valid JSON: {e}") from None
        try:
            return cls.from_dict(data)
        except TypeError as e:  # unexpected argument types
            raise ConfigError(f"{path}: {e}") from None

    @classmethod
    def from_pretrained(cls, path: Union[str, os.PathLike], **kwargs):
        """Read ``config.json`` from a folder, a file path, or a hub id (``hub`` extra)."""
        from .hub import resolve_file

        file = resolve_file(path, CONFIG_NAME)
        config = cls.from_json_file(file)
        for key, value in kwargs.items():
            setattr(config, key, value)
        return config

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"
