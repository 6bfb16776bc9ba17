"""transformers' model API where a user touches it: from_pretrained's parameters and options,
save_pretrained's options and sharding, config-level output flags, num_parameters, gradient
checkpointing."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from mask2former import (
    CheckpointError,
    Mask2FormerConfig,
    Mask2FormerForUniversalSegmentation,
    Mask2FormerModel,
)
from mask2former.checkpoint import parse_size

from .reference_models import make_reference, tiny_reference_config

PIXELS = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return make_reference(tmp_path_factory.mktemp("api"))


def _same_outputs(a, b) -> None:
    with torch.no_grad():
        x, y = a(PIXELS), b(PIXELS)
    assert torch.equal(x.class_queries_logits, y.class_queries_logits)
    assert torch.equal(x.masks_queries_logits, y.masks_queries_logits)


# -- from_pretrained ---------------------------------------------------------------------------


def test_first_parameter_has_transformers_name(reference):
    _, folder = reference
    by_name = Mask2FormerForUniversalSegmentation.from_pretrained(
        pretrained_model_name_or_path=folder
    )
    _same_outputs(by_name, Mask2FormerForUniversalSegmentation.from_pretrained(folder))


def test_unknown_keywords_raise_a_type_error_naming_them(reference):
    """They used to become config attributes that nothing read."""
    _, folder = reference
    with pytest.raises(TypeError, match="unexpected keyword arguments.*no_such_option"):
        Mask2FormerForUniversalSegmentation.from_pretrained(folder, no_such_option=1)
    with pytest.raises(TypeError, match="not supported by mask2former: device_map, variant"):
        Mask2FormerForUniversalSegmentation.from_pretrained(
            folder, device_map="auto", variant="fp16"
        )


def test_output_loading_info(reference):
    _, folder = reference
    model, info = Mask2FormerForUniversalSegmentation.from_pretrained(
        folder, output_loading_info=True
    )
    assert info == {
        "missing_keys": [],
        "unexpected_keys": [],
        "mismatched_keys": [],
        "error_msgs": [],
    }
    with pytest.warns(UserWarning, match="class_predictor.weight"):
        _, info = Mask2FormerForUniversalSegmentation.from_pretrained(
            folder, num_labels=9, ignore_mismatched_sizes=True, output_loading_info=True
        )
    assert ("class_predictor.weight", (6, 64), (10, 64)) in info["mismatched_keys"]
    with pytest.warns(UserWarning):
        _, info = Mask2FormerForUniversalSegmentation.from_pretrained(
            folder, decoder_layers=5, reinit_missing=True, output_loading_info=True
        )
    assert any(
        k.startswith("model.transformer_module.decoder.layers.3.") for k in info["missing_keys"]
    )


def test_config_overrides_and_config_argument(reference, tmp_path):
    _, folder = reference
    model = Mask2FormerForUniversalSegmentation.from_pretrained(
        folder, output_hidden_states=True, num_queries=8
    )
    assert model.config.output_hidden_states is True
    with torch.no_grad():
        assert model(PIXELS).encoder_hidden_states is not None
    config = Mask2FormerConfig.from_pretrained(folder)
    config.output_attentions = True
    given = Mask2FormerForUniversalSegmentation.from_pretrained(folder, config=config)
    assert given.config.output_attentions is True and given.config is not config
    config.save_pretrained(tmp_path / "cfg")
    from_path = Mask2FormerForUniversalSegmentation.from_pretrained(folder, config=tmp_path / "cfg")
    assert from_path.config.output_attentions is True


def test_state_dict_argument(reference):
    ref, folder = reference
    state = load_file(folder / "model.safetensors")
    config = Mask2FormerConfig.from_pretrained(folder)
    model = Mask2FormerForUniversalSegmentation.from_pretrained(
        None, config=config, state_dict=state
    )
    _same_outputs(model, Mask2FormerForUniversalSegmentation.from_pretrained(folder))
    state["class_predictor.bias"] = torch.full_like(state["class_predictor.bias"], 7.0)
    changed = Mask2FormerForUniversalSegmentation.from_pretrained(folder, state_dict=state)
    assert torch.all(changed.class_predictor.bias == 7.0)
    with pytest.raises(ValueError, match="config= and state_dict="):
        Mask2FormerForUniversalSegmentation.from_pretrained(None, state_dict=state)


def test_subfolder(reference, tmp_path):
    ref, folder = reference
    model = Mask2FormerForUniversalSegmentation.from_pretrained(folder)
    model.save_pretrained(tmp_path / "repo" / "weights")
    loaded = Mask2FormerForUniversalSegmentation.from_pretrained(
        tmp_path / "repo", subfolder="weights"
    )
    _same_outputs(model, loaded)


def test_hub_options_reach_the_download(reference, monkeypatch):
    import huggingface_hub

    _, folder = reference
    calls = []

    def fake_download(repo_id, filename, **options):
        calls.append((repo_id, filename, options))
        path = folder / filename
        if not path.exists():
            from huggingface_hub.utils import EntryNotFoundError

            raise EntryNotFoundError(filename)
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    Mask2FormerForUniversalSegmentation.from_pretrained(
        "owner/model",
        revision="v2",
        cache_dir="/tmp/cache",
        token="secret",
        local_files_only=True,
        force_download=False,
        subfolder="sub",
    )
    assert {c[1] for c in calls} >= {"config.json", "model.safetensors"}
    for _, _, options in calls:
        assert options["revision"] == "v2" and options["cache_dir"] == "/tmp/cache"
        assert options["token"] == "secret" and options["local_files_only"] is True
        assert options["subfolder"] == "sub"


# -- save_pretrained ---------------------------------------------------------------------------


def test_save_options(reference, tmp_path):
    _, folder = reference
    model = Mask2FormerForUniversalSegmentation.from_pretrained(folder)
    model.save_pretrained(tmp_path / "a", safe_serialization=True, max_shard_size="5GB")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]
    with pytest.raises(TypeError, match="no_such_option"):
        model.save_pretrained(tmp_path / "b", no_such_option=True)
    with pytest.raises(TypeError, match="not supported by mask2former: variant"):
        model.save_pretrained(tmp_path / "b", variant="fp16")
    with pytest.raises(ValueError, match="push_to_hub"):
        model.save_pretrained(tmp_path / "b", push_to_hub=True)
    model.save_pretrained(tmp_path / "c", is_main_process=False)
    assert not (tmp_path / "c").exists()
    state = model.state_dict()
    state["class_predictor.bias"] = torch.zeros_like(state["class_predictor.bias"])
    model.save_pretrained(tmp_path / "d", state_dict=state)
    assert torch.all(load_file(tmp_path / "d" / "model.safetensors")["class_predictor.bias"] == 0)


def test_sharded_save_loads_here_and_in_transformers(reference, tmp_path):
    from transformers import Mask2FormerForUniversalSegmentation as RefModel

    ref, folder = reference
    model = Mask2FormerForUniversalSegmentation.from_pretrained(folder)
    out = tmp_path / "sharded"
    model.save_pretrained(out, max_shard_size="200KB")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert set(index["weight_map"]) == set(model.state_dict())
    assert not (out / "model.safetensors").exists()
    _same_outputs(model, Mask2FormerForUniversalSegmentation.from_pretrained(out))
    theirs = RefModel.from_pretrained(out).eval()
    with torch.no_grad():
        diff = theirs(PIXELS).class_queries_logits - ref(PIXELS).class_queries_logits
    assert diff.abs().max() == 0
    # Saving again unsharded removes the old shards and index: the folder holds one checkpoint.
    model.save_pretrained(out)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]


def test_pytorch_bin_save_loads_here_and_in_transformers(reference, tmp_path):
    from transformers import Mask2FormerForUniversalSegmentation as RefModel

    ref, folder = reference
    model = Mask2FormerForUniversalSegmentation.from_pretrained(folder)
    for name, size in [("bin", "5GB"), ("bin_sharded", "300KB")]:
        out = tmp_path / name
        model.save_pretrained(out, safe_serialization=False, max_shard_size=size)
        assert not list(out.glob("*.safetensors"))
        _same_outputs(model, Mask2FormerForUniversalSegmentation.from_pretrained(out))
        theirs = RefModel.from_pretrained(out).eval()
        with torch.no_grad():
            diff = theirs(PIXELS).masks_queries_logits - ref(PIXELS).masks_queries_logits
        assert diff.abs().max() == 0
    assert (tmp_path / "bin_sharded" / "pytorch_model.bin.index.json").exists()


def test_shard_index_is_checked(reference, tmp_path):
    _, folder = reference
    model = Mask2FormerForUniversalSegmentation.from_pretrained(folder)
    out = tmp_path / "sharded"
    model.save_pretrained(out, max_shard_size="200KB")
    index_path = out / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    key = next(iter(index["weight_map"]))
    index["weight_map"][key] = "../elsewhere.safetensors"
    index_path.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="not a file name"):
        Mask2FormerForUniversalSegmentation.from_pretrained(out)
    index["weight_map"][key] = index["weight_map"][next(reversed(index["weight_map"]))]
    index_path.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="shards do not hold"):
        Mask2FormerForUniversalSegmentation.from_pretrained(out)


def test_parse_size():
    assert parse_size("5GB") == 5 * 10**9
    assert parse_size("200MB") == 200 * 10**6
    assert parse_size("1GiB") == 2**30
    assert parse_size("8Mb") == 10**6
    assert parse_size(1234) == 1234
    for bad in ("", "GB", "-1MB", "5 parsecs", 0, True):
        with pytest.raises(ValueError, match="max_shard_size"):
            parse_size(bad)


# -- config-level output flags -----------------------------------------------------------------


@pytest.fixture(scope="module")
def ours(reference):
    return Mask2FormerForUniversalSegmentation.from_pretrained(reference[1])


def test_config_output_flags_are_used(ours):
    config = ours.config
    with torch.no_grad():
        plain = ours(PIXELS)
        assert plain.encoder_hidden_states is None and plain.attentions is None
        config.output_hidden_states, config.output_attentions = True, True
        try:
            out = ours(PIXELS)
            assert out.encoder_hidden_states is not None
            assert out.transformer_decoder_hidden_states is not None
            assert out.attentions is not None
            assert ours(PIXELS, output_hidden_states=False).encoder_hidden_states is None
            base = ours.model(PIXELS)
            assert base.pixel_decoder_hidden_states is not None and base.attentions is not None
        finally:
            config.output_hidden_states, config.output_attentions = False, False
        assert isinstance(ours(PIXELS, return_dict=False), tuple)
        assert isinstance(ours.model(PIXELS, return_dict=False), tuple)
        assert not isinstance(ours(PIXELS, return_dict=True), tuple)


def test_auxiliary_masks_are_computed_only_when_someone_sees_them(ours, reference):
    """Without labels or auxiliary_logits the intermediate full-size masks are skipped; the
    final prediction is the same, and asking for them gives the reference's."""
    from transformers import Mask2FormerForUniversalSegmentation as RefModel

    layers = ours.config.decoder_layers
    with torch.no_grad():
        plain = ours(PIXELS)
        full = ours(PIXELS, output_auxiliary_logits=True)
        want = RefModel.from_pretrained(reference[1]).eval()(PIXELS, output_auxiliary_logits=True)
        base = ours.model(PIXELS)
    assert plain.auxiliary_logits is None
    assert torch.equal(plain.masks_queries_logits, full.masks_queries_logits)
    assert torch.equal(plain.class_queries_logits, full.class_queries_logits)
    assert len(full.auxiliary_logits) == len(want.auxiliary_logits) == layers - 1
    for got, ref in zip(full.auxiliary_logits, want.auxiliary_logits):
        torch.testing.assert_close(
            got["masks_queries_logits"], ref["masks_queries_logits"], rtol=0, atol=1e-4
        )
    assert len(base.masks_queries_logits) == layers  # the base model keeps all by default
    assert len(ours.model(PIXELS, auxiliary_masks=False).masks_queries_logits) == 1


