"""Backbone configurations, in the layout of the published ``backbone_config`` objects.

A Mask2Former config nests one of these, told apart by ``model_type``: "swin" (the published
checkpoints) or "resnet" (which transformers 4.37.2 also builds and runs inside Mask2Former).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Union

from ._config_base import ACTIVATIONS, ConfigError, JsonConfig

__all__ = [
    "BACKBONE_CONFIGS",
    "BackboneConfig",
    "ResNetConfig",
    "SwinConfig",
    "backbone_config_from_dict",
]


def _stage_names(num_stages: int) -> List[str]:
    return ["stem"] + [f"stage{i + 1}" for i in range(num_stages)]


class _StagedConfig(JsonConfig):
    """A backbone of ``len(depths)`` stages after a stem, some of them named in ``out_features``."""

    depths: List[int]
    out_features: List[str]

    @property
    def stage_names(self) -> List[str]:
        return _stage_names(len(self.depths))

    @property
    def out_indices(self) -> List[int]:
        return [self.stage_names.index(name) for name in self.out_features]


class SwinConfig(_StagedConfig):
    """Swin Transformer backbone configuration (the fields of the published ``backbone_config``)."""

    model_type = "swin"
    _fields = (
        "image_size", "patch_size", "num_channels", "embed_dim", "depths", "num_heads",
        "window_size", "mlp_ratio", "qkv_bias", "hidden_dropout_prob",
        "attention_probs_dropout_prob", "drop_path_rate", "hidden_act", "use_absolute_embeddings",
        "initializer_range", "layer_norm_eps", "encoder_stride", "out_features",
    )  # fmt: skip

    def __init__(
        self,
        image_size: int = 224,
        patch_size: int = 4,
        num_channels: int = 3,
        embed_dim: int = 96,
        depths: Optional[List[int]] = None,
        num_heads: Optional[List[int]] = None,
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        hidden_dropout_prob: float = 0.0,
        attention_probs_dropout_prob: float = 0.0,
        drop_path_rate: float = 0.1,
        hidden_act: str = "gelu",
        use_absolute_embeddings: bool = False,
        initializer_range: float = 0.02,
        layer_norm_eps: float = 1e-5,
        encoder_stride: int = 32,
        out_features: Optional[List[str]] = None,
        out_indices: Optional[List[int]] = None,
        **kwargs: Any,
    ):
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.embed_dim = embed_dim
        self.depths = list(depths) if depths is not None else [2, 2, 6, 2]
        self.num_heads = list(num_heads) if num_heads is not None else [3, 6, 12, 24]
        self.window_size = window_size
        self.mlp_ratio = mlp_ratio
        self.qkv_bias = qkv_bias
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.drop_path_rate = drop_path_rate
        self.hidden_act = hidden_act
        self.use_absolute_embeddings = use_absolute_embeddings
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        self.encoder_stride = encoder_stride
        stage_names = self.stage_names
        if out_features is None and out_indices is not None:
            out_features = [stage_names[i] for i in out_indices]
        self.out_features = list(out_features) if out_features is not None else [stage_names[-1]]
        self._set_extras(kwargs)
        self.validate()

    @property
    def num_layers(self) -> int:
        return len(self.depths)

    @property
    def hidden_size(self) -> int:
        """Channels of the last stage."""
        return int(self.embed_dim * 2 ** (len(self.depths) - 1))

    @property
    def stage_channels(self) -> List[int]:
        """Channels of each stage's output, ``embed_dim * 2**i``."""
        return [self.embed_dim * 2**i for i in range(len(self.depths))]

    def validate(self) -> None:
        if len(self.depths) != len(self.num_heads):
            raise ConfigError(
                f"SwinConfig: depths {self.depths} and num_heads {self.num_heads} must have the "
                "same length (one entry per stage)"
            )
        if not self.depths or any(int(d) < 1 for d in self.depths):
            raise ConfigError(
                f"SwinConfig: every stage needs at least one block, got {self.depths}"
            )
        for i, (width, heads) in enumerate(zip(self.stage_channels, self.num_heads)):
            if heads < 1 or width % heads:
                raise ConfigError(
                    f"SwinConfig: stage {i + 1} has {width} channels (embed_dim {self.embed_dim} "
                    f"x 2**{i}), which {heads} heads do not divide"
                )
        if self.window_size < 1 or self.patch_size < 1:
            raise ConfigError("SwinConfig: window_size and patch_size must be positive")
        unknown = [f for f in self.out_features if f not in self.stage_names]
        if unknown:
            raise ConfigError(
                f"SwinConfig: out_features {unknown} are not stages; choose from {self.stage_names}"
            )
        if self.hidden_act not in ACTIVATIONS:
            raise ConfigError(f"SwinConfig: unknown hidden_act {self.hidden_act!r}")

    def to_dict(self) -> Dict[str, Any]:
        out = super().to_dict()
        out["out_indices"] = self.out_indices  # written by the reference; keeps files identical
        return out


