"""Checkpoint layout, strict loading, re-initialisation, file formats and dtypes."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from mask2former import (
    CheckpointError,
    Mask2FormerConfig,
    Mask2FormerForUniversalSegmentation,
    SwinConfig,
)

from .reference_models import make_reference, tiny_reference_config


def _swin(depths):
    return SwinConfig(
        embed_dim=96,
        depths=depths,
        num_heads=[3, 6, 12, 24],
        window_size=7,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )


@pytest.mark.parametrize("depths,expected", [([2, 2, 6, 2], 566), ([2, 2, 18, 2], None)])
def test_default_configs_have_reference_keys_and_shapes(depths, expected):
    from transformers import Mask2FormerConfig as RefConfig
    from transformers import Mask2FormerForUniversalSegmentation as RefModel
    from transformers import SwinConfig as RefSwin

    ref_backbone = RefSwin(
        embed_dim=96,
        depths=depths,
        num_heads=[3, 6, 12, 24],
        window_size=7,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    ref = RefModel(RefConfig(backbone_config=ref_backbone, num_labels=133))
    ours = Mask2FormerForUniversalSegmentation(
        Mask2FormerConfig(backbone_config=_swin(depths), num_labels=133)
    )
    ref_shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    our_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert sorted(our_shapes) == sorted(ref_shapes)
    assert our_shapes == ref_shapes
    if expected is not None:
        assert len(our_shapes) == expected


def test_strict_loading_lists_every_problem(tmp_path):
    _, folder = make_reference(tmp_path)
    state = load_file(folder / "model.safetensors")
    state.pop("model.transformer_module.decoder.layernorm.weight")
    state["model.extra.weight"] = torch.zeros(3)
    key = "model.transformer_module.queries_features.weight"
    state[key] = torch.zeros(3, 64)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError) as err:
        Mask2FormerForUniversalSegmentation.from_pretrained(folder)
    message = str(err.value)
    assert "missing keys (1): model.transformer_module.decoder.layernorm.weight" in message
    assert "unexpected keys (1): model.extra.weight" in message
    assert key in message and "(3, 64)" in message


def test_relative_position_index_buffer_is_accepted(tmp_path):
    _, folder = make_reference(tmp_path)
    state = load_file(folder / "model.safetensors")
    assert any(k.endswith("relative_position_index") for k in state)
    Mask2FormerForUniversalSegmentation.from_pretrained(folder)


def test_new_label_set_reinitialises_the_class_head(tmp_path):
    ref, folder = make_reference(tmp_path)
    with pytest.raises(CheckpointError, match="class_predictor.weight"):
        Mask2FormerForUniversalSegmentation.from_pretrained(folder, num_labels=9)
    with pytest.warns(UserWarning) as record:
        model = Mask2FormerForUniversalSegmentation.from_pretrained(
            folder, ignore_mismatched_sizes=True, id2label={i: f"c{i}" for i in range(9)}
        )
    text = " ".join(str(r.message) for r in record)
    assert "class_predictor.weight" in text and "class_predictor.bias" in text
    assert "criterion.empty_weight" in text
    assert model.class_predictor.weight.shape == (10, 64)
    assert model.config.num_labels == 9 and model.config.id2label[3] == "c3"
    # Everything else came from the checkpoint.
    ref_w = ref.model.transformer_module.queries_features.weight
    assert torch.equal(model.model.transformer_module.queries_features.weight, ref_w)


def test_added_and_removed_decoder_layers_need_reinit_missing(tmp_path):
    """A deeper decoder starts its new layers from random weights and keeps every tensor the
    checkpoint has; a shallower one drops the extra layers. Both are named (grouped by layer)
    in a warning, and neither happens without asking for it."""
    ref, folder = make_reference(tmp_path)  # decoder_layers 4: 3 layers
    with pytest.raises(CheckpointError, match="missing keys"):
        Mask2FormerForUniversalSegmentation.from_pretrained(
            folder, ignore_mismatched_sizes=True, decoder_layers=6
        )
    with pytest.warns(UserWarning) as record:
        deeper = Mask2FormerForUniversalSegmentation.from_pretrained(
            folder, reinit_missing=True, decoder_layers=6
        )
    text = " ".join(str(r.message) for r in record)
    prefix = "model.transformer_module.decoder.layers"
    assert f"{prefix}.3.* (" in text and f"{prefix}.4.* (" in text and ".layers.2." not in text
    layers = deeper.model.transformer_module.decoder.layers
    assert len(layers) == 5
    ref_layers = ref.model.transformer_module.decoder.layers
    for i in range(3):
        ref_state = ref_layers[i].state_dict()
        for key, value in layers[i].state_dict().items():
            assert torch.equal(value, ref_state[key]), (i, key)
    assert not torch.equal(layers[3].fc1.weight, layers[4].fc1.weight)

    with pytest.raises(CheckpointError, match="unexpected keys"):
        Mask2FormerForUniversalSegmentation.from_pretrained(folder, decoder_layers=3)
    with pytest.warns(UserWarning, match=rf"ignored 22 tensors .*{prefix}\.2\.\* \(22 tensors\)"):
        shallower = Mask2FormerForUniversalSegmentation.from_pretrained(
            folder, reinit_missing=True, decoder_layers=3
        )
    assert len(shallower.model.transformer_module.decoder.layers) == 2


def test_pytorch_bin_is_read_without_unpickling_code(tmp_path):
    ref, folder = make_reference(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "config.json").write_text((folder / "config.json").read_text())
    torch.save(ref.state_dict(), bin_dir / "pytorch_model.bin")
    model = Mask2FormerForUniversalSegmentation.from_pretrained(bin_dir)
    pixels = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        diff = (model(pixels).class_queries_logits - ref(pixels).class_queries_logits).abs().max()
    assert diff < 1e-4

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, bin_dir / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="cannot read"):
        Mask2FormerForUniversalSegmentation.from_pretrained(bin_dir)


def test_missing_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        Mask2FormerForUniversalSegmentation.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(Mask2FormerConfig().to_json_string())
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        Mask2FormerForUniversalSegmentation.from_pretrained(tmp_path)


def test_hub_id_offline_gives_clear_error(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OSError, match="could not fetch config.json"):
        Mask2FormerForUniversalSegmentation.from_pretrained("nobody/no-such-model")


def test_hub_id_without_huggingface_hub(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("huggingface_hub"):
            raise ImportError("no module")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match=r"mask2former\[hub\]"):
        Mask2FormerForUniversalSegmentation.from_pretrained("nobody/no-such-model")


def test_input_projection_is_saved_and_reloaded(tmp_path):
    config = Mask2FormerConfig.from_dict(
        json.loads(tiny_reference_config(feature_size=32, hidden_dim=64).to_json_string())
    )
    model = Mask2FormerForUniversalSegmentation(config).eval()
    keys = [k for k in model.state_dict() if "transformer_module.input_projections" in k]
    assert len(keys) == 6  # three 1x1 convolutions, weight and bias each
    model.save_pretrained(tmp_path)
    loaded = Mask2FormerForUniversalSegmentation.from_pretrained(tmp_path)
    pixels = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = model(pixels), loaded(pixels)
    assert torch.equal(a.masks_queries_logits, b.masks_queries_logits)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision(tmp_path, dtype):
    ref, folder = make_reference(tmp_path)
    model = Mask2FormerForUniversalSegmentation.from_pretrained(folder, torch_dtype=dtype)
    assert all(p.dtype == dtype for p in model.parameters())
    pixels = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = model(pixels.to(dtype))
        ref_out = ref(pixels)
    assert out.class_queries_logits.dtype == dtype
    assert torch.isfinite(out.masks_queries_logits.float()).all()
    err = (out.class_queries_logits.float() - ref_out.class_queries_logits).abs().max()
    assert err < 0.5  # low precision, same model


def test_save_writes_published_layout(tmp_path):
    _, folder = make_reference(tmp_path)
    model = Mask2FormerForUniversalSegmentation.from_pretrained(folder)
    model.save_pretrained(tmp_path / "out")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["model_type"] == "mask2former"
    assert config["backbone_config"]["model_type"] == "swin"
    assert all(isinstance(k, str) for k in config["id2label"])
    ref_keys = set(load_file(folder / "model.safetensors"))
    assert set(load_file(tmp_path / "out" / "model.safetensors")) == ref_keys


def test_save_does_not_write_through_a_planted_temporary_name(tmp_path):
    """The weights are written through mask2former.files: never through a planted name (the old
    predictable model.safetensors.tmp), and with the permissions a plain file gets (safetensors'
    own writer made them private, 0600, whatever the umask)."""
    import os

    _, folder = make_reference(tmp_path)
    model = Mask2FormerForUniversalSegmentation.from_pretrained(folder)
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    os.symlink(victim, out / "model.safetensors.tmp")
    model.save_pretrained(out)
    assert victim.read_text() == "precious"
    assert set(load_file(out / "model.safetensors")) == set(model.state_dict())
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary left
    umask = os.umask(0)
    os.umask(umask)
    assert (out / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask
