"""Tiny transformers 4.37.2 reference models for the parity tests (test-only helper)."""

from __future__ import annotations

import torch


def tiny_reference_config(**overrides):
    """A small transformers Mask2FormerConfig (Swin with 4 stages, 64-wide decoder)."""
    from transformers import Mask2FormerConfig, SwinConfig

    backbone = SwinConfig(
        embed_dim=32,
        depths=[1, 1, 2, 1],
        num_heads=[1, 2, 4, 8],
        window_size=7,
        drop_path_rate=0.0,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    kwargs = dict(
        backbone_config=backbone,
        num_labels=5,
        feature_size=64,
        mask_feature_size=64,
        hidden_dim=64,
        encoder_layers=2,
        decoder_layers=4,
        num_attention_heads=4,
        num_queries=8,
        dim_feedforward=96,
        encoder_feedforward_dim=96,
        train_num_points=400,
    )
    kwargs.update(overrides)
    return Mask2FormerConfig(**kwargs)


@torch.no_grad()
def randomize(model: torch.nn.Module, seed: int = 0, scale: float = 0.3) -> torch.nn.Module:
    """Give every parameter random values of a trained model's magnitude.

    Freshly initialised models have near-zero mask logits, so the masked attention would sit on
    its 0.5 threshold; larger weights make masks and attention patterns non-trivial.
    """
    gen = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if p.dim() == 1 and ("norm" in name or "layernorm" in name) and name.endswith("weight"):
            p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
        elif p.dim() == 1:
            p.copy_(0.05 * torch.randn(p.shape, generator=gen))
        else:
            fan_in = p.shape[-1] if p.dim() > 1 else 1
            if p.dim() == 4:
                fan_in = p.shape[1] * p.shape[2] * p.shape[3]
            p.copy_(torch.randn(p.shape, generator=gen) * scale * (3.0 / max(fan_in, 1)) ** 0.5)
    return model


@torch.no_grad()
def center_mask_features(base_model, size: int = 96) -> None:
    """Shift the mask projection's bias so that mask features average zero over the image.

    With random weights every pixel's mask feature shares a large common offset, so each query's
    mask would have one sign everywhere; a trained model's masks cover only parts of the image.
    """
    gen = torch.Generator().manual_seed(123)
    pixels = torch.randn(1, 3, size, size, generator=gen)
    decoder = base_model.pixel_level_module.decoder
    out = decoder(base_model.pixel_level_module.encoder(pixels).feature_maps)
    mean = out.mask_features.mean(dim=(0, 2, 3))
    std = out.mask_features.std(dim=(0, 2, 3)).clamp_min(1e-6)
    decoder.mask_projection.weight.div_(std[:, None, None, None])
    decoder.mask_projection.bias.sub_(mean).div_(std)


def make_reference(tmp_path, base_model: bool = False, seed: int = 0, **overrides):
    """Build, randomize and save a reference model; returns (model, folder)."""
    from transformers import Mask2FormerForUniversalSegmentation, Mask2FormerModel

    config = tiny_reference_config(**overrides)
    cls = Mask2FormerModel if base_model else Mask2FormerForUniversalSegmentation
    torch.manual_seed(seed)
    model = randomize(cls(config), seed=seed).eval()
    center_mask_features(model.model if hasattr(model, "model") else model)
    folder = tmp_path / ("ref_base" if base_model else "ref")
    model.save_pretrained(folder)
    return model, folder


def assert_close_tree(ref, ours, atol: float, path: str = "") -> int:
    """Compare nested tuples/lists/dicts of tensors; returns the number of tensors compared."""
    if isinstance(ref, (tuple, list)):
        assert isinstance(ours, (tuple, list)) and len(ref) == len(ours), path
        return sum(
            assert_close_tree(r, o, atol, f"{path}[{i}]") for i, (r, o) in enumerate(zip(ref, ours))
        )
    if isinstance(ref, dict):
        assert set(ref) == set(ours), path
        return sum(assert_close_tree(ref[k], ours[k], atol, f"{path}.{k}") for k in ref)
    assert ref.shape == ours.shape, f"{path}: {tuple(ref.shape)} vs {tuple(ours.shape)}"
    err = (ref.float() - ours.float()).abs().max().item()
    assert err <= atol, f"{path}: max abs difference {err:.3g} > {atol}"
    return 1