class ResNetConfig(_StagedConfig):
    """ResNet backbone configuration (the fields of transformers' ``ResNetConfig``).

    The stem (7x7 stride-2 convolution, BatchNorm, activation, 3x3 stride-2 max-pool) gives stride
    4; each later stage halves the resolution, so stage1..stage4 have strides 4, 8, 16, 32 (8..64
    with ``downsample_in_first_stage``). ``hidden_sizes`` are the stage output channels;
    bottleneck layers work at a quarter of them inside.
    """

    model_type = "resnet"
    layer_types = ("basic", "bottleneck")
    _fields = (
        "num_channels", "embedding_size", "hidden_sizes", "depths", "layer_type", "hidden_act",
        "downsample_in_first_stage", "downsample_in_bottleneck", "out_features",
    )  # fmt: skip

    def __init__(
        self,
        num_channels: int = 3,
        embedding_size: int = 64,
        hidden_sizes: Optional[List[int]] = None,
        depths: Optional[List[int]] = None,
        layer_type: str = "bottleneck",
        hidden_act: str = "relu",
        downsample_in_first_stage: bool = False,
        downsample_in_bottleneck: bool = False,
        out_features: Optional[List[str]] = None,
        out_indices: Optional[List[int]] = None,
        **kwargs: Any,
    ):
        self.num_channels = num_channels
        self.embedding_size = embedding_size
        self.hidden_sizes = (
            list(hidden_sizes) if hidden_sizes is not None else [256, 512, 1024, 2048]
        )
        self.depths = list(depths) if depths is not None else [3, 4, 6, 3]
        self.layer_type = layer_type
        self.hidden_act = hidden_act
        self.downsample_in_first_stage = downsample_in_first_stage
        self.downsample_in_bottleneck = downsample_in_bottleneck
        self.out_features = self._resolve_out_features(out_features, out_indices)
        self._set_extras(kwargs)
        self.validate()

    def _resolve_out_features(
        self, out_features: Optional[List[str]], out_indices: Optional[List[int]]
    ) -> List[str]:
        """``out_features``, or the stages that ``out_indices`` names, or the last stage."""
        names = self.stage_names
        from_indices = None
        if out_indices is not None:
            bad = [i for i in out_indices if not -len(names) <= int(i) < len(names)]
            if bad:
                raise ConfigError(
                    f"ResNetConfig: out_indices {bad} are out of range for the stages {names}"
                )
            from_indices = [names[int(i)] for i in out_indices]
        if out_features is None:
            return from_indices if from_indices is not None else [names[-1]]
        if from_indices is not None and list(out_features) != from_indices:
            raise ConfigError(
                f"ResNetConfig: out_features {list(out_features)} and out_indices "
                f"{list(out_indices)} name different stages"
            )
        return list(out_features)

    @property
    def stage_channels(self) -> List[int]:
        """Channels of each stage's output (``hidden_sizes``)."""
        return list(self.hidden_sizes)

    def validate(self) -> None:
        if self.layer_type not in self.layer_types:
            raise ConfigError(
                f"ResNetConfig: unknown layer_type {self.layer_type!r}; choose from "
                f"{list(self.layer_types)}"
            )
        if len(self.hidden_sizes) != len(self.depths):
            raise ConfigError(
                f"ResNetConfig: hidden_sizes {self.hidden_sizes} and depths {self.depths} must "
                "have the same length (one entry per stage)"
            )
        if not self.depths or any(int(d) < 1 for d in self.depths):
            raise ConfigError(
                f"ResNetConfig: every stage needs at least one layer, got depths {self.depths}"
            )
        if self.num_channels < 1 or self.embedding_size < 1:
            raise ConfigError(
                f"ResNetConfig: num_channels ({self.num_channels}) and embedding_size "
                f"({self.embedding_size}) must be positive"
            )
        # A bottleneck works at a quarter of its output width, which must not round to zero.
        smallest = 4 if self.layer_type == "bottleneck" else 1
        if any(int(h) < smallest for h in self.hidden_sizes):
            raise ConfigError(
                f"ResNetConfig: hidden_sizes {self.hidden_sizes} must all be at least {smallest} "
                f"for {self.layer_type} layers"
            )
        unknown = [f for f in self.out_features if f not in self.stage_names]
        if unknown:
            raise ConfigError(
                f"ResNetConfig: out_features {unknown} are not stages; choose from "
                f"{self.stage_names}"
            )
        if self.out_indices != sorted(set(self.out_indices)):
            raise ConfigError(
                f"ResNetConfig: out_features {self.out_features} must be distinct and in stage "
                f"order {self.stage_names}"
            )
        if self.hidden_act not in ACTIVATIONS:
            raise ConfigError(
                f"ResNetConfig: unknown hidden_act {self.hidden_act!r}; choose from "
                f"{list(ACTIVATIONS)}"
            )

    def to_dict(self) -> Dict[str, Any]:
        out = super().to_dict()
        out["out_indices"] = self.out_indices  # written by the reference; keeps files identical
        return out


BackboneConfig = Union[SwinConfig, ResNetConfig]

BACKBONE_CONFIGS = {cls.model_type: cls for cls in (SwinConfig, ResNetConfig)}


def backbone_config_from_dict(data: Dict[str, Any]) -> BackboneConfig:
    """The backbone config class that ``data["model_type"]`` names, read from ``data``.

    A dict without ``model_type`` is read as Swin, the backbone of every published checkpoint.
    """
    model_type = data.get("model_type", SwinConfig.model_type)
    cls = BACKBONE_CONFIGS.get(model_type)
    if cls is None:
        raise ConfigError(
            f"backbone_config has model_type {model_type!r}, which is not supported; choose from "
            f"{sorted(BACKBONE_CONFIGS)}"
        )
    return cls.from_dict(data)
