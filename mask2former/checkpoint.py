"""Checkpoint files and the rules for loading them (the models' from_pretrained/save_pretrained
are in :mod:`mask2former.modeling.pretrained`).

The files use the transformers 4.37.2 key layout. A checkpoint of the segmentation model has its
base model under the prefix ``model.``; loading it into :class:`Mask2FormerModel` drops the
prefix and the head, and a base-model checkpoint loads into the segmentation model when its
class head may be re-initialised (``ignore_mismatched_sizes=True``).

Loading is strict: missing keys, unexpected keys and shape mismatches raise one
:class:`CheckpointError` listing all of them, except for the tensors of the two tables below
(:data:`DERIVED_TENSORS`, :data:`KNOWN_UNUSED`), the one place that says what a checkpoint
written by transformers 4.x or 5.x may have or lack. ``pytorch_model.bin`` files are read with
``torch.load(weights_only=True)``, which never runs pickled code.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch

__all__ = [
    "CheckpointError",
    "DERIVED_TENSORS",
    "KNOWN_UNUSED",
    "load_state_dict_file",
    "read_checkpoint",
    "write_weights",
    "parse_size",
]

logger = logging.getLogger(__name__)

SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
TORCH_WEIGHTS = "pytorch_model.bin"
TORCH_INDEX = "pytorch_model.bin.index.json"
PREFIX = "model."
HEAD_PREFIXES = ("class_predictor.", "criterion.")
# A shard's name as transformers writes it: model-00001-of-00003.safetensors.
SHARD_NAME = re.compile(r"(model|pytorch_model)-\d{5}-of-\d{5}\.(safetensors|bin)")

# -- the loading rules ---------------------------------------------------------------------------
# Tensors the model computes from its config: a checkpoint may lack them (the model keeps its
# own), and when it has them they are loaded (transformers 4.x writes them).
DERIVED_TENSORS: Dict[str, str] = {
    r"(^|\.)relative_position_index$": "Swin's window position index, computed from "
    "window_size; transformers 5.x no longer saves it (a non-persistent buffer there)",
    r"^criterion\.empty_weight$": "the loss's class weights, computed from num_labels and "
    "no_object_weight",
}
# Tensors a checkpoint may have that this model does not use: skipped (logged), never loaded.
KNOWN_UNUSED: Dict[str, str] = {
    r"(^|\.)pixel_level_module\.encoder\.swin\.layernorm\.(weight|bias)$": "the final "
    "layer norm of the Swin model that transformers 5.x builds inside its Swin backbone "
    "(SwinModel.layernorm); the backbone returns the per-stage hidden_states_norms instead",
}

_DTYPES = {
    "float32": torch.float32,
    "float": torch.float32,
    "float16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
}


class CheckpointError(ValueError):
    """A checkpoint does not fit the model (keys or shapes), or cannot be read."""


def _matches(table: Dict[str, str], key: str) -> bool:
    return any(re.search(pattern, key) for pattern in table)


def parse_dtype(
    dtype: Union[None, str, torch.dtype], config: Any, state: Dict[str, torch.Tensor]
) -> Optional[torch.dtype]:
    """``torch_dtype`` of from_pretrained: None, a torch dtype, its name, or "auto" (as in
    transformers: the dtype config.json records, else that of the checkpoint's first floating
    tensor)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        floats = [t.dtype for t in state.values() if t.is_floating_point()]
        dtype = config.torch_dtype or (floats[0] if floats else "float32")
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


def _read_index(index: str) -> Dict[str, str]:
    """The ``weight_map`` (tensor name -> shard file name) of a shard index, checked."""
    try:
        with open(index, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"cannot read the shard index {index}: {e!r}") from None
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise CheckpointError(f"{index}: weight_map must map tensor names to shard file names")
    for shard in weight_map.values():
        if "/" in shard or "\\" in shard or shard in ("", ".", ".."):
            raise CheckpointError(f"{index}: {shard!r} is not a file name in the checkpoint")
    return weight_map


def _read_sharded(index: str, resolve) -> Dict[str, torch.Tensor]:
    weight_map = _read_index(index)
    state: Dict[str, torch.Tensor] = {}
    held: Dict[str, set] = {}
    for shard in sorted(set(weight_map.values())):
        tensors = load_state_dict_file(resolve(shard, True))
        held[shard] = set(tensors)
        state.update(tensors)
    absent = sorted(k for k, shard in weight_map.items() if k not in held[shard])
    if absent:
        raise CheckpointError(
            f"{index} lists tensors that its shards do not hold: {', '.join(absent[:8])}"
        )
    return state


def read_checkpoint(
    path_or_id: Union[str, os.PathLike],
    subfolder: str = "",
    use_safetensors: Optional[bool] = None,
    **hub_options: Any,
) -> Dict[str, torch.Tensor]:
    """The tensors of a checkpoint folder, built-in model or hub id: model.safetensors, its
    shards (model.safetensors.index.json), then pytorch_model.bin or its shards
    (pytorch_model.bin.index.json). ``use_safetensors``: True reads safetensors files only,
    False ``.bin`` files only."""
    from .hub import resolve_file

    def resolve(name: str, required: bool = False) -> Optional[str]:
        return resolve_file(path_or_id, name, required, subfolder=subfolder, **hub_options)

    names = [(SAFE_WEIGHTS, SAFE_INDEX), (TORCH_WEIGHTS, TORCH_INDEX)]
    if use_safetensors is not None:
        names = names[:1] if use_safetensors else names[1:]
    for single, index in names:
        found = resolve(single)
        if found is not None:
            return load_state_dict_file(found)
        found = resolve(index)
        if found is not None:
            return _read_sharded(found, resolve)
    where = os.path.join(os.fspath(path_or_id), subfolder) if subfolder else path_or_id
    raise FileNotFoundError(
        f"no weights in {os.fspath(where)!r}: expected "
        + " or ".join(name for pair in names for name in pair)
    )


