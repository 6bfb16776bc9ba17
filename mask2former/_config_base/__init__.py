"""Shared plumbing of the configuration objects: the field checks (:mod:`.checks`) and the
JSON in and out (:mod:`.json_config`), re-exported here for the config modules.

Private: the public names are re-exported by :mod:`mask2former.config`.
"""

from .checks import (
    ACTIVATIONS,
    INT32,
    MAX_FEEDFORWARD,
    MAX_INPUT_CHANNELS,
    MAX_LABELS,
    MAX_LAYERS,
    MAX_LOSS_WEIGHT,
    MAX_QUERIES,
    MAX_SIDE,
    MAX_STAGES,
    MAX_WIDTH,
    Check,
    ConfigError,
    apply_checks,
    check_bool,
    check_choice,
    check_float,
    check_image_size,
    check_int,
    check_list,
    check_probability,
    check_stage_names,
    check_stage_sizes,
    int_list,
    optional,
    prefixed,
    show,
    stage_names_of,
    take_alias,
)
from .json_config import CONFIG_NAME, DERIVED_KEYS, GENERIC_DEFAULTS, JsonConfig, read_json_object

__all__ = [
    "ACTIVATIONS", "INT32", "MAX_FEEDFORWARD", "MAX_INPUT_CHANNELS", "MAX_LABELS", "MAX_LAYERS",
    "MAX_LOSS_WEIGHT", "MAX_QUERIES", "MAX_SIDE", "MAX_STAGES", "MAX_WIDTH", "Check",
    "ConfigError", "apply_checks", "check_bool", "check_choice", "check_float",
    "check_image_size", "check_int", "check_list", "check_probability", "check_stage_names",
    "check_stage_sizes", "int_list", "optional", "prefixed", "show", "stage_names_of",
    "take_alias", "CONFIG_NAME", "DERIVED_KEYS", "GENERIC_DEFAULTS", "JsonConfig", "read_json_object",
]  # fmt: skip
