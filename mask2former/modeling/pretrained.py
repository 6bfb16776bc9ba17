"""``from_pretrained`` / ``save_pretrained`` and the other model methods of transformers'
``PreTrainedModel`` that users call (``num_parameters``, gradient checkpointing).

The parameter names, defaults and results follow transformers 4.37.2. An option of transformers
that this package does not implement (``device_map``, ``variant``, ``push_to_hub=True``, ...)
raises an error naming it; a keyword that is neither an option nor a config field raises a
TypeError naming it: nothing is silently ignored. The file formats and the loading rules are in
:mod:`mask2former.checkpoint`.
"""

from __future__ import annotations

import copy
import os
import warnings
from typing import Any, Dict, List, Optional, Union

import torch
from torch import nn

from .._config_base.checks import check_bool
from ..checkpoint import (
    HEAD_PREFIXES,
    CheckpointError,
    adapt_prefix,
    compare,
    drop_known_unused,
    name_tensors,
    parse_dtype,
    read_checkpoint,
    write_weights,
)
from ..config import CONFIG_NAME, Mask2FormerConfig
from ..hub import resolve_file
from .grad_checkpoint import set_gradient_checkpointing

__all__ = ["PreTrainedMixin"]

# Options of transformers' from_pretrained / save_pretrained that this package does not
# implement: named in the error, so that a caller knows it is known and not supported.
UNSUPPORTED_LOAD_OPTIONS = (
    "from_tf", "from_flax", "device_map", "max_memory", "offload_folder", "offload_state_dict",
    "low_cpu_mem_usage", "load_in_8bit", "load_in_4bit", "quantization_config", "variant",
    "adapter_kwargs", "adapter_name", "use_flash_attention_2", "attn_implementation",
    "trust_remote_code", "proxies", "resume_download", "use_auth_token", "mirror", "_fast_init",
)  # fmt: skip
UNSUPPORTED_SAVE_OPTIONS = (
    "save_function", "variant", "token", "save_peft_format", "use_auth_token", "save_config",
    "repo_id", "commit_message", "ignore_metadata_errors",
)  # fmt: skip


def _reject(method: str, unknown: Dict[str, Any], unsupported: tuple) -> None:
    """TypeError naming every keyword of ``unknown``; transformers' options we do not
    implement are told apart from plain unknown names."""
    if not unknown:
        return
    known = sorted(k for k in unknown if k in unsupported)
    other = sorted(k for k in unknown if k not in unsupported)
    parts = []
    if known:
        parts.append(f"transformers options not supported by mask2former: {', '.join(known)}")
    if other:
        parts.append(
            f"unexpected keyword arguments (neither an option nor a config field): "
            f"{', '.join(other)}"
        )
    raise TypeError(f"{method}(): " + "; ".join(parts))


def _config_keys(config: Mask2FormerConfig) -> set:
    """The names ``from_pretrained`` may set on the config: its declared fields and the extra
    keys of its file (both in ``to_dict``) and the settable properties (``num_labels``,
    aliases)."""
    keys = set(config.to_dict())
    keys |= set(getattr(type(config), "attribute_map", {}) or {})
    for name in dir(type(config)):
        member = getattr(type(config), name, None)
        if isinstance(member, property) and member.fset is not None:
            keys.add(name)
    return keys - {"model_type"}