def adapt_prefix(state: Dict[str, torch.Tensor], has_head: bool) -> Dict[str, torch.Tensor]:
    """Map a segmentation-model checkpoint onto a base model, or the reverse."""
    file_has_head = any(k.startswith(PREFIX) for k in state)
    if has_head and not file_has_head:
        return {PREFIX + k: v for k, v in state.items()}
    if not has_head and file_has_head:
        return {k[len(PREFIX) :]: v for k, v in state.items() if k.startswith(PREFIX)}
    return state


def drop_known_unused(state: Dict[str, torch.Tensor], expected: Sequence[str]) -> Dict:
    """``state`` without the :data:`KNOWN_UNUSED` tensors the model has no place for (logged)."""
    have = set(expected)
    skipped = [k for k in state if k not in have and _matches(KNOWN_UNUSED, k)]
    if skipped:
        logger.info("skipped tensors this model does not use: %s", ", ".join(skipped))
    return {k: v for k, v in state.items() if k not in skipped}


def compare(
    expected: Dict[str, torch.Tensor], state: Dict[str, torch.Tensor]
) -> Tuple[List[str], List[str], List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]]]:
    """Missing keys (not counting :data:`DERIVED_TENSORS`), unexpected keys, and shape
    mismatches as (key, checkpoint shape, model shape)."""
    missing = [k for k in expected if k not in state and not _matches(DERIVED_TENSORS, k)]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        (k, tuple(state[k].shape), tuple(expected[k].shape))
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    return missing, unexpected, mismatched


def name_tensors(keys: Sequence[str], limit: int = 8) -> str:
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


# -- writing -------------------------------------------------------------------------------------

_UNITS = {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "KB": 10**3, "MB": 10**6, "GB": 10**9}


def parse_size(size: Union[int, str]) -> int:
    """Bytes for ``max_shard_size``: an int, or digits and a unit ("5GB", "200MB", "1GiB";
    a lower-case final "b", as in "5Gb", means bits, as in transformers)."""
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return size
    text = str(size).strip()
    for unit, factor in _UNITS.items():
        number = text[: -len(unit)]
        if text.upper().endswith(unit) and number.isdigit() and int(number) > 0:
            value = int(number) * factor
            return value // 8 if text.endswith("b") else value
    raise ValueError(
        f"max_shard_size {size!r}: expected a positive number of bytes or digits and a unit "
        f"({', '.join(_UNITS)}), e.g. '5GB'"
    )


def _shards(state: Dict[str, torch.Tensor], limit: int) -> List[Dict[str, torch.Tensor]]:
    """Consecutive groups of tensors of at most ``limit`` bytes each (a bigger tensor alone)."""
    shards: List[Dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > limit:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += nbytes
    return shards


def _encode(state: Dict[str, torch.Tensor], safe: bool) -> bytes:
    if safe:
        from safetensors.torch import save

        # transformers refuses safetensors files without the "format" metadata.
        return save(state, metadata={"format": "pt"})
    buffer = io.BytesIO()
    torch.save(state, buffer)  # tensors only: read back with weights_only=True
    return buffer.getvalue()


def write_weights(
    folder: Union[str, os.PathLike],
    state: Dict[str, torch.Tensor],
    max_shard_size: Union[int, str] = "5GB",
    safe_serialization: bool = True,
) -> List[str]:
    """Write ``state`` into ``folder`` as transformers names the files: model.safetensors, or
    shards model-0000i-of-0000n.safetensors with model.safetensors.index.json when the tensors
    exceed ``max_shard_size`` (pytorch_model*.bin with ``safe_serialization=False``). Weight
    files of an earlier save that this one does not rewrite are removed, so the folder loads
    what was written now. Returns the names written; every file goes through
    :mod:`mask2former.files`."""
    from .files import write_bytes, write_json

    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    single, index = (
        (SAFE_WEIGHTS, SAFE_INDEX) if safe_serialization else (TORCH_WEIGHTS, TORCH_INDEX)
    )
    shards = _shards(state, parse_size(max_shard_size))
    stem, ext = single.rsplit(".", 1)
    names = (
        [single]
        if len(shards) == 1
        else [f"{stem}-{i + 1:05d}-of-{len(shards):05d}.{ext}" for i in range(len(shards))]
    )
    for name, shard in zip(names, shards):
        write_bytes(os.path.join(folder, name), _encode(shard, safe_serialization))
    written = list(names)
    if len(shards) > 1:
        total = sum(t.numel() * t.element_size() for t in state.values())
        weight_map = {key: name for name, shard in zip(names, shards) for key in shard}
        document = {"metadata": {"total_size": total}, "weight_map": weight_map}
        write_json(os.path.join(folder, index), document, indent=2)
        written.append(index)
    _remove_stale_weights(folder, written)
    return written


def _remove_stale_weights(folder: Union[str, os.PathLike], keep: Sequence[str]) -> None:
    stale_names = (SAFE_WEIGHTS, SAFE_INDEX, TORCH_WEIGHTS, TORCH_INDEX)
    for entry in os.listdir(folder):
        if entry in keep or not (entry in stale_names or SHARD_NAME.fullmatch(entry)):
            continue
        path = os.path.join(folder, entry)
        if os.path.isfile(path) or os.path.islink(path):
            os.unlink(path)