def test_config_return_dict_is_used(ours):
    """return_dict=None follows config.return_dict, as in transformers; the pipeline and the
    trainer ask for outputs by name whatever the config says."""
    from mask2former import Mask2FormerImageProcessor
    from mask2former.inference import Pipeline, TaskOptions, TorchRunner

    config = ours.config
    config.return_dict = False
    try:
        with torch.no_grad():
            assert isinstance(ours(PIXELS), tuple) and isinstance(ours.model(PIXELS), tuple)
            assert not isinstance(ours(PIXELS, return_dict=True), tuple)
        image = (torch.rand(64, 64, 3) * 255).to(torch.uint8).numpy()
        pipeline = Pipeline(TorchRunner(ours), Mask2FormerImageProcessor())
        (result,) = pipeline.predict([image], TaskOptions("semantic"))
        assert result.segmentation.shape == (64, 64)
    finally:
        config.return_dict = True


def test_num_parameters_as_transformers(reference, ours):
    ref, _ = reference
    assert ours.num_parameters() == ref.num_parameters()
    assert ours.num_parameters(exclude_embeddings=True) == ref.num_parameters(
        exclude_embeddings=True
    )
    assert ours.num_parameters(exclude_embeddings=True) < ours.num_parameters()
    for model in (ours, ref):
        for p in model.model.pixel_level_module.encoder.parameters():
            p.requires_grad_(False)
    try:
        assert ours.num_parameters(only_trainable=True) == ref.num_parameters(only_trainable=True)
        assert ours.num_parameters(only_trainable=True) < ours.num_parameters()
    finally:
        for model in (ours, ref):
            for p in model.parameters():
                p.requires_grad_(True)


