"""Backbone configurations, in the layout of the published ``backbone_config`` objects.

A Mask2Former config nests one of these, told apart by ``model_type``: "swin" (the published
checkpoints) or "resnet" (which transformers 4.37.2 also builds and runs inside Mask2Former).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Dict, List, Optional, Union

from ._config_base import (
    ACTIVATIONS,
    MAX_INPUT_CHANNELS,
    MAX_LAYERS,
    MAX_SIDE,
    MAX_STAGES,
    MAX_WIDTH,
    Check,
    ConfigError,
    JsonConfig,
    apply_checks,
    check_bool,
    check_choice,
    check_float,
    check_image_size,
    check_int,
    check_probability,
    check_stage_names,
    check_stage_sizes,
    int_list,
    show,
    stage_names_of,
    take_alias,
)

__all__ = [
    "BACKBONE_CONFIGS",
    "BackboneConfig",
    "ResNetConfig",
    "SwinConfig",
    "backbone_config_from_dict",
]

MAX_WINDOW = 32  # each Swin block keeps a (window^2, window^2) int64 index: 8 MB at 32
MAX_PATCH = 64
MAX_MLP_RATIO = 64.0


class _StagedConfig(JsonConfig):
    """A backbone of ``len(depths)`` stages after a stem, some of them named in ``out_features``.

    Subclasses list their field checks in ``_checks`` (field -> check returning the canonical
    value); ``validate`` runs them all before the checks that relate fields to each other.
    """

    depths: List[int]
    out_features: List[str]
    _checks: Dict[str, Check] = {}
    _block_word = "block"

    @property
    def stage_names(self) -> List[str]:
        return stage_names_of(len(self.depths))

    @property
    def out_indices(self) -> List[int]:
        return [self.stage_names.index(name) for name in self.out_features]

    def _check_fields(self) -> None:
        """Type and range of every field on its own."""
        apply_checks(self, self._checks)

    def _resolve_out_features(
        self, out_features: Optional[List[str]], out_indices: Optional[List[int]]
    ) -> List[str]:
        """``out_features``, or the stages that ``out_indices`` names, or the last stage.

        Needs ``depths`` checked first (the stage names come from its length).
        """
        names = self.stage_names
        from_indices = None
        if out_indices is not None:
            out_indices = int_list("out_indices", out_indices, max_len=MAX_STAGES + 1)
            bad = [i for i in out_indices if not -len(names) <= i < len(names)]
            if bad:
                raise ConfigError(
                    f"out_indices: {bad} are out of range for the stages {names} (one per entry "
                    f"of depths {self.depths}, after the stem)"
                )
            from_indices = [names[i] for i in out_indices]
        if out_features is None:
            return from_indices if from_indices is not None else [names[-1]]
        out_features = check_stage_names("out_features", out_features)
        if from_indices is not None and out_features != from_indices:
            raise ConfigError(
                f"out_features: {out_features} and out_indices {list(out_indices)} name "
                "different stages"
            )
        return out_features

    def _check_stages(self) -> None:
        """Depths (at least one block each, not too many in all) and ``out_features``."""
        if any(d < 1 for d in self.depths):
            raise ConfigError(
                f"depths: every stage needs at least one {self._block_word}, got {self.depths}"
            )
        if sum(self.depths) > MAX_LAYERS:
            raise ConfigError(
                f"depths: {sum(self.depths)} {self._block_word}s in all, more than the limit of "
                f"{MAX_LAYERS}: {show(self.depths)}"
            )
        unknown = [f for f in self.out_features if f not in self.stage_names]
        if unknown:
            raise ConfigError(
                f"out_features: {unknown} are not stages; choose from {self.stage_names} (one per "
                f"entry of depths {self.depths}, after the stem)"
            )
        if self.out_indices != sorted(set(self.out_indices)):
            raise ConfigError(
                f"out_features: {self.out_features} must be distinct and in stage order "
                f"{self.stage_names}"
            )

    def _check_widths(self, name: str, widths: List[int]) -> None:
        """Every stage width (already known to be positive) at most MAX_WIDTH, blaming the field
        ``name`` that sets them."""
        for i, width in enumerate(widths):
            if width > MAX_WIDTH:
                raise ConfigError(
                    f"{name}: stage {i + 1} would have {width} channels, more than the limit of "
                    f"{MAX_WIDTH}"
                )


class SwinConfig(_StagedConfig):
    """Swin Transformer backbone configuration (the fields of the published ``backbone_config``)."""

    model_type = "swin"
    _fields = (
        "image_size", "patch_size", "num_channels", "embed_dim", "depths", "num_heads",
        "window_size", "mlp_ratio", "qkv_bias", "hidden_dropout_prob",
        "attention_probs_dropout_prob", "drop_path_rate", "hidden_act", "use_absolute_embeddings",
        "initializer_range", "layer_norm_eps", "encoder_stride", "out_features",
    )  # fmt: skip
    _checks = {
        "image_size": check_image_size,
        "patch_size": partial(check_int, low=1, high=MAX_PATCH),
        "num_channels": partial(check_int, low=1, high=MAX_INPUT_CHANNELS),
        "embed_dim": partial(check_int, low=1, high=MAX_WIDTH),
        "depths": check_stage_sizes,
        "num_heads": check_stage_sizes,
        "window_size": partial(check_int, low=1, high=MAX_WINDOW),
        "mlp_ratio": partial(check_float, low=0.0, high=MAX_MLP_RATIO, low_open=True),
        "qkv_bias": check_bool,
        "hidden_dropout_prob": check_probability,
        "attention_probs_dropout_prob": check_probability,
        "drop_path_rate": check_probability,
        "hidden_act": partial(check_choice, choices=ACTIVATIONS),
        "use_absolute_embeddings": check_bool,
        "initializer_range": partial(check_float, low=0.0, high=100.0),
        "layer_norm_eps": partial(check_float, low=0.0, high=1.0, low_open=True),
        "encoder_stride": partial(check_int, low=1, high=MAX_SIDE),
        "out_features": check_stage_names,
    }

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
        self.depths = [2, 2, 6, 2] if depths is None else depths
        num_heads = take_alias(kwargs, "num_attention_heads", "num_heads", num_heads, None)
        self.num_heads = [3, 6, 12, 24] if num_heads is None else num_heads
        self._hidden_size: Optional[int] = None  # see hidden_size
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
        # The stage names come from the number of depths, which must be a list before that.
        self.depths = check_stage_sizes("depths", self.depths)
        self.out_features = self._resolve_out_features(out_features, out_indices)
        self._set_extras(kwargs)

    @property
    def num_layers(self) -> int:
        return len(self.depths)

    @property
    def hidden_size(self) -> int:
        """Channels of the last stage, unless set: as in transformers, a piece of information
        for other models that nothing here reads; a value set is kept but not saved."""
        if self._hidden_size is not None:
            return self._hidden_size
        return int(self.embed_dim * 2 ** (len(self.depths) - 1))

    @hidden_size.setter
    def hidden_size(self, value: int) -> None:
        self._hidden_size = value

    @property
    def num_attention_heads(self) -> List[int]:
        """Another name for ``num_heads`` (transformers' attribute_map); settable."""
        return self.num_heads

    @num_attention_heads.setter
    def num_attention_heads(self, value: List[int]) -> None:
        self.num_heads = value

    @property
    def stage_channels(self) -> List[int]:
        """Channels of each stage's output, ``embed_dim * 2**i``."""
        return [self.embed_dim * 2**i for i in range(len(self.depths))]

    def validate(self) -> None:
        """Check every field (type, range, sanity limit), then how they fit together.

        Also stores each field's canonical form (a list for a tuple, a float for an int where a
        number is expected). Raises ConfigError naming the field.
        """
        self._check_fields()
        if len(self.depths) != len(self.num_heads):
            raise ConfigError(
                f"num_heads: depths {self.depths} and num_heads {self.num_heads} must have the "
                "same length (one entry per stage)"
            )
        self._check_stages()
        self._check_widths("embed_dim", self.stage_channels)
        for i, (width, heads) in enumerate(zip(self.stage_channels, self.num_heads)):
            if heads < 1:
                raise ConfigError(f"num_heads: every stage needs a positive count, got {heads}")
            if width % heads:
                raise ConfigError(
                    f"num_heads: stage {i + 1} has {width} channels (embed_dim {self.embed_dim} "
                    f"x 2**{i}), which {heads} heads do not divide"
                )
        hidden = int(self.mlp_ratio * min(self.stage_channels))
        if hidden < 1 or self.mlp_ratio * max(self.stage_channels) > 4 * MAX_WIDTH:
            raise ConfigError(
                f"mlp_ratio: {self.mlp_ratio:g} x the stage widths {self.stage_channels} gives "
                f"feed-forward widths outside 1..{4 * MAX_WIDTH}"
            )
        if self.use_absolute_embeddings:
            raise ConfigError(
                "use_absolute_embeddings: true is not supported (this Swin has no absolute "
                "position embeddings; every published Mask2Former checkpoint uses false)"
            )

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
    _block_word = "layer"
    _fields = (
        "num_channels", "embedding_size", "hidden_sizes", "depths", "layer_type", "hidden_act",
        "downsample_in_first_stage", "downsample_in_bottleneck", "out_features",
    )  # fmt: skip
    _checks = {
        "num_channels": partial(check_int, low=1, high=MAX_INPUT_CHANNELS),
        "embedding_size": partial(check_int, low=1, high=MAX_WIDTH),
        "hidden_sizes": check_stage_sizes,
        "depths": check_stage_sizes,
        "layer_type": partial(check_choice, choices=layer_types),
        "hidden_act": partial(check_choice, choices=ACTIVATIONS),
        "downsample_in_first_stage": check_bool,
        "downsample_in_bottleneck": check_bool,
        "out_features": check_stage_names,
    }

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
        self.hidden_sizes = [256, 512, 1024, 2048] if hidden_sizes is None else hidden_sizes
        self.depths = [3, 4, 6, 3] if depths is None else depths
        self.layer_type = layer_type
        self.hidden_act = hidden_act
        self.downsample_in_first_stage = downsample_in_first_stage
        self.downsample_in_bottleneck = downsample_in_bottleneck
        # The stage names come from the number of depths, which must be a list before that.
        self.depths = check_stage_sizes("depths", self.depths)
        self.out_features = self._resolve_out_features(out_features, out_indices)
        self._set_extras(kwargs)

    @property
    def stage_channels(self) -> List[int]:
        """Channels of each stage's output (``hidden_sizes``)."""
        return list(self.hidden_sizes)

    def validate(self) -> None:
        """Check every field (type, range, sanity limit), then how they fit together.

        Also stores each field's canonical form (a list for a tuple). Raises ConfigError naming
        the field.
        """
        self._check_fields()
        if len(self.hidden_sizes) != len(self.depths):
            raise ConfigError(
                f"hidden_sizes: hidden_sizes {self.hidden_sizes} and depths {self.depths} must "
                "have the same length (one entry per stage)"
            )
        self._check_stages()
        # A bottleneck works at a quarter of its output width, which must not round to zero.
        smallest = 4 if self.layer_type == "bottleneck" else 1
        if any(h < smallest for h in self.hidden_sizes):
            raise ConfigError(
                f"hidden_sizes: {self.hidden_sizes} must all be at least {smallest} "
                f"for {self.layer_type} layers"
            )
        self._check_widths("hidden_sizes", self.hidden_sizes)

    def to_dict(self) -> Dict[str, Any]:
        out = super().to_dict()
        out["out_indices"] = self.out_indices  # written by the reference; keeps files identical
        return out


BackboneConfig = Union[SwinConfig, ResNetConfig]

BACKBONE_CONFIGS = {cls.model_type: cls for cls in (SwinConfig, ResNetConfig)}


def backbone_config_from_dict(data: Dict[str, Any], validate: bool = True) -> BackboneConfig:
    """The backbone config class that ``data["model_type"]`` names, read from ``data``.

    A dict without ``model_type`` is read as Swin, the backbone of every published checkpoint.
    Errors name the field (``depths: ...``); the caller adds ``backbone_config.`` in front.
    """
    model_type = data.get("model_type", SwinConfig.model_type)
    if not isinstance(model_type, str) or model_type not in BACKBONE_CONFIGS:
        raise ConfigError(
            f"model_type: backbone model_type {show(model_type)} is not supported; choose from "
            f"{sorted(BACKBONE_CONFIGS)}"
        )
    config_class = BACKBONE_CONFIGS[model_type]
    return config_class.from_dict(data) if validate else config_class._from_dict_unchecked(data)
