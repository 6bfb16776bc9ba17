"""Loading and saving checkpoints in the published layout (config.json + model.safetensors).

The files use the transformers 4.37.2 key layout. A checkpoint of the segmentation model has its
base model under the prefix ``model.``; loading it into :class:`Mask2FormerModel` drops the
prefix and the head, and a base-model checkpoint loads into the segmentation model when its
class head may be re-initialised (``ignore_mismatched_sizes=True``).

Loading is strict: missing keys, unexpected keys and shape mismatches raise one
:class:`CheckpointError` listing all of them. ``pytorch_model.bin`` files are read with
``torch.load(weights_only=True)``, which never runs pickled code.
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

__all__ = ["CheckpointError", "PreTrainedMixin", "load_state_dict_file"]

SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
TORCH_WEIGHTS = "pytorch_model.bin"
PREFIX = "model."
HEAD_PREFIXES = ("class_predictor.", "criterion.")
# Derived from the config, so a checkpoint may lack it.
OPTIONAL_KEYS = ("criterion.empty_weight",)

_DTYPES = {
    "float32": torch.float32,
    "float": torch.float32,
    "float16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
}


class CheckpointError(ValueError):
    """A checkpoint does not fit the model (keys or shapes), or cannot be read."""


def _parse_dtype(dtype: Union[None, str, torch.dtype], config) -> Optional[torch.dtype]:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        dtype = getattr(config, "torch_dtype", None) or "float32"
    name = str(dtype).replace("torch.", "")
    if name not in _DTYPES:
        raise ValueError(f"torch_dtype {dtype!r} is not one of {sorted(_DTYPES)} or 'auto'")
    return _DTYPES[name]


def load_state_dict_file(path: str) -> Dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a ``.bin`` file (read without unpickling code)."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except Exception as e:
            raise CheckpointError(f"cannot read {path}: {e}") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot read {path} as PyTorch weights: {e}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a state dict")
    return state


def _read_checkpoint(path_or_id: Union[str, os.PathLike]) -> Dict[str, torch.Tensor]:
    from .hub import resolve_file

    single = resolve_file(path_or_id, SAFE_WEIGHTS, required=False)
    if single is not None:
        return load_state_dict_file(single)
    index = resolve_file(path_or_id, SAFE_INDEX, required=False)
    if index is not None:
        with open(index, encoding="utf-8") as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        state: Dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(load_state_dict_file(resolve_file(path_or_id, shard)))
        return state
    legacy = resolve_file(path_or_id, TORCH_WEIGHTS, required=False)
    if legacy is not None:
        return load_state_dict_file(legacy)
    raise FileNotFoundError(
        f"no weights in {os.fspath(path_or_id)!r}: expected {SAFE_WEIGHTS}, {SAFE_INDEX} or "
        f"{TORCH_WEIGHTS}"
    )


def _adapt_prefix(state: Dict[str, torch.Tensor], has_head: bool) -> Dict[str, torch.Tensor]:
    """Map a segmentation-model checkpoint onto a base model, or the reverse."""
    file_has_head = any(k.startswith(PREFIX) for k in state)
    if has_head and not file_has_head:
        return {PREFIX + k: v for k, v in state.items()}
    if not has_head and file_has_head:
        return {k[len(PREFIX) :]: v for k, v in state.items() if k.startswith(PREFIX)}
    return state


def _name_tensors(keys: Sequence[str], limit: int = 8) -> str:
    """Up to ``limit`` keys by name; more are grouped by layer ("...layers.3.* (22 tensors)"),
    so that a whole added layer does not fill the terminal."""
    if len(keys) <= limit:
        return ", ".join(keys)
    groups: Dict[str, List[str]] = {}
    for key in keys:
        parts = key.split(".")
        numbered = [i for i, part in enumerate(parts[:-1]) if part.isdigit()]
        cut = numbered[0] + 1 if numbered else len(parts) - 1
        groups.setdefault(".".join(parts[:cut]), []).append(key)
    return ", ".join(
        members[0] if len(members) == 1 else f"{prefix}.* ({len(members)} tensors)"
        for prefix, members in groups.items()
    )


def _compare(
    model: nn.Module, state: Dict[str, torch.Tensor]
) -> Tuple[List[str], List[str], List[str]]:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and k not in OPTIONAL_KEYS]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)}, model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    return missing, unexpected, mismatched


class PreTrainedMixin:
    """``from_pretrained`` / ``save_pretrained`` for the models (which set ``self.config``)."""

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: Union[str, os.PathLike],
        config=None,
        ignore_mismatched_sizes: bool = False,
        torch_dtype: Union[None, str, torch.dtype] = None,
        reinit_missing: bool = False,
        **config_overrides,
    ):
        """Load a model from a folder (config.json + weights), a built-in model name, or a hub
        id (with the ``hub`` extra).

        Args:
            config: a Mask2FormerConfig to use instead of the checkpoint's config.json.
            ignore_mismatched_sizes: re-initialise tensors whose shapes differ from the
                checkpoint's (e.g. the class head after changing ``num_labels`` or
                ``id2label``) instead of failing; a warning names each one.
            torch_dtype: None (float32), torch.float16 / torch.bfloat16 / "auto" (the dtype
                recorded in config.json).
            reinit_missing: also re-initialise the tensors the checkpoint lacks and drop the
                ones the model has no place for, instead of failing; for a model whose
                ``config_overrides`` add or remove layers (e.g. ``decoder_layers``). A warning
                names each one.
            config_overrides: config fields to change, e.g. ``id2label={...}``.
        """
        from .config import Mask2FormerConfig

        if config is None:
            config = Mask2FormerConfig.from_pretrained(path_or_id)
        if config_overrides:
            data = config.to_dict()
            if "num_labels" in config_overrides and "id2label" not in config_overrides:
                data.pop("id2label", None)
                data.pop("label2id", None)
            if "id2label" in config_overrides:
                data.pop("label2id", None)
            data.update(config_overrides)
            config = Mask2FormerConfig.from_dict(data)
        dtype = _parse_dtype(torch_dtype, config)
        state = _read_checkpoint(path_or_id)
        model = cls(config)
        has_head = hasattr(model, "class_predictor")
        state = _adapt_prefix(state, has_head)
        model._load_checked(state, os.fspath(path_or_id), ignore_mismatched_sizes, reinit_missing)
        if dtype is not None:
            model.to(dtype)
        model.eval()
        return model

    def _load_checked(
        self,
        state: Dict[str, torch.Tensor],
        source: str,
        ignore_mismatched_sizes: bool,
        reinit_missing: bool = False,
    ) -> None:
        missing, unexpected, mismatched = _compare(self, state)
        reinit: List[str] = []
        dropped: List[str] = []
        if reinit_missing:  # load_state_dict(strict=False) below skips both kinds
            reinit, missing = missing, []
            dropped, unexpected = unexpected, []
        if ignore_mismatched_sizes:
            expected = self.state_dict()
            reinit += [k for k in expected if k in state and state[k].shape != expected[k].shape]
            reinit += [k for k in missing if k.startswith(HEAD_PREFIXES)]
            missing = [k for k in missing if k not in reinit]
            mismatched = []
            state = {k: v for k, v in state.items() if k not in reinit}
        if missing or unexpected or mismatched:
            parts = []
            if missing:
                parts.append(f"missing keys ({len(missing)}): {', '.join(missing)}")
            if unexpected:
                parts.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
            if mismatched:
                parts.append(
                    f"shape mismatches ({len(mismatched)}): {'; '.join(mismatched)}"
                    " (pass ignore_mismatched_sizes=True to re-initialise them)"
                )
            raise CheckpointError(
                f"checkpoint {source} does not fit the model: " + " | ".join(parts)
            )
        self.load_state_dict(state, strict=False)
        if reinit:
            warnings.warn(
                f"re-initialised {len(reinit)} tensors that the checkpoint {source} could not "
                f"provide: {_name_tensors(reinit)}",
                stacklevel=3,
            )
        if dropped:
            warnings.warn(
                f"ignored {len(dropped)} tensors of the checkpoint {source} that the model has "
                f"no place for: {_name_tensors(dropped)}",
                stacklevel=3,
            )

    def save_pretrained(self, save_directory: Union[str, os.PathLike]) -> None:
        """Write config.json and model.safetensors (transformers 4.37.2 layout) atomically."""
        from safetensors.torch import save

        from .files import write_bytes

        os.makedirs(save_directory, exist_ok=True)
        self.config.save_pretrained(save_directory)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        # transformers refuses safetensors files without the "format" metadata. The bytes go
        # through mask2former.files: an exclusive temporary file, then a rename over the name.
        data = save(state, metadata={"format": "pt"})
        write_bytes(os.path.join(save_directory, SAFE_WEIGHTS), data)
