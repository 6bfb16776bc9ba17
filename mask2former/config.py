"""Configuration objects, read from and written to ``config.json`` in the published layout.

The published Mask2Former checkpoints store a flat JSON object with ``model_type``
"mask2former", the backbone as a nested object with ``model_type`` "swin", and ``id2label``
with string keys. Keys we do not model (``architectures``, ``torch_dtype``, generation
settings written by other tools, ...) are kept as extra attributes so that a load/save round
trip does not lose them.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any, Dict, List, Optional, Union

__all__ = ["ConfigError", "SwinConfig", "Mask2FormerConfig"]

CONFIG_NAME = "config.json"

# Keys that the reference writes for every config but that mean nothing to this library; they are
# dropped on load so they do not clutter the config (they are harmless either way).
_GENERIC_KEYS = {
    "return_dict", "output_hidden_states", "output_attentions", "torchscript", "use_bfloat16",
    "tf_legacy_loss", "pruned_heads", "tie_word_embeddings", "chunk_size_feed_forward",
    "is_encoder_decoder", "is_decoder", "cross_attention_hidden_size", "add_cross_attention",
    "tie_encoder_decoder", "max_length", "min_length", "do_sample", "early_stopping", "num_beams",
    "num_beam_groups", "diversity_penalty", "temperature", "top_k", "top_p", "typical_p",
    "repetition_penalty", "length_penalty", "no_repeat_ngram_size", "encoder_no_repeat_ngram_size",
    "bad_words_ids", "num_return_sequences", "output_scores", "return_dict_in_generate",
    "forced_bos_token_id", "forced_eos_token_id", "remove_invalid_values",
    "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens",
    "finetuning_task", "tokenizer_class", "prefix", "bos_token_id", "pad_token_id", "eos_token_id",
    "sep_token_id", "decoder_start_token_id", "task_specific_params", "problem_type",
    "_name_or_path", "_commit_hash", "hidden_size", "num_layers", "stage_names", "out_indices",
    "num_hidden_layers", "transformers_version",
}  # fmt: skip

_ACTIVATIONS = ("relu", "gelu", "silu", "swish", "gelu_new", "quick_gelu", "tanh", "sigmoid")


class ConfigError(ValueError):
    """A configuration value is invalid or inconsistent."""


class _JsonConfig:
    """Shared JSON plumbing: ``to_dict``/``from_dict``, files, equality and repr."""

    model_type: str = ""
    _fields: tuple = ()

    def _set_extras(self, kwargs: Dict[str, Any]) -> None:
        for key, value in kwargs.items():
            if key in _GENERIC_KEYS or key == "model_type":
                continue
            setattr(self, key, value)

    def to_dict(self) -> Dict[str, Any]:
        """The fields, then any other public attribute (extra keys read from a file, or set
        later such as ``config.task``), so they survive a save/load round trip."""
        out = {name: copy.deepcopy(getattr(self, name)) for name in self._fields}
        for key, value in vars(self).items():
            if not key.startswith("_") and key not in out:
                out[key] = copy.deepcopy(value)
        out["model_type"] = self.model_type
        return out

    @classmethod
    def from_dict(cls, data: Dict[str, Any]):
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__}.from_dict expects a dict, got {type(data).__name__}")
        data = dict(data)
        model_type = data.pop("model_type", cls.model_type)
        if model_type != cls.model_type:
            raise ConfigError(
                f"{cls.__name__} expects model_type {cls.model_type!r}, the config says {model_type!r}"
            )
        return cls(**data)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save_pretrained(self, save_directory: Union[str, os.PathLike]) -> str:
        """Write ``config.json`` into ``save_directory`` (created if needed); returns its path."""
        os.makedirs(save_directory, exist_ok=True)
        path = os.path.join(save_directory, CONFIG_NAME)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(self.to_json_string())
        os.replace(tmp, path)
        return path

    @classmethod
    def from_json_file(cls, path: Union[str, os.PathLike]):
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            raise FileNotFoundError(f"config file not found: {path}") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path} is not valid JSON: {e}") from None
        try:
            return cls.from_dict(data)
        except TypeError as e:  # unexpected argument types
            raise ConfigError(f"{path}: {e}") from None

    @classmethod
    def from_pretrained(cls, path: Union[str, os.PathLike], **kwargs):
        """Read ``config.json`` from a folder, a file path, or a hub id (``hub`` extra)."""
        from .hub import resolve_file

        file = resolve_file(path, CONFIG_NAME)
        config = cls.from_json_file(file)
        for key, value in kwargs.items():
            setattr(config, key, value)
        return config

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"


class SwinConfig(_JsonConfig):
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
    def stage_names(self) -> List[str]:
        return ["stem"] + [f"stage{i + 1}" for i in range(len(self.depths))]

    @property
    def out_indices(self) -> List[int]:
        return [self.stage_names.index(name) for name in self.out_features]

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
        if self.hidden_act not in _ACTIVATIONS:
            raise ConfigError(f"SwinConfig: unknown hidden_act {self.hidden_act!r}")

    def to_dict(self) -> Dict[str, Any]:
        out = super().to_dict()
        out["out_indices"] = self.out_indices  # written by the reference; keeps files identical
        return out


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


class Mask2FormerConfig(_JsonConfig):
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
        backbone_config: Optional[Union[SwinConfig, Dict[str, Any]]] = None,
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
            backbone_config = SwinConfig.from_dict(backbone_config)
        elif not isinstance(backbone_config, SwinConfig):
            raise ConfigError(
                "backbone_config must be a SwinConfig or a dict with model_type 'swin', got "
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
    def from_backbone_config(cls, backbone_config: SwinConfig, **kwargs: Any) -> Mask2FormerConfig:
        """A config with the given backbone and every other field at its default or ``kwargs``."""
        return cls(backbone_config=backbone_config, **kwargs)

    def validate(self) -> None:
        bb = self.backbone_config
        if len(bb.out_features) != 4 or len(bb.depths) != 4:
            raise ConfigError(
                "Mask2Former needs a 4-stage backbone with out_features stage1..stage4 (strides "
                f"4, 8, 16, 32); got depths {bb.depths} and out_features {bb.out_features}"
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
        if self.activation_function not in _ACTIVATIONS:
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
