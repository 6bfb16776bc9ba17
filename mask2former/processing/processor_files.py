"""``preprocessor_config.json`` for :class:`Mask2FormerImageProcessor`: ``to_dict``/``from_dict``,
JSON strings and files, ``from_pretrained``/``save_pretrained``, with transformers' signatures.

The processor's settings are its public attributes (as in transformers): the constructor checks
each known key field by field, and keeps any other key as an attribute, written back by
``to_dict``. Loading validates at once, and an error names the file and the field.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any, Dict, List, Mapping, Tuple, Union

import numpy as np

from .._config_base import ConfigError, prefixed, read_json_object
from ..files import write_text
from ..hub import BUILTIN_MODELS_DIR, resolve_file

__all__ = ["ProcessorFiles", "CONFIG_NAME", "ALIASES"]

CONFIG_NAME = "preprocessor_config.json"
# Names that mean one setting: an override of one replaces the others found in the file.
ALIASES = (
    ("reduce_labels", "do_reduce_labels"),
    ("max_size", "_max_size"),
    ("size_divisor", "size_divisibility"),
)
# from_pretrained's download options (transformers' names and defaults); for a local folder or
# a built-in model they do nothing, as in transformers.
_HUB_DEFAULTS = {
    "cache_dir": None,
    "force_download": False,
    "local_files_only": False,
    "token": None,
    "revision": "main",
}
# Accepted and without effect: deprecated no-ops of huggingface_hub and transformers' internal
# bookkeeping flags.
_NO_OPS = ("resume_download", "_from_auto", "_from_pipeline")


def _jsonable(value: Any) -> Any:
    return value.tolist() if isinstance(value, np.ndarray) else value


def _hub_options(options: Dict[str, Any]) -> Dict[str, Any]:
    """The download options that differ from transformers' defaults (``use_auth_token``, the
    deprecated name of ``token``, included)."""
    legacy = options.pop("use_auth_token", None)
    if legacy is not None:
        if options.get("token") is not None:
            raise ValueError("give token or use_auth_token (deprecated), not both")
        options["token"] = legacy
    if options.get("revision") is None:
        options["revision"] = "main"
    return {k: v for k, v in options.items() if v != _HUB_DEFAULTS.get(k)}


def _is_local(source: Union[str, os.PathLike]) -> bool:
    """Whether ``source`` is a local folder or file, or a built-in model (not a hub id)."""
    path = os.fspath(source)
    return os.path.exists(path) or os.path.isdir(os.path.join(BUILTIN_MODELS_DIR, path))


class ProcessorFiles:
    """The config-file half of the image processor (a mixin: ``cls(**settings)`` builds it)."""

    # Keys the processor models (constructor arguments, their aliases and the keys of other
    # transformers versions); from_dict(return_unused_kwargs=True) returns the others unused.
    _SETTING_KEYS: Tuple[str, ...] = ()
    # Settings left out of the file while they are None (transformers 5.x writes them so).
    _OMIT_WHEN_NONE: Tuple[str, ...] = ()

    # ------------------------------------------------------------------ dicts and strings
    def to_dict(self) -> Dict[str, Any]:
        """The settings as written to ``preprocessor_config.json``: every public attribute
        (unknown keys of a loaded file included), ``_max_size``, ``do_reduce_labels`` (the
        name transformers 5.x reads) and ``image_processor_type``."""
        out = {
            k: copy.deepcopy(v)
            for k, v in vars(self).items()
            if not k.startswith("_") and not (v is None and k in self._OMIT_WHEN_NONE)
        }
        out["_max_size"] = self._max_size
        out["do_reduce_labels"] = out["reduce_labels"]
        out["image_processor_type"] = type(self).__name__
        return out

    def to_json_string(self) -> str:
        data = {k: _jsonable(v) for k, v in self.to_dict().items()}
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    def to_json_file(self, json_file_path: Union[str, os.PathLike]) -> None:
        """Write :meth:`to_json_string` to ``json_file_path`` (atomically, replacing it)."""
        write_text(json_file_path, self.to_json_string())

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"

    @property
    def extra_config(self) -> Dict[str, Any]:
        """The settings this class does not model (kept as attributes, written back)."""
        return {
            k: v
            for k, v in vars(self).items()
            if not k.startswith("_") and k not in self._SETTING_KEYS
        }

    @classmethod
    def from_dict(cls, image_processor_dict: Mapping[str, Any], **kwargs: Any):
        """Build from a config dict; ``kwargs`` override its entries (``size``, ``max_size``
        and ``size_divisibility`` included). With ``return_unused_kwargs=True`` the result is
        ``(processor, unused)``, ``unused`` holding the keywords that are not settings;
        without it they become attributes like the constructor's unknown keywords."""
        return_unused = kwargs.pop("return_unused_kwargs", False)
        merged = dict(image_processor_dict)
        unused = {}
        for key, value in kwargs.items():
            if return_unused and key not in cls._SETTING_KEYS and key not in merged:
                unused[key] = value
                continue
            for group in ALIASES:
                if key in group:  # the override wins over the file's other spelling
                    for other in group:
                        merged.pop(other, None)
            merged[key] = value
        processor = cls(**merged)
        return (processor, unused) if return_unused else processor

    @classmethod
    def from_json_file(cls, json_file: Union[str, os.PathLike]):
        """Build from a JSON file of settings; a bad field is a ConfigError naming the file."""
        data = read_json_object(json_file)
        with prefixed(f"{os.fspath(json_file)}: "):
            return cls._from_dict_checked(data)

    @classmethod
    def _from_dict_checked(cls, config: Mapping[str, Any], **kwargs: Any):
        """``from_dict``, with a TypeError (a key such as "self" that clashes with the
        constructor's own arguments) turned into a ConfigError."""
        try:
            return cls.from_dict(config, **kwargs)
        except TypeError as e:
            raise ConfigError(str(e)) from None

    # ------------------------------------------------------------------ folders and the hub
    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: Union[str, os.PathLike],
        cache_dir: Union[str, os.PathLike, None] = None,
        force_download: bool = False,
        local_files_only: bool = False,
        token: Union[str, bool, None] = None,
        revision: str = "main",
        **kwargs: Any,
    ):
        """Load from a folder, a ``preprocessor_config.json`` path, a built-in model or a hub
        id. ``subfolder``: the file lies in that folder of the checkpoint. The download options
        (``cache_dir``, ``force_download``, ``local_files_only``, ``token``, ``revision``) go
        to the hub download; other keywords override the file's settings (see
        :meth:`from_dict`, ``return_unused_kwargs`` included)."""
        options = {
            "cache_dir": cache_dir,
            "force_download": force_download,
            "local_files_only": local_files_only,
            "token": token,
            "revision": revision,
            "use_auth_token": kwargs.pop("use_auth_token", None),
        }
        for key in _NO_OPS:
            kwargs.pop(key, None)
        if kwargs.pop("proxies", None) is not None:
            raise TypeError(
                "from_pretrained: proxies is not supported (huggingface_hub reads the "
                "HTTP(S)_PROXY environment variables)"
            )
        subfolder = kwargs.pop("subfolder", "") or ""
        filename = f"{subfolder.strip('/')}/{CONFIG_NAME}" if subfolder else CONFIG_NAME
        options = _hub_options(options)
        if _is_local(pretrained_model_name_or_path):
            options = {}  # download options do nothing for local files (as in transformers)
        path = resolve_file(pretrained_model_name_or_path, filename, **options)
        config = read_json_object(path)
        # The file alone first, so that an error in it is blamed on it and not on kwargs.
        with prefixed(f"{path}: "):
            processor = cls._from_dict_checked(config)
        if not kwargs:
            return processor
        with prefixed(f"{path} with overrides {sorted(kwargs)}: "):
            return cls._from_dict_checked(config, **kwargs)

    def save_pretrained(
        self, save_directory: Union[str, os.PathLike], push_to_hub: bool = False, **kwargs: Any
    ) -> List[str]:
        """Write ``preprocessor_config.json`` into ``save_directory`` (created if needed)."""
        if push_to_hub:
            raise NotImplementedError(
                "save_pretrained(push_to_hub=True) is not supported: save to a folder, then "
                "upload it with huggingface_hub (HfApi().upload_folder)"
            )
        if kwargs:
            raise TypeError(f"save_pretrained() got options it does not support: {sorted(kwargs)}")
        if os.path.isfile(save_directory):
            raise ValueError(f"{save_directory} is a file; save_pretrained needs a folder")
        os.makedirs(save_directory, exist_ok=True)
        path = os.path.join(save_directory, CONFIG_NAME)
        # Atomic replace: an interrupted save never leaves half a file (mask2former.files).
        self.to_json_file(path)
        return [path]
