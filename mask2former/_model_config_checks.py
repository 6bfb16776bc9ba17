"""The checks of :class:`~mask2former.config.Mask2FormerConfig`: each field's type and range,
the class names and ids, and how the fields must fit together (the backbone's strides, the
widths that GroupNorm and attention divide).

Private: :mod:`mask2former.config` runs them from ``Mask2FormerConfig.validate``.
"""

from __future__ import annotations

import numbers
import re
from functools import partial
from typing import Any, Dict, List, Tuple

from ._config_base import (
    ACTIVATIONS,
    INT32,
    MAX_FEEDFORWARD,
    MAX_LABELS,
    MAX_LAYERS,
    MAX_LOSS_WEIGHT,
    MAX_QUERIES,
    MAX_WIDTH,
    Check,
    ConfigError,
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_list,
    int_list,
    optional,
    show,
)
from .backbone_config import BackboneConfig, ResNetConfig, SwinConfig

# Values other modules accept for the optional keys that they read from config.json (kept here
# rather than imported, so that reading a config does not import the model or the predictor).
TASKS = ("panoptic", "instance", "semantic")  # mask2former.predictor.TASKS
MASK_LOSS_SAMPLING = ("points", "dense")  # mask2former.loss.criterion.MASK_LOSS_SAMPLING
FEATURE_STRIDES = [4, 8, 16, 32]
MAX_POINTS = 1 << 20  # train_num_points: 12544 in the published recipe
# torch_dtype, as mask2former.checkpoint._DTYPES reads it (with or without "torch.").
_DTYPE_NAMES = ("float32", "float", "float16", "half", "bfloat16")
DTYPES = _DTYPE_NAMES + tuple(f"torch.{name}" for name in _DTYPE_NAMES)


def _width(name: str, value: Any) -> int:
    return check_int(name, value, 1, MAX_WIDTH)


def _weight(name: str, value: Any) -> float:
    """A loss or matching cost weight."""
    return check_float(name, value, 0.0, MAX_LOSS_WEIGHT)


def _dropout(name: str, value: Any) -> float:
    return check_float(name, value, 0.0, 1.0, high_open=True)


def _dtype(name: str, value: Any) -> str:
    """A dtype name of DTYPES; a ``torch.dtype`` (as transformers lets users set) is stored by
    its name, e.g. "float16", so the config stays JSON (no torch import here: duck-typed)."""
    if type(value).__module__ == "torch" and type(value).__name__ == "dtype":
        value = str(value).split(".", 1)[-1]
    return check_choice(name, value, DTYPES)


def _feature_strides(name: str, value: Any) -> List[int]:
    strides = int_list(name, value, min_len=0, max_len=16)
    if strides != FEATURE_STRIDES:
        raise ConfigError(f"{name}: only {FEATURE_STRIDES} is supported, got {strides}")
    return strides


def _label_id(name: str, value: Any) -> int:
    """A class id as a key of ``id2label``: an int, or its decimal string (JSON keys)."""
    if isinstance(value, str):
        if re.fullmatch(r"-?[0-9]{1,18}", value.strip()):  # not "1.0", "²" or 5000 digits
            return int(value)
    elif not isinstance(value, bool) and isinstance(value, numbers.Integral):
        return int(value)
    raise ConfigError(f"{name}: expected an integer class id, got {show(value)}")


