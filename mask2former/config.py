"""Configuration objects, read from and written to ``config.json`` in the published layout.

The published Mask2Former checkpoints store a flat JSON object with ``model_type``
"mask2former", the backbone as a nested object with ``model_type`` "swin" (or "resnet", which
transformers 4.37.2 also runs), and ``id2label`` with string keys. Keys we do not model
(``architectures``, ``torch_dtype``, generation settings written by other tools, ...) are kept as
extra attributes so that a load/save round trip does not lose them.

The backbone configs live in :mod:`mask2former.backbone_config`; they are re-exported here.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Union

from ._config_base import ACTIVATIONS, CONFIG_NAME, ConfigError, JsonConfig
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
        if backbone_config is None:
            backbone_config = _default_backbone()
        elif isinstance(backbone_config, dict):
            backbone_config = backbone_config_from_dict(backbone_config)
        elif not isinstance(backbone_config, tuple(BACKBONE_CONFIGS.values())):
            raise ConfigError(
                "backbone_config must be a SwinConfig, a ResNetConfig or a dict with model_type "
                f"{' or '.join(map(repr, sorted(BACKBONE_CONFIGS)))}, got "
                f"{type(backbone_config).__name__}"
            )
        self.backbone_config = backbone_config
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
        self.feature_strides = list(feature_strides) if feature_strides else [4, 8, 16, 32]
        self.output_auxiliary_logits = output_auxiliary_logits

        id2label = kwargs.pop("id2label", None)
        label2id = kwargs.pop("label2id", None)
        num_labels = kwargs.pop("num_labels", None)
        if id2label is None:
            id2label = {i: f"LABEL_{i}" for i in range(2 if num_labels is None else num_labels)}
        self.id2label = {int(k): str(v) for k, v in id2label.items()}
        if num_labels is not None and num_labels != len(self.id2label):
            raise ConfigError(
                f"num_labels={num_labels} disagrees with id2label, which has {len(self.id2label)} "
                "entries"
            )
        if label2id is None:
            label2id = {v: k for k, v in self.id2label.items()}
        self.label2id = {str(k): int(v) for k, v in label2id.items()}
        self._set_extras(kwargs)
        self.validate()

    # -- derived values ------------------------------------------------------------------------

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @num_labels.setter
    def num_labels(self, value: int) -> None:
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
        bb = self.backbone_config
        stages = ["stage1", "stage2", "stage3", "stage4"]
        if len(bb.depths) != 4 or list(bb.out_features) != stages:
            raise ConfigError(
                "Mask2Former needs a 4-stage backbone with out_features stage1..stage4 (strides "
                f"4, 8, 16, 32); got depths {bb.depths} and out_features {bb.out_features}"
            )
        if isinstance(bb, ResNetConfig) and bb.downsample_in_first_stage:
            # The pixel decoder and post-processing take the finest map to be stride 4.
            raise ConfigError(
                "ResNetConfig.downsample_in_first_stage=True gives the stages strides 8, 16, 32 "
                "and 64; Mask2Former needs 4, 8, 16, 32"
            )
        for name, width in (
            ("feature_size", self.feature_size),
            ("mask_feature_size", self.mask_feature_size),
        ):
            if width < 1 or width % 32:
                raise ConfigError(
                    f"{name}={width}: the pixel decoder's GroupNorm uses 32 groups, so it must be "
                    "a positive multiple of 32"
                )
        if self.hidden_dim < 1 or self.num_attention_heads < 1:
            raise ConfigError("hidden_dim and num_attention_heads must be positive")
        if self.hidden_dim % self.num_attention_heads:
            raise ConfigError(
                f"num_attention_heads={self.num_attention_heads} must divide hidden_dim="
                f"{self.hidden_dim} (the transformer decoder's attention)"
            )
        if self.feature_size % self.num_attention_heads:
            raise ConfigError(
                f"num_attention_heads={self.num_attention_heads} must divide feature_size="
                f"{self.feature_size} (the pixel decoder's deformable attention)"
            )
        if self.decoder_layers < 1:
            raise ConfigError(f"decoder_layers must be at least 1, got {self.decoder_layers}")
        if self.encoder_layers < 0:
            raise ConfigError(f"encoder_layers must be >= 0, got {self.encoder_layers}")
        if self.num_queries < 1:
            raise ConfigError(f"num_queries must be at least 1, got {self.num_queries}")
        if self.num_labels < 1:
            raise ConfigError("id2label must name at least one class")
        if sorted(self.id2label) != list(range(self.num_labels)):
            raise ConfigError(
                f"id2label keys must be 0..num_labels-1, got {sorted(self.id2label)[:10]}..."
            )
        if self.activation_function not in ACTIVATIONS:
            raise ConfigError(f"unknown activation_function {self.activation_function!r}")
        if self.common_stride != 4:
            raise ConfigError(
                f"common_stride={self.common_stride}: only 4 (the published models) is supported"
            )
        if list(self.feature_strides) != [4, 8, 16, 32]:
            raise ConfigError(
                f"feature_strides={self.feature_strides}: only [4, 8, 16, 32] is supported"
            )

    def to_dict(self) -> Dict[str, Any]:
        out = super().to_dict()
        out["backbone_config"] = self.backbone_config.to_dict()
        out["id2label"] = {str(k): v for k, v in self.id2label.items()}
        out["num_hidden_layers"] = self.decoder_layers
        return out