def _split_overrides(config: Mask2FormerConfig, kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """The config overrides of ``kwargs``; any other keyword is a TypeError naming it."""
    keys = _config_keys(config)
    _reject(
        "from_pretrained",
        {k: v for k, v in kwargs.items() if k not in keys},
        UNSUPPORTED_LOAD_OPTIONS,
    )
    return dict(kwargs)


def _load_config(
    path: Any, config: Any, subfolder: str, hub: Dict[str, Any], kwargs: Dict[str, Any]
) -> Mask2FormerConfig:
    """The model's config: ``config`` (an object, copied, or a path / hub id) or the
    checkpoint's config.json, with the config fields of ``kwargs`` applied."""
    if isinstance(config, Mask2FormerConfig):
        overrides = _split_overrides(config, kwargs)
        if not overrides:
            return copy.deepcopy(config)
        data = config._merge_overrides(config.to_dict(), overrides)
        return type(config).from_dict(data)
    if config is not None and not isinstance(config, (str, os.PathLike)):
        raise TypeError(
            "from_pretrained(): config must be a Mask2FormerConfig, a path or a hub id, got "
            f"{type(config).__name__}"
        )
    source = path if config is None else config
    if source is None:
        raise ValueError(
            "from_pretrained(): pretrained_model_name_or_path may be None only with both "
            "config= and state_dict="
        )
    # As transformers, ``subfolder`` applies to a config path too.
    file = resolve_file(source, CONFIG_NAME, subfolder=subfolder, **hub)
    loaded = Mask2FormerConfig.from_pretrained(file)
    overrides = _split_overrides(loaded, kwargs)
    return Mask2FormerConfig.from_pretrained(file, **overrides) if overrides else loaded


class PreTrainedMixin:
    """transformers' model API for the models (which set ``self.config``)."""

    supports_gradient_checkpointing = True
    # The class attributes of transformers' PreTrainedModel that code written for it reads:
    # the forward's main input, the base model's attribute, and none of tied weights, modules
    # kept in float32 or keys left out of a save.
    main_input_name = "pixel_values"
    base_model_prefix = "model"
    _tied_weights_keys = None
    _keep_in_fp32_modules = None
    _keys_to_ignore_on_save = None

    @classmethod
    def can_generate(cls) -> bool:
        """False: not a generative model (transformers' save_pretrained writes no
        generation_config.json then, and neither does this one)."""
        return False

    def get_output_embeddings(self) -> None:
        """None: no token embeddings to tie or resize (transformers' default)."""
        return None

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: Optional[Union[str, os.PathLike]],
        *,
        config: Union[None, Mask2FormerConfig, str, os.PathLike] = None,
        cache_dir: Optional[Union[str, os.PathLike]] = None,
        ignore_mismatched_sizes: bool = False,
        force_download: bool = False,
        local_files_only: bool = False,
        token: Optional[Union[str, bool]] = None,
        revision: Optional[str] = None,
        use_safetensors: Optional[bool] = None,
        state_dict: Optional[Dict[str, torch.Tensor]] = None,
        output_loading_info: bool = False,
        subfolder: str = "",
        torch_dtype: Union[None, str, torch.dtype] = None,
        reinit_missing: bool = False,
        **kwargs: Any,
    ):
        """Load a model from a folder (config.json + weights), a built-in model name, or a hub
        id (with the ``hub`` extra). In evaluation mode, as in transformers.

        Args:
            pretrained_model_name_or_path: folder, built-in name or hub id; None with both
                ``config`` and ``state_dict``.
            config: a Mask2FormerConfig (copied), or a folder / hub id to read config.json from,
                instead of the checkpoint's.
            cache_dir, force_download, local_files_only, token, revision: huggingface_hub's
                download options for a hub id (a local folder ignores them).
            ignore_mismatched_sizes: re-initialise tensors whose shapes differ from the
                checkpoint's (e.g. the class head after changing ``num_labels`` or
                ``id2label``) instead of failing; a warning names each one.
            use_safetensors: True reads only safetensors files, False only pytorch_model.bin.
            state_dict: tensors to load instead of the checkpoint's weight files.
            output_loading_info: also return a dict of ``missing_keys`` (re-initialised),
                ``unexpected_keys`` (dropped), ``mismatched_keys`` ((key, checkpoint shape,
                model shape), re-initialised) and ``error_msgs`` (empty: problems raise).
            subfolder: the checkpoint's files lie in this folder of the folder or hub repository.
            torch_dtype: None (float32), torch.float16 / torch.bfloat16 / "auto" (the dtype
                recorded in config.json).
            reinit_missing: also re-initialise the tensors the checkpoint lacks and drop the
                ones the model has no place for, instead of failing; for a model whose config
                overrides add or remove layers (e.g. ``decoder_layers``). A warning names each.
            kwargs: config fields to change, e.g. ``id2label={...}``, ``output_hidden_states=
                True``; any other keyword is a TypeError naming it.

        Raises:
            CheckpointError: the weights do not fit the model (every problem listed).
        """
        hub = {
            "cache_dir": cache_dir,
            "force_download": force_download,
            "local_files_only": local_files_only,
            "token": token,
            "revision": revision,
        }
        config = _load_config(pretrained_model_name_or_path, config, subfolder, hub, kwargs)
        if state_dict is None:
            if pretrained_model_name_or_path is None:
                raise ValueError("from_pretrained(): no checkpoint and no state_dict given")
            state = read_checkpoint(
                pretrained_model_name_or_path, subfolder, use_safetensors, **hub
            )
            source = os.fspath(pretrained_model_name_or_path)
        else:
            state, source = dict(state_dict), "(the given state_dict)"
        dtype = parse_dtype(torch_dtype, config, state)
        model = cls(config)
        state = adapt_prefix(state, hasattr(model, "class_predictor"))
        info = model._load_checked(state, source, ignore_mismatched_sizes, reinit_missing)
        if dtype is not None:
            model.to(dtype)
        model.eval()
        return (model, info) if output_loading_info else model

    def _load_checked(
        self,
        state: Dict[str, torch.Tensor],
        source: str,
        ignore_mismatched_sizes: bool,
        reinit_missing: bool = False,
    ) -> Dict[str, List]:
        """Load ``state`` strictly (see :mod:`mask2former.checkpoint`); returns the loading
        info of transformers (what was re-initialised or dropped, as asked)."""
        expected = self.state_dict()
        state = drop_known_unused(state, expected)
        missing, unexpected, mismatched = compare(expected, state)
        reinit: List[str] = []
        dropped: List[str] = []
        resized: List = []
        if reinit_missing:  # load_state_dict(strict=False) below skips both kinds
            reinit, missing = missing, []
            dropped, unexpected = unexpected, []
        if ignore_mismatched_sizes:
            reinit += [k for k in missing if k.startswith(HEAD_PREFIXES)]
            missing = [k for k in missing if k not in reinit]
            resized, mismatched = mismatched, []
            state = {k: v for k, v in state.items() if k not in {m[0] for m in resized}}
        if missing or unexpected or mismatched:
            parts = []
            if missing:
                parts.append(f"missing keys ({len(missing)}): {', '.join(missing)}")
            if unexpected:
                parts.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
            if mismatched:
                shapes = [f"{k}: checkpoint {a}, model {b}" for k, a, b in mismatched]
                parts.append(
                    f"shape mismatches ({len(mismatched)}): {'; '.join(shapes)}"
                    " (pass ignore_mismatched_sizes=True to re-initialise them)"
                )
            raise CheckpointError(
                f"checkpoint {source} does not fit the model: " + " | ".join(parts)
            )
        self.load_state_dict(state, strict=False)
        renewed = [m[0] for m in resized] + reinit
        if renewed:
            warnings.warn(
                f"re-initialised {len(renewed)} tensors that the checkpoint {source} could not "
                f"provide: {name_tensors(renewed)}",
                stacklevel=3,
            )
        if dropped:
            warnings.warn(
                f"ignored {len(dropped)} tensors of the checkpoint {source} that the model has "
                f"no place for: {name_tensors(dropped)}",
                stacklevel=3,
            )
        return {
            "missing_keys": reinit,
            "unexpected_keys": dropped,
            "mismatched_keys": resized,
            "error_msgs": [],
        }

    def save_pretrained(
        self,
        save_directory: Union[str, os.PathLike],
        *,
        is_main_process: bool = True,
        state_dict: Optional[Dict[str, torch.Tensor]] = None,
        push_to_hub: bool = False,
        max_shard_size: Union[int, str] = "5GB",
        safe_serialization: bool = True,
        **kwargs: Any,
    ) -> None:
        """Write config.json and the weights (transformers 4.37.2 layout) into
        ``save_directory`` (created if needed), each file atomically.

        Args:
            is_main_process: False writes nothing (call it on every process of a distributed
                run; only the main one saves, so processes never race on the files).
            state_dict: the tensors to save instead of ``self.state_dict()``.
            push_to_hub: only False; upload the folder with huggingface_hub's ``upload_folder``.
            max_shard_size: above this size (bytes, or e.g. "5GB", "200MB") the weights are
                split into shards with an index (``model.safetensors.index.json``).
            safe_serialization: True writes safetensors; False writes ``pytorch_model.bin``
                (tensors only, which this package reads back with ``weights_only=True``).
        """
        _reject("save_pretrained", kwargs, UNSUPPORTED_SAVE_OPTIONS)
        if push_to_hub:
            raise ValueError(
                "save_pretrained(push_to_hub=True) is not supported by mask2former: save the "
                "folder, then upload it with huggingface_hub.upload_folder"
            )
        if not is_main_process:
            return
        if os.path.isfile(save_directory):
            raise NotADirectoryError(f"save_pretrained: {save_directory} is a file, not a folder")
        os.makedirs(save_directory, exist_ok=True)
        weights = self.state_dict() if state_dict is None else state_dict
        # As transformers: config.json records the weights' dtype (from_pretrained's
        # torch_dtype="auto" reads it); the model's own config object is left as it is.
        config = copy.copy(self.config)
        floats = [t.dtype for t in weights.values() if t.is_floating_point()]
        if floats:
            config.torch_dtype = str(floats[0]).replace("torch.", "")
        config.save_pretrained(save_directory)
        write_weights(save_directory, weights, max_shard_size, safe_serialization)

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """The number of parameters (only those with ``requires_grad``; without the weights of
        ``nn.Embedding`` modules: the learned queries and level embeddings)."""
        assert isinstance(self, nn.Module)
        skip = set()
        if exclude_embeddings:
            skip = {
                f"{name}.weight" if name else "weight"
                for name, module in self.named_modules()
                if isinstance(module, nn.Embedding)
            }
        return sum(
            p.numel()
            for name, p in self.named_parameters()
            if name not in skip and (p.requires_grad or not only_trainable)
        )

    def gradient_checkpointing_enable(
        self, gradient_checkpointing_kwargs: Optional[Dict[str, Any]] = None
    ) -> None:
        """Checkpoint the backbone stages and the encoder and decoder layers in training
        (see :mod:`mask2former.modeling.grad_checkpoint`); ``gradient_checkpointing_kwargs`` go
        to ``torch.utils.checkpoint.checkpoint``."""
        set_gradient_checkpointing(self, True, gradient_checkpointing_kwargs)

    def gradient_checkpointing_disable(self) -> None:
        set_gradient_checkpointing(self, False)

    def _apply_legacy_checkpointing_flag(self) -> None:
        """Config files of older transformers carry ``gradient_checkpointing``; true turns it on,
        and the key is removed from the config (as transformers does)."""
        flag = vars(self.config).pop("gradient_checkpointing", False)
        if check_bool("gradient_checkpointing", flag):
            self.gradient_checkpointing_enable()

    @property
    def is_gradient_checkpointing(self) -> bool:
        return any(getattr(m, "gradient_checkpointing", False) for m in self.modules())