# -- gradient checkpointing ------------------------------------------------------------------


def _training_model(backbone: str) -> Mask2FormerForUniversalSegmentation:
    overrides = dict(dropout=0.1, decoder_layers=3, encoder_layers=1)
    if backbone == "resnet":
        from transformers import ResNetConfig

        overrides["backbone_config"] = ResNetConfig(
            embedding_size=16,
            hidden_sizes=[16, 32, 64, 128],
            depths=[1, 1, 1, 1],
            layer_type="basic",
            out_features=["stage1", "stage2", "stage3", "stage4"],
        )
    config = tiny_reference_config(**overrides)
    if backbone == "swin":
        config.backbone_config.drop_path_rate = 0.2
    torch.manual_seed(0)
    return Mask2FormerForUniversalSegmentation(
        Mask2FormerConfig.from_dict(json.loads(config.to_json_string()))
    ).train()


def _step(model):
    torch.manual_seed(5)
    masks = [torch.rand(2, 64, 64).round()]
    out = model(PIXELS, mask_labels=masks, class_labels=[torch.tensor([0, 3])])
    model.zero_grad()
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("backbone,reentrant", [("swin", False), ("resnet", False), ("swin", True)])
def test_gradient_checkpointing_gives_the_same_outputs_and_gradients(
    backbone, reentrant, monkeypatch
):
    import mask2former.modeling.grad_checkpoint as grad_checkpoint

    model = _training_model(backbone)
    assert not model.is_gradient_checkpointing
    plain, plain_grads = _step(model)
    calls = []
    real = grad_checkpoint.checkpoint

    def counting(fn, *args, **kwargs):
        calls.append(type(getattr(fn, "__self__", fn)).__name__)
        return real(fn, *args, **kwargs)

    monkeypatch.setattr(grad_checkpoint, "checkpoint", counting)
    model.gradient_checkpointing_enable({"use_reentrant": True} if reentrant else None)
    assert model.is_gradient_checkpointing
    checked, checked_grads = _step(model)
    stage = "SwinStage" if backbone == "swin" else "ResNetStage"
    assert calls.count(stage) == 4
    assert calls.count("MaskedAttentionDecoderLayer") == 2
    assert calls.count("DeformableEncoderLayer") == 1
    # The reentrant variant runs the first pass without autograd, where some blocks take their
    # inference paths (the same numbers up to rounding).
    tol = dict(rtol=1e-4, atol=1e-6) if reentrant else dict(rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(checked.loss, plain.loss, rtol=0 if not reentrant else 1e-5, atol=0)
    assert plain_grads.keys() == checked_grads.keys()
    assert len(plain_grads) == len(list(model.parameters()))  # every parameter learns
    for name, grad in plain_grads.items():
        torch.testing.assert_close(checked_grads[name], grad, **tol, msg=name)
    calls.clear()
    with torch.no_grad():
        model.eval()(PIXELS)
    assert not calls  # nothing to save outside training
    model.gradient_checkpointing_disable()
    assert not model.is_gradient_checkpointing
    model.train()
    _step(model)
    assert not calls
    assert Mask2FormerModel.supports_gradient_checkpointing


def test_the_legacy_gradient_checkpointing_key_turns_it_on(tmp_path):
    # Config files of older transformers carry "gradient_checkpointing"; transformers turns
    # checkpointing on and drops the key.
    data = json.loads(tiny_reference_config().to_json_string())
    config = Mask2FormerConfig.from_dict({**data, "gradient_checkpointing": True})
    model = Mask2FormerForUniversalSegmentation(config)
    assert model.is_gradient_checkpointing
    assert "gradient_checkpointing" not in model.config.to_dict()
    model.save_pretrained(tmp_path)
    assert not Mask2FormerForUniversalSegmentation.from_pretrained(
        tmp_path
    ).is_gradient_checkpointing
    off = Mask2FormerModel(Mask2FormerConfig.from_dict({**data, "gradient_checkpointing": False}))
    assert not off.is_gradient_checkpointing
    from mask2former import ConfigError

    with pytest.raises(ConfigError, match="gradient_checkpointing: expected true or false"):
        Mask2FormerModel(Mask2FormerConfig.from_dict({**data, "gradient_checkpointing": "yes"}))


def test_initial_sampling_offsets_are_symmetric():
    # The start directions cancel out (transformers' init test checks the mean to 1e-9); in
    # float32 arithmetic cos(pi/2) left a 1e-7 bias.
    model = Mask2FormerModel(
        Mask2FormerConfig.from_dict(json.loads(tiny_reference_config().to_json_string()))
    )
    for layer in model.pixel_level_module.decoder.encoder.layers:
        bias = layer.self_attn.sampling_offsets.bias
        assert abs(bias.mean().item()) < 1e-9
        assert bias.abs().max().item() == layer.self_attn.n_points  # on the square, not the circle


def test_model_construction_validates_a_changed_config():
    from mask2former import ConfigError

    config = Mask2FormerConfig.from_dict(json.loads(tiny_reference_config().to_json_string()))
    config.hidden_dim = 32
    config.num_attention_heads = 4
    model = Mask2FormerModel(config)
    assert model.transformer_module.queries_features.weight.shape == (8, 32)
    config.num_queries = -1
    with pytest.raises(ConfigError, match="num_queries"):
        Mask2FormerForUniversalSegmentation(config)


def test_saved_dtype_is_recorded_for_auto(reference, tmp_path):
    _, folder = reference
    model = Mask2FormerForUniversalSegmentation.from_pretrained(folder, torch_dtype=torch.bfloat16)
    model.save_pretrained(tmp_path / "bf16")
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    assert model.config.torch_dtype == torch.float32  # as read: the model's config is unchanged
    loaded = Mask2FormerForUniversalSegmentation.from_pretrained(
        tmp_path / "bf16", torch_dtype="auto"
    )
    assert all(p.dtype == torch.bfloat16 for p in loaded.parameters())
    # Without a recorded dtype, "auto" takes the checkpoint's (as transformers).
    loaded.config.torch_dtype = None
    again = Mask2FormerForUniversalSegmentation.from_pretrained(
        None, config=loaded.config, state_dict=loaded.state_dict(), torch_dtype="auto"
    )
    assert all(p.dtype == torch.bfloat16 for p in again.parameters())


def test_resolve_file_options(tmp_path):
    from mask2former.hub import resolve_file

    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "config.json").write_text("{}")
    assert resolve_file(tmp_path, "config.json", subfolder="sub").endswith("sub/config.json")
    assert resolve_file(tmp_path, "config.json", required=False) is None
    with pytest.raises(TypeError, match="proxies"):
        resolve_file(tmp_path, "config.json", proxies={})


def test_pretrained_model_class_attributes():
    for cls in (Mask2FormerModel, Mask2FormerForUniversalSegmentation):
        assert cls.main_input_name == "pixel_values" and cls.base_model_prefix == "model"
        assert cls.can_generate() is False and cls._tied_weights_keys is None
        assert cls.get_output_embeddings(None) is None


def test_returned_states_get_gradients(ours):
    """transformers' own test: retain_grad on the returned states, then backward, gives them a
    gradient (the decoder's first state used to be a view taken after the computation)."""
    config = ours.config
    config.output_hidden_states, config.output_attentions = True, True
    try:
        ours.train()
        out = ours(PIXELS, mask_labels=[torch.ones(1, 64, 64)], class_labels=[torch.tensor([1])])
    finally:
        config.output_hidden_states, config.output_attentions = False, False
        ours.eval()
    states = [
        out.encoder_hidden_states[0],
        out.pixel_decoder_hidden_states[0],
        out.transformer_decoder_hidden_states[0],
        out.attentions[0],
    ]
    for state in states:
        state.retain_grad()
    out.loss.backward()
    assert all(state.grad is not None for state in states)
    ours.zero_grad()


def test_declared_fields_and_aliases_are_overrides(reference):
    _, folder = reference
    model = Mask2FormerForUniversalSegmentation.from_pretrained(
        folder, matcher_class_cost=2.5, task="instance", hidden_size=64
    )
    assert model.config.matcher_class_cost == 2.5 and model.config.task == "instance"
    assert model.criterion.matcher.cost_class == 2.5
