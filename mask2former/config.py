"""Configuration objects, read from and written to ``config.json`` in the published layout.

The published Mask2Former checkpoints store a flat JSON object with ``model_type``
"mask2former", the backbone as a nested object with ``model_type`` "swin" (or "resnet", which
transformers 4.37.2 also runs), and ``id2label`` with string keys. Keys we do not model
(``architectures``, generation settings written by other tools, ...) are kept as extra
attributes so that a load/save round trip does not lose them; every key this library reads is a
declared, validated field of :class:`Mask2FormerConfig`.

The backbone configs live in :mod:`mask2former.backbone_config`; they are re-exported here.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Union

from ._config_base import (
    CONFIG_NAME,
    MAX_LABELS,
    ConfigError,
    JsonConfig,
    apply_checks,
    check_int,
    prefixed,
    take_alias,
)
from ._model_config_checks import (
    DTYPES,
    EXTRA_DEFAULTS,
    FEATURE_STRIDES,
    FIELD_CHECKS,
    MASK_LOSS_SAMPLING,
    TASKS,
    check_backbone_fits,
    check_common_stride,
    check_id2label,
    check_label2id,
    check_widths,
    labels_from_arguments,
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
    # The values other modules accept for the optional keys they read from config.json.
    "TASKS",
    "MASK_LOSS_SAMPLING",
    "DTYPES",
]


def _backbone(value: Any) -> BackboneConfig:
    """The backbone config for ``backbone_config``: None (the default Swin), a dict (read by
    ``model_type``; errors named ``backbone_config.<field>``) or a backbone config object."""
    if value is None:
        return _default_backbone()
    if isinstance(value, dict):
        with prefixed("backbone_config."):
            return backbone_config_from_dict(value, validate=False)
    if not isinstance(value, tuple(BACKBONE_CONFIGS.values())):
        raise ConfigError(
            "backbone_config: must be a SwinConfig, a ResNetConfig or a dict with model_type "
            f"{' or '.join(map(repr, sorted(BACKBONE_CONFIGS)))}, got {type(value).__name__}"
        )
    return value


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

    Keyword-only fields besides the signature's: transformers' ``output_hidden_states``
    (False), ``output_attentions`` (False), ``return_dict`` (True; ``use_return_dict`` reads
    it) and ``torch_dtype`` (None); this library's ``task``, ``stuff_label_ids``,
    ``object_mask_threshold``, ``matcher_class_cost`` and ``mask_loss_sampling`` (see
    ``EXTRA_DEFAULTS`` in mask2former._model_config_checks). ``hidden_size`` and
    ``num_hidden_layers`` are other names for ``hidden_dim`` and ``decoder_layers``.

    The constructor does not validate, so a config can be built and then changed field by
    field (as transformers allows); :meth:`validate` checks it, and the model calls it when it
    is built. Reading a dict or a file (``from_dict``, ``from_json_file``, ``from_pretrained``)
    validates at once.
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
        "label2id", "output_hidden_states", "output_attentions", "return_dict", "torch_dtype",
    ) + tuple(EXTRA_DEFAULTS)  # fmt: skip
    # Each field's check on its own, as the backbone configs have theirs (the checks are in
    # mask2former._model_config_checks).
    _checks = FIELD_CHECKS

    def __init__(
        self,
        backbone_config: Optional[Union[BackboneConfig, Dict[str, Any]]] = None,
        feature_size: int = 256,
        mask_feature_size: int = 256,
        hidden_dim: int = 256,
        encoder_feedforward_dim: int = 1024,
        activation_function: str = "relu",
        encoder_layers: int = 6,
        decoder_layers: Optional[int] = None,
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
        # transformers' common names of two fields: one value each, under either name.
        hidden_dim = take_alias(kwargs, "hidden_size", "hidden_dim", hidden_dim, 256)
        # num_hidden_layers is also the copy of decoder_layers that config.json holds (as
        # transformers writes it), so a decoder_layers given (say, changed in such a dict)
        # wins; num_hidden_layers alone sets it. Default 10.
        hidden_layers = kwargs.pop("num_hidden_layers", None)
        if decoder_layers is None:
            decoder_layers = 10 if hidden_layers is None else hidden_layers
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
        self.id2label, self.label2id = labels_from_arguments(
            kwargs.pop("id2label", None),
            kwargs.pop("label2id", None),
            kwargs.pop("num_labels", None),
        )
        self._set_common_fields(kwargs)
        self._set_extras(kwargs)
        # Not validated here: as in transformers, a config may be built and then changed field
        # by field; the model validates it when it is built (and from_dict / from_pretrained
        # when it is read).

    def _set_common_fields(self, kwargs: Dict[str, Any]) -> None:
        """The fields every transformers config has that mean something here, taken out of
        ``kwargs``."""
        # Config-level defaults of the forward pass's flags, as in transformers: a forward
        # argument left at None takes these.
        self.output_hidden_states = kwargs.pop("output_hidden_states", False)
        self.output_attentions = kwargs.pop("output_attentions", False)
        self.return_dict = kwargs.pop("return_dict", True)
        # The dtype the weights were saved in (written by save_pretrained, read by
        # from_pretrained(torch_dtype="auto")); None: not recorded.
        self.torch_dtype = kwargs.pop("torch_dtype", None)
        if "dtype" in kwargs:  # the name transformers 5.x writes
            dtype = kwargs.pop("dtype")
            self.torch_dtype = dtype if self.torch_dtype is None else self.torch_dtype
        # This library's own fields (task, stuff_label_ids, ...): see EXTRA_DEFAULTS.
        for name, default in EXTRA_DEFAULTS.items():
            setattr(self, name, kwargs.pop(name, default))

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
    def torch_dtype(self) -> Any:
        """The dtype the weights were saved in, as a ``torch.dtype`` (transformers' type) or None
        (not recorded); set it as a dtype or its name. Stored and written by name."""
        name = self._torch_dtype
        if isinstance(name, str) and name in DTYPES:
            import torch  # here, so that reading a config does not load torch

            return getattr(torch, name.replace("torch.", ""))
        return name  # None, or a value validate() will refuse

    @torch_dtype.setter
    def torch_dtype(self, value: Any) -> None:
        if type(value).__module__ == "torch" and type(value).__name__ == "dtype":
            value = str(value).split(".", 1)[-1]
        self._torch_dtype = value

    @property
    def use_return_dict(self) -> bool:
        """Whether the models return their output dataclass (True) or a tuple by default."""
        return self.return_dict

    @property
    def num_hidden_layers(self) -> int:
        """Another name for ``decoder_layers`` (transformers' common name); settable."""
        return self.decoder_layers

    @num_hidden_layers.setter
    def num_hidden_layers(self, value: int) -> None:
        self.decoder_layers = value

    @property
    def hidden_size(self) -> int:
        """Another name for ``hidden_dim`` (transformers' attribute_map); settable."""
        return self.hidden_dim

    @hidden_size.setter
    def hidden_size(self, value: int) -> None:
        self.hidden_dim = value

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
        self.id2label = check_id2label(self.id2label)
        self.label2id = check_label2id(self.label2id, self.num_labels)
        check_backbone_fits(self.backbone_config)
        check_widths(self)
        check_common_stride(self.common_stride)

    def _merge_overrides(self, data: Dict[str, Any], overrides: Dict[str, Any]) -> Dict[str, Any]:
        """Overrides of ``from_pretrained``; new labels replace the old names and ids, and an
        alias changes its field (not the copy of decoder_layers that the dict holds)."""
        aliases = {"hidden_size": "hidden_dim", "num_hidden_layers": "decoder_layers"}
        overrides = {aliases.get(key, key): value for key, value in overrides.items()}
        data.pop("num_hidden_layers", None)
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
        out["torch_dtype"] = self._torch_dtype
        return out