def _label_name(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{name}: expected a class name (a string), got {show(value)}")
    return value


def check_id2label(value: Any) -> Dict[int, str]:
    """``id2label`` with int keys 0..n-1 (n >= 1) and string names."""
    if not isinstance(value, dict):
        raise ConfigError(f"id2label: expected an object of class id -> name, got {show(value)}")
    if not 1 <= len(value) <= MAX_LABELS:
        raise ConfigError(
            f"id2label: must name 1 to {MAX_LABELS} classes, got {len(value)}: {show(value)}"
        )
    out = {
        _label_id("id2label key", k): _label_name(f"id2label[{k!r}]", v) for k, v in value.items()
    }
    if sorted(out) != list(range(len(out))):
        raise ConfigError(f"id2label: keys must be 0..num_labels-1, got {show(sorted(out))}")
    return out


def check_label2id(value: Any, num_labels: int) -> Dict[str, int]:
    """``label2id`` with string keys and ids of existing classes."""
    if not isinstance(value, dict):
        raise ConfigError(f"label2id: expected an object of class name -> id, got {show(value)}")
    out = {}
    for key, index in value.items():
        name = f"label2id[{key!r}]"
        if isinstance(index, str) and index.isdigit():  # {"cat": "0"}: on the hub, as transformers
            index = int(index)
        out[_label_name("label2id key", key)] = index = check_int(name, index)
        if not 0 <= index < num_labels:
            raise ConfigError(
                f"{name}: {index} is not a class id of id2label, which has {num_labels} "
                f"classes (0..{num_labels - 1})"
            )
    return out


def _label_ids(name: str, value: Any) -> List[int]:
    """A list of class ids (``stuff_label_ids``).

    Ids at or above ``num_labels`` are let through on purpose: ``from_pretrained(...,
    id2label=new_labels)`` in mask2former.checkpoint keeps the checkpoint's ids with the new
    labels (the training command then replaces them), and an id that names no class fuses
    nothing in the predictor.
    """
    return check_list(
        name, value, partial(check_int, low=0, high=MAX_LABELS - 1), max_len=MAX_LABELS
    )


def labels_from_arguments(
    id2label: Any, label2id: Any, num_labels: Any
) -> Tuple[Dict[int, str], Dict[str, int]]:
    """``(id2label, label2id)`` from the constructor's arguments, checked; either may be None
    (made from ``num_labels``, or the other)."""
    if num_labels is not None:
        num_labels = check_int("num_labels", num_labels, 1, MAX_LABELS)
    if id2label is None:
        id2label = {i: f"LABEL_{i}" for i in range(2 if num_labels is None else num_labels)}
    id2label = check_id2label(id2label)
    if num_labels is not None and num_labels != len(id2label):
        raise ConfigError(
            f"num_labels: {num_labels} disagrees with id2label, which has {len(id2label)} entries"
        )
    if label2id is None:
        label2id = {v: k for k, v in id2label.items()}
    return id2label, check_label2id(label2id, len(id2label))


# Type, range and sanity limit of each field on its own (id2label, label2id and the backbone
# are checked separately); each check returns the canonical value.
FIELD_CHECKS: Dict[str, Check] = {
    "feature_size": _width,
    "mask_feature_size": _width,
    "hidden_dim": _width,
    "encoder_feedforward_dim": partial(check_int, low=1, high=MAX_FEEDFORWARD),
    "activation_function": partial(check_choice, choices=ACTIVATIONS),
    "encoder_layers": partial(check_int, low=0, high=MAX_LAYERS),
    "decoder_layers": partial(check_int, low=1, high=MAX_LAYERS),
    "num_attention_heads": _width,
    "dropout": _dropout,
    "dim_feedforward": partial(check_int, low=1, high=MAX_FEEDFORWARD),
    "pre_norm": check_bool,
    "enforce_input_projection": check_bool,
    "common_stride": check_int,
    "ignore_value": partial(check_int, low=INT32[0], high=INT32[1]),
    "num_queries": partial(check_int, low=1, high=MAX_QUERIES),
    "no_object_weight": _weight,
    "class_weight": _weight,
    "mask_weight": _weight,
    "dice_weight": _weight,
    "train_num_points": partial(check_int, low=1, high=MAX_POINTS),
    # The criterion samples oversample_ratio * train_num_points candidates, >= the points.
    "oversample_ratio": partial(check_float, low=1.0, high=100.0),
    "importance_sample_ratio": partial(check_float, low=0.0, high=1.0),
    "init_std": partial(check_float, low=0.0, high=100.0),
    "init_xavier_std": partial(check_float, low=0.0, high=100.0),
    "use_auxiliary_loss": check_bool,
    "feature_strides": _feature_strides,
    "output_auxiliary_logits": optional(check_bool),
    "output_hidden_states": check_bool,
    "output_attentions": check_bool,
    "return_dict": check_bool,
    "torch_dtype": optional(_dtype),
}
# The fields of this library that transformers' Mask2FormerConfig does not have: keyword
# arguments (not in the signature, which stays transformers'), written to config.json and read
# back like the others. Their readers take them as plain attributes.
EXTRA_DEFAULTS: Dict[str, Any] = {
    # The task the model was trained for (mask2former.inference.options.ModelInfo; written by
    # the training command): one of TASKS, or None (panoptic).
    "task": None,
    # Class ids fused into one segment per image ("stuff"; the predictor's panoptic output and
    # the training command's thing classes), or None (none).
    "stuff_label_ids": None,
    # The segment score threshold the model declares for testing (a small model trained
    # briefly is right with less confidence than the published 0.8), or None (the caller's).
    "object_mask_threshold": None,
    # The Hungarian matcher's classification cost (mask2former.loss.criterion): 1.0 as in
    # transformers, whose matcher does not read class_weight.
    "matcher_class_cost": 1.0,
    # How the criterion samples the mask losses: "points" (the published recipe) or "dense".
    "mask_loss_sampling": "points",
}
# Each extra field's check (None lets "not set" through where the reader treats it so).
EXTRA_CHECKS: Dict[str, Check] = {
    "object_mask_threshold": optional(partial(check_float, low=0.0, high=1.0)),
    "task": optional(partial(check_choice, choices=TASKS)),
    "stuff_label_ids": optional(_label_ids),
    "matcher_class_cost": _weight,
    "mask_loss_sampling": partial(check_choice, choices=MASK_LOSS_SAMPLING),
}
FIELD_CHECKS.update(EXTRA_CHECKS)  # one table: every declared field has its check


def check_backbone_fits(bb: BackboneConfig) -> None:
    """The pixel decoder needs four backbone maps of strides 4, 8, 16 and 32."""
    stages = ["stage1", "stage2", "stage3", "stage4"]
    if len(bb.depths) != 4:
        raise ConfigError(
            "backbone_config.depths: Mask2Former needs a 4-stage backbone (strides 4, 8, 16, "
            f"32); got depths {bb.depths}"
        )
    if list(bb.out_features) != stages:
        raise ConfigError(
            "backbone_config.out_features: Mask2Former needs a 4-stage backbone with "
            f"out_features {stages}; got {bb.out_features}"
        )
    if isinstance(bb, ResNetConfig) and bb.downsample_in_first_stage:
        # The pixel decoder and post-processing take the finest map to be stride 4.
        raise ConfigError(
            "backbone_config.downsample_in_first_stage: true gives the stages strides 8, 16, "
            "32 and 64; Mask2Former needs 4, 8, 16, 32"
        )
    if isinstance(bb, SwinConfig) and bb.patch_size != 4:
        raise ConfigError(
            f"backbone_config.patch_size: {bb.patch_size} gives the stages strides "
            f"{[bb.patch_size * 2**i for i in range(4)]}; Mask2Former needs 4, 8, 16, 32"
        )


def check_widths(config: Any) -> None:
    """Widths that the GroupNorms and the attention heads must divide."""
    for name in ("feature_size", "mask_feature_size"):
        width = getattr(config, name)
        if width % 32:
            raise ConfigError(
                f"{name}: {width}: the pixel decoder's GroupNorm uses 32 groups, so it must "
                "be a positive multiple of 32"
            )
    heads = config.num_attention_heads
    if config.hidden_dim % heads:
        raise ConfigError(
            f"num_attention_heads: {heads} must divide hidden_dim={config.hidden_dim} (the "
            "transformer decoder's attention)"
        )
    if config.feature_size % heads:
        raise ConfigError(
            f"num_attention_heads: {heads} must divide feature_size={config.feature_size} (the "
            "pixel decoder's deformable attention)"
        )


def check_common_stride(value: int) -> None:
    """The pixel decoder's finest map is stride 4 in every published model."""
    if value != 4:
        raise ConfigError(f"common_stride: {value}: only 4 (the published models) is supported")
