"""Checkpoints written by transformers 5.x: the loading rules of mask2former.checkpoint
(DERIVED_TENSORS rebuilt, KNOWN_UNUSED skipped, anything else strict), on a 4.37.2 checkpoint
edited into the 5.x layout (5.x saves no Swin relative_position_index buffers and adds the
unused final layer norm of its SwinModel, model.pixel_level_module.encoder.swin.layernorm)."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import load_file, save_file

from mask2former import (
    CheckpointError,
    Mask2FormerConfig,
    Mask2FormerForUniversalSegmentation,
    Mask2FormerModel,
)
from mask2former.checkpoint import DERIVED_TENSORS, KNOWN_UNUSED
from mask2former.modeling.swin import relative_position_index

from .reference_models import make_reference, tiny_reference_config

UNUSED_NORM = "model.pixel_level_module.encoder.swin.layernorm"


def _as_5x(folder, extra=None, drop=()):
    """Rewrite the folder's weights as transformers 5.x saves them (plus ``extra``, minus
    ``drop``)."""
    path = folder / "model.safetensors"
    state = load_file(path)
    state = {k: v for k, v in state.items() if not k.endswith("relative_position_index")}
    state[f"{UNUSED_NORM}.weight"] = torch.ones(256)
    state[f"{UNUSED_NORM}.bias"] = torch.zeros(256)
    state.update(extra or {})
    for key in drop:
        del state[key]
    save_file(state, path, metadata={"format": "pt"})


@pytest.fixture()
def reference(tmp_path):
    return make_reference(tmp_path)


def test_a_5x_checkpoint_loads_with_identical_outputs(reference):
    """It failed before: 20 missing keys (the index buffers) and 2 unexpected (the norm)."""
    _, folder = reference
    before = Mask2FormerForUniversalSegmentation.from_pretrained(folder)
    _as_5x(folder)
    model, info = Mask2FormerForUniversalSegmentation.from_pretrained(
        folder, output_loading_info=True
    )
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    pixels = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours, theirs = model(pixels), before(pixels)
    assert torch.equal(ours.class_queries_logits, theirs.class_queries_logits)
    assert torch.equal(ours.masks_queries_logits, theirs.masks_queries_logits)
    for name, buffer in model.named_buffers():
        if name.endswith("relative_position_index"):
            assert torch.equal(buffer, relative_position_index(7)), name
    base = Mask2FormerModel.from_pretrained(folder)  # the base model drops the prefix
    assert base.config.num_labels == 5


def test_anything_else_still_fails(reference):
    _, folder = reference
    table = "model.pixel_level_module.encoder.encoder.layers.0.blocks.0.attention.self"
    _as_5x(
        folder,
        extra={"model.pixel_level_module.encoder.swin.pooler.weight": torch.zeros(3)},
        drop=[f"{table}.relative_position_bias_table"],
    )
    with pytest.raises(CheckpointError) as err:
        Mask2FormerForUniversalSegmentation.from_pretrained(folder)
    message = str(err.value)
    assert f"missing keys (1): {table}.relative_position_bias_table" in message
    assert "unexpected keys (1): model.pixel_level_module.encoder.swin.pooler.weight" in message


def test_skipped_tensors_are_named_in_the_log(reference, caplog):
    _, folder = reference
    _as_5x(folder)
    with caplog.at_level("INFO", logger="mask2former.checkpoint"):
        Mask2FormerForUniversalSegmentation.from_pretrained(folder)
    assert f"{UNUSED_NORM}.weight" in caplog.text


def test_the_tables_describe_this_model():
    """Every derived pattern names tensors the model has (and computes); no known-unused
    pattern names a tensor the model has."""
    config = Mask2FormerConfig.from_dict(json.loads(tiny_reference_config().to_json_string()))
    keys = list(Mask2FormerForUniversalSegmentation(config).state_dict())
    for pattern, reason in DERIVED_TENSORS.items():
        assert any(re.search(pattern, k) for k in keys), pattern
        assert reason
    for pattern, reason in KNOWN_UNUSED.items():
        assert not any(re.search(pattern, k) for k in keys), pattern
        assert reason
