"""Configuration objects, read from and written to ``config.json`` in the published layout.

The published Mask2Former checkpoints store a flat JSON object with ``model_type``
"mask2former", the backbone as a nested object with ``model_type`` "swin" (or "resnet", which
transformers 4.37.2 also runs), and ``id2label`` with string keys. Keys we do not model
(``architectures``, ``torch_dtype``, generation settings written by other tools, ...) are kept as
extra attributes so that a load/save round trip does not lose them.

The backbone configs live in :mod:`mask2former.backbone_config`; they are re-exported here.
"""

from __future__ import annotations

import numbers
import re
from functools import partial
from typing import Any, Dict, List, Optional, Tuple, Union

from ._config_base import (
    ACTIVATIONS,
    CONFIG_NAME,
    INT32,
    MAX_FEEDFORWARD,
    MAX_LABELS,
    MAX_LAYERS,
    MAX_LOSS_WEIGHT,
    MAX_QUERIES,
    MAX_WIDTH,
    Check,
    ConfigError,
    JsonConfig,
    apply_checks,
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_list,
    int_list,
    optional,
    prefixed,
    show,
)
from .backbone_config import (
    BACKBONE_CONFIGS,
    BackboneConfig,
    ResNetConfig,
    SwinConfig,
    backbone_config_from_dict,
)

__all__ = [
    "CONFIG_NAME",
    "BackboneConfig",
    "ConfigError",
    "SwinConfig",
    "ResNetConfig",
    "Mask2FormerConfig",
]

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


def _check_id2label(value: Any) -> Dict[int, str]:
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


def _check_label2id(value: Any, num_labels: int) -> Dict[str, int]:
    """``label2id`` with string keys and ids of existing classes."""
    if not isinstance(value, dict):
        raise ConfigError(f"label2id: expected an object of class name -> id, got {show(value)}")
    out = {}
    for key, index in value.items():
        name = f"label2id[{key!r}]"
        out[_label_name("label2id key", key)] = check_int(name, index)
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


def _backbone(value: Any) -> BackboneConfig:
    """The backbone config for ``backbone_config``: None (the default Swin), a dict (read by
    ``model_type``; errors named ``backbone_config.<field>``) or a backbone config object."""
    if value is None:
        return _default_backbone()
    if isinstance(value, dict):
        with prefixed("backbone_config."):
            return backbone_config_from_dict(value)
    if not isinstance(value, tuple(BACKBONE_CONFIGS.values())):
        raise ConfigError(
            "backbone_config: must be a SwinConfig, a ResNetConfig or a dict with model_type "
            f"{' or '.join(map(repr, sorted(BACKBONE_CONFIGS)))}, got {type(value).__name__}"
        )
    return value


def _labels(id2label: Any, label2id: Any, num_labels: Any) -> Tuple[Dict[int, str], Dict[str, int]]:
    """``(id2label, label2id)`` from the constructor's arguments, checked; either may be None
    (made from ``num_labels``, or the other)."""
    if num_labels is not None:
        num_labels = check_int("num_labels", num_labels, 1, MAX_LABELS)
    if id2label is None:
        id2label = {i: f"LABEL_{i}" for i in range(2 if num_labels is None else num_labels)}
    id2label = _check_id2label(id2label)
    if num_labels is not None and num_labels != len(id2label):
        raise ConfigError(
            f"num_labels: {num_labels} disagrees with id2label, which has {len(id2label)} entries"
        )
    if label2id is None:
        label2id = {v: k for k, v in id2label.items()}
    return id2label, _check_label2id(label2id, len(id2label))


def _default_backbone() -> SwinConfig:
    # Swin-S-like, as the reference's default (facebook/mask2former-swin-small-coco-instance).
    return SwinConfig(
        image_size=224,
        in_channels=3,
        patch_size=4,
        embed_dim=96,
        depths=[2, 2, 18, 2],
        num_heads=[3, 6, 12, 24],
        window_size=7,
        drop_path_rate=0.3,
        use_absolute_embeddings=False,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )


