"""Outputs equal transformers 4.37.2's on the same weights, in both directions."""

from __future__ import annotations

import pytest
import torch

from mask2former import Mask2FormerForUniversalSegmentation, Mask2FormerModel

from .reference_models import assert_close_tree, make_reference

ATOL = 1e-4
FLAGS = dict(output_hidden_states=True, output_attentions=True)

CASES = {
    # name: (config overrides, batch, height, width)
    "post_norm_square": ({}, 1, 96, 96),
    "pre_norm": ({"pre_norm": True}, 1, 96, 128),
    "batch2_odd_size": ({}, 2, 100, 75),
    "decoder_deeper_than_levels": ({"decoder_layers": 6, "num_queries": 12}, 1, 70, 130),
}


def _compare_segmentation(ref_out, our_out) -> int:
    count = 0
    for key in ref_out.keys():
        assert key in our_out.keys(), f"missing output field {key}"
        count += assert_close_tree(ref_out[key], our_out[key], ATOL, key)
    assert set(ref_out.keys()) == set(our_out.keys())
    return count


@pytest.mark.parametrize("case", sorted(CASES))
def test_segmentation_model_matches_reference(tmp_path, case):
    overrides, batch, height, width = CASES[case]
    ref, folder = make_reference(tmp_path, **overrides)
    ours = Mask2FormerForUniversalSegmentation.from_pretrained(folder)
    torch.manual_seed(1)
    pixels = torch.randn(batch, 3, height, width)
    with torch.no_grad():
        ref_out = ref(pixels, output_auxiliary_logits=True, **FLAGS)
        our_out = ours(pixels, output_auxiliary_logits=True, **FLAGS)
    n = _compare_segmentation(ref_out, our_out)
    decoder_layers = ref.config.decoder_layers
    assert len(our_out.auxiliary_logits) == decoder_layers - 1
    assert len(our_out.attentions) == decoder_layers - 1
    assert len(our_out.encoder_hidden_states) == 4
    assert n >= 4 + 2 * (decoder_layers - 1) + 4 + 3 + decoder_layers + (decoder_layers - 1)
    # The masked attention must really block something, or the test proves little.
    logits = our_out.masks_queries_logits
    assert 0.05 < (logits < 0).float().mean() < 0.95


def test_base_model_matches_reference(tmp_path):
    ref, folder = make_reference(tmp_path, base_model=True)
    ours = Mask2FormerModel.from_pretrained(folder)
    pixels = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        ref_out = ref(pixels, **FLAGS)
        our_out = ours(pixels, **FLAGS)
    for key in ref_out.keys():
        assert_close_tree(ref_out[key], our_out[key], ATOL, key)
    assert set(ref_out.keys()) == set(our_out.keys())


def test_base_model_loads_from_segmentation_checkpoint(tmp_path):
    ref, folder = make_reference(tmp_path)
    ours = Mask2FormerModel.from_pretrained(folder)
    pixels = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref_out = ref.model(pixels)
        our_out = ours(pixels)
    assert_close_tree(ref_out.masks_queries_logits, our_out.masks_queries_logits, ATOL)


def test_tuple_outputs_match_reference(tmp_path):
    ref, folder = make_reference(tmp_path)
    ours = Mask2FormerForUniversalSegmentation.from_pretrained(folder)
    pixels = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref_out = ref(pixels, return_dict=False, output_hidden_states=True)
        our_out = ours(pixels, return_dict=False, output_hidden_states=True)
    assert isinstance(our_out, tuple)
    assert_close_tree(tuple(ref_out), our_out, ATOL)


def test_our_checkpoint_loads_in_transformers(tmp_path):
    from transformers import Mask2FormerForUniversalSegmentation as RefModel

    _, folder = make_reference(tmp_path, seed=3, pre_norm=True)
    ours = Mask2FormerForUniversalSegmentation.from_pretrained(folder)
    saved = tmp_path / "ours"
    ours.save_pretrained(saved)
    ref, info = RefModel.from_pretrained(saved, output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    assert info["mismatched_keys"] == []
    assert ref.config.pre_norm is True and ref.config.num_labels == ours.config.num_labels
    ref.eval()
    pixels = torch.randn(2, 3, 80, 112)
    with torch.no_grad():
        ref_out = ref(pixels, output_auxiliary_logits=True, **FLAGS)
        our_out = ours(pixels, output_auxiliary_logits=True, **FLAGS)
    _compare_segmentation(ref_out, our_out)
