"""Bad inputs raise clear errors; pixel_mask is checked and handed on."""

from __future__ import annotations

import pytest
import torch

from mask2former import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig


@pytest.fixture(scope="module")
def model():
    backbone = SwinConfig(
        embed_dim=32,
        depths=[1, 1, 1, 1],
        num_heads=[1, 2, 4, 8],
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    config = Mask2FormerConfig(
        backbone_config=backbone,
        num_labels=3,
        feature_size=32,
        mask_feature_size=32,
        hidden_dim=32,
        num_attention_heads=4,
        encoder_layers=1,
        decoder_layers=2,
        num_queries=4,
        dim_feedforward=64,
        encoder_feedforward_dim=64,
        train_num_points=64,
    )
    return Mask2FormerForUniversalSegmentation(config).eval()


def test_wrong_channel_count(model):
    with pytest.raises(ValueError, match="4 channels but the model expects 3"):
        model(torch.zeros(1, 4, 64, 64))


def test_non_float_tensor(model):
    with pytest.raises(TypeError, match="float tensor"):
        model(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))


def test_not_a_tensor_and_wrong_rank(model):
    with pytest.raises(TypeError, match="torch.Tensor"):
        model([[0.0]])
    with pytest.raises(ValueError, match="batch, 3, height, width"):
        model(torch.zeros(3, 64, 64))


def test_image_too_small(model):
    with pytest.raises(ValueError, match="too small"):
        model(torch.zeros(1, 3, 16, 64))


def test_pixel_mask_shape_and_image_sizes(model):
    with pytest.raises(ValueError, match="pixel_mask"):
        model(torch.zeros(1, 3, 64, 64), pixel_mask=torch.ones(1, 32, 64))
    mask = torch.zeros(2, 64, 96, dtype=torch.long)
    mask[0, :64, :96] = 1
    mask[1, :40, :70] = 1
    with torch.no_grad():
        out = model(torch.zeros(2, 3, 64, 96), pixel_mask=mask)
    assert out.image_sizes == [(64, 96), (40, 70)]


def test_labels_must_come_together_and_agree(model):
    pixels = torch.zeros(1, 3, 64, 64)
    with pytest.raises(ValueError, match="together"):
        model(pixels, mask_labels=[torch.zeros(1, 64, 64)])
    with pytest.raises(ValueError, match="image 0"):
        model(pixels, mask_labels=[torch.zeros(2, 64, 64)], class_labels=[torch.tensor([1])])
    with pytest.raises(ValueError):
        model(pixels, mask_labels=[torch.zeros(1, 64, 64)] * 2, class_labels=[torch.tensor([1])])


def test_extra_output_fields_are_declared_but_not_in_the_reference_views(model):
    """loss_dict, losses and image_sizes are dataclass fields; keys(), to_tuple() and indexing
    are the reference's (transformers 4.37.2's field order, without them)."""
    import dataclasses

    mask = torch.ones(1, 64, 64, dtype=torch.long)
    labels = dict(mask_labels=[torch.ones(1, 64, 64)], class_labels=[torch.tensor([1])])
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 64, 64), pixel_mask=mask, **labels)
        base = model.model(torch.zeros(1, 3, 64, 64), pixel_mask=mask)
    names = [f.name for f in dataclasses.fields(out)]
    assert names[-3:] == ["loss_dict", "losses", "image_sizes"]
    assert out.loss_dict is not None and out.losses is not None and out.image_sizes == [(64, 64)]
    assert out.keys() == [
        "loss", "class_queries_logits", "masks_queries_logits", "encoder_last_hidden_state",
        "pixel_decoder_last_hidden_state", "transformer_decoder_last_hidden_state",
    ]  # fmt: skip
    assert len(out.to_tuple()) == len(out.keys()) and out[0] is out.loss
    assert "loss_dict" not in out and "image_sizes" not in list(out)
    with pytest.raises(KeyError):
        out["losses"]
    assert base.image_sizes == [(64, 64)] and "image_sizes" not in base.keys()
    assert len(base.to_tuple()) == len(base.keys())
    # The decoder states are queries-first, as the docstrings say: (Q, B, C).
    assert base.transformer_decoder_intermediate_states[0].shape == (4, 1, 32)
    assert base.transformer_decoder_last_hidden_state.shape == (1, 4, 32)