class Mask2FormerConfig(JsonConfig):
    """Configuration of a Mask2Former model. Arguments and defaults follow the published API.

    ``num_labels`` is derived from ``id2label``; pass either ``id2label`` (keys may be strings, as
    in config.json) or ``num_labels`` (labels are then named ``LABEL_i``).
    """

    model_type = "mask2former"
    _fields = (
        "backbone_config", "feature_size", "mask_feature_size", "hidden_dim",
        "encoder_feedforward_dim", "activation_function", "encoder_layers", "decoder_layers",
        "num_attention_heads", "dropout", "dim_feedforward", "pre_norm",
        "enforce_input_projection", "common_stride", "ignore_value", "num_queries",
        "no_object_weight", "class_weight", "mask_weight", "dice_weight", "train_num_points",
        "oversample_ratio", "importance_sample_ratio", "init_std", "init_xavier_std",
        "use_auxiliary_loss", "feature_strides", "output_auxiliary_logits", "id2label",
        "label2id",
    )  # fmt: skip
    # Type, range and sanity limit of each field on its own (id2label, label2id and the backbone
    # are checked separately); each check returns the canonical value.
    _checks: Dict[str, Check] = {
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
    }
    # Keys that are not constructor arguments but that other code reads when present (the
    # predictor, the criterion, the training command); None means "not set" where the reader
    # treats it so.
    _extra_checks: Dict[str, Check] = {
        "object_mask_threshold": optional(partial(check_float, low=0.0, high=1.0)),
        "task": optional(partial(check_choice, choices=TASKS)),
        "stuff_label_ids": optional(_label_ids),
        "matcher_class_cost": _weight,
        "mask_loss_sampling": partial(check_choice, choices=MASK_LOSS_SAMPLING),
        "torch_dtype": optional(partial(check_choice, choices=DTYPES)),
    }

    def __init__(
        self,
        backbone_config: Optional[Union[BackboneConfig, Dict[str, Any]]] = None,
        feature_size: int = 256,
        mask_feature_size: int = 256,
        hidden_dim: int = 256,
        encoder_feedforward_dim: int = 1024,
        activation_function: str = "relu",
        encoder_layers: int = 6,
        decoder_layers: int = 10,
        num_attention_heads: int = 8,
        dropout: float = 0.0,
        dim_feedforward: int = 2048,
        pre_norm: bool = False,
        enforce_input_projection: bool = False,
        common_stride: int = 4,
        ignore_value: int = 255,
        num_queries: int = 100,
        no_object_weight: float = 0.1,
        class_weight: float = 2.0,
        mask_weight: float = 5.0,
        dice_weight: float = 5.0,
        train_num_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        init_std: float = 0.02,
        init_xavier_std: float = 1.0,
        use_auxiliary_loss: bool = True,
        feature_strides: Optional[List[int]] = None,
        output_auxiliary_logits: Optional[bool] = None,
        **kwargs: Any,
    ):
        self.backbone_config = _backbone(backbone_config)
        self.feature_size = feature_size
        self.mask_feature_size = mask_feature_size
        self.hidden_dim = hidden_dim
        self.encoder_feedforward_dim = encoder_feedforward_dim
        self.activation_function = activation_function
        self.encoder_layers = encoder_layers
        self.decoder_layers = decoder_layers
        self.num_attention_heads = num_attention_heads
        self.dropout = dropout
        self.dim_feedforward = dim_feedforward
        self.pre_norm = pre_norm
        self.enforce_input_projection = enforce_input_projection
        self.common_stride = common_stride
        self.ignore_value = ignore_value
        self.num_queries = num_queries
        self.no_object_weight = no_object_weight
        self.class_weight = class_weight
        self.mask_weight = mask_weight
        self.dice_weight = dice_weight
        self.train_num_points = train_num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.init_std = init_std
        self.init_xavier_std = init_xavier_std
        self.use_auxiliary_loss = use_auxiliary_loss
        self.feature_strides = list(FEATURE_STRIDES) if feature_strides is None else feature_strides
        self.output_auxiliary_logits = output_auxiliary_logits
        self.id2label, self.label2id = _labels(
            kwargs.pop("id2label", None),
            kwargs.pop("label2id", None),
            kwargs.pop("num_labels", None),
        )
        self._set_extras(kwargs)
        self.validate()

    # -- derived values ------------------------------------------------------------------------

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @num_labels.setter
    def num_labels(self, value: int) -> None:
        value = check_int("num_labels", value, 1, MAX_LABELS)
        if len(self.id2label) != value:
            self.id2label = {i: f"LABEL_{i}" for i in range(value)}
            self.label2id = {v: k for k, v in self.id2label.items()}

    @property
    def num_hidden_layers(self) -> int:
        return self.decoder_layers

    @property
    def hidden_size(self) -> int:
        return self.hidden_dim

    @classmethod
    def from_backbone_config(
        cls, backbone_config: BackboneConfig, **kwargs: Any
    ) -> Mask2FormerConfig:
        """A config with the given backbone and every other field at its default or ``kwargs``."""
        return cls(backbone_config=backbone_config, **kwargs)

    def validate(self) -> None:
        """Check every field (type, range, sanity limit), the backbone's (errors name them
        ``backbone_config.<field>``) and the optional keys other code reads, then how the fields
        fit together. Each field is stored in its canonical form (e.g. a float where an int was
        given for a weight). Raises ConfigError naming the field.
        """
        self.backbone_config = _backbone(self.backbone_config)
        with prefixed("backbone_config."):
            self.backbone_config.validate()
        apply_checks(self, self._checks)
        self.id2label = _check_id2label(self.id2label)
        self.label2id = _check_label2id(self.label2id, self.num_labels)
        apply_checks(self, self._extra_checks, present_only=True)
        self._check_backbone_fits()
        self._check_widths()
        if self.common_stride != 4:
            raise ConfigError(
                f"common_stride: {self.common_stride}: only 4 (the published models) is supported"
            )

    def _check_backbone_fits(self) -> None:
        """The pixel decoder needs four backbone maps of strides 4, 8, 16 and 32."""
        bb = self.backbone_config
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

    def _check_widths(self) -> None:
        """Widths that the GroupNorms and the attention heads must divide."""
        for name in ("feature_size", "mask_feature_size"):
            width = getattr(self, name)
            if width % 32:
                raise ConfigError(
                    f"{name}: {width}: the pixel decoder's GroupNorm uses 32 groups, so it must "
                    "be a positive multiple of 32"
                )
        heads = self.num_attention_heads
        if self.hidden_dim % heads:
            raise ConfigError(
                f"num_attention_heads: {heads} must divide hidden_dim={self.hidden_dim} (the "
                "transformer decoder's attention)"
            )
        if self.feature_size % heads:
            raise ConfigError(
                f"num_attention_heads: {heads} must divide feature_size={self.feature_size} (the "
                "pixel decoder's deformable attention)"
            )

    def _merge_overrides(self, data: Dict[str, Any], overrides: Dict[str, Any]) -> Dict[str, Any]:
        """Overrides of ``from_pretrained``; new labels replace the old names and ids."""
        if "id2label" in overrides or (
            "num_labels" in overrides and overrides["num_labels"] != self.num_labels
        ):
            data.pop("label2id", None)
            if "id2label" not in overrides:
                data.pop("id2label", None)
        data.update(overrides)
        return data

    def to_dict(self) -> Dict[str, Any]:
        out = super().to_dict()
        out["backbone_config"] = self.backbone_config.to_dict()
        out["id2label"] = {str(k): v for k, v in self.id2label.items()}
        out["num_hidden_layers"] = self.decoder_layers
        return out
