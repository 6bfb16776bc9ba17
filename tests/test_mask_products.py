"""The decoder's full-size mask logits: one autograd node for every prediction."""

import pytest
import torch

from mask2former.modeling.mask_products import layer_mask_logits


def _inputs(dtype=torch.float64):
    torch.manual_seed(0)
    features = torch.randn(2, 8, 5, 7, dtype=dtype).contiguous(memory_format=torch.channels_last)
    embeds = [torch.randn(2, 3, 8, dtype=dtype) for _ in range(4)]
    return features, embeds


def test_values_equal_einsum_per_prediction():
    features, embeds = _inputs()
    with torch.no_grad():
        got = layer_mask_logits(embeds, features)
    for embed, masks in zip(embeds, got):
        torch.testing.assert_close(masks, torch.einsum("bqc,bchw->bqhw", embed, features))


@pytest.mark.parametrize("used", [[0, 1, 2, 3], [1, 3]])
def test_gradients_equal_separate_products(used):
    """The summed pixel gradient (in the map's channels-last layout) and each embedding's
    gradient equal those of separate products; predictions left out of the loss get none."""
    features, embeds = _inputs()
    weights = [torch.randn(2, 3, 5, 7, dtype=features.dtype) for _ in embeds]

    def grads(products):
        f = features.clone().requires_grad_()
        e = [x.clone().requires_grad_() for x in embeds]
        masks = products(e, f)
        sum((masks[i] * weights[i]).sum() for i in used).backward()
        return f.grad, [x.grad for x in e]

    want_f, want_e = grads(lambda e, f: [torch.einsum("bqc,bchw->bqhw", x, f) for x in e])
    got_f, got_e = grads(layer_mask_logits)
    torch.testing.assert_close(got_f, want_f)
    assert got_f.is_contiguous(memory_format=torch.channels_last)
    for i, (got, want) in enumerate(zip(got_e, want_e)):
        if i in used:
            torch.testing.assert_close(got, want)
        else:
            assert got is None


def test_gradcheck():
    features, embeds = _inputs()
    inputs = [features.requires_grad_()] + [e.requires_grad_() for e in embeds[:2]]
    assert torch.autograd.gradcheck(
        lambda f, *e: tuple(layer_mask_logits(list(e), f)), inputs, fast_mode=True
    )


def test_autocast_casts_like_a_batched_product():
    """Under autocast the products run in the autocast dtype, as torch.bmm would, and the
    backward gets the dtypes its forward saw (float32 leaves, bfloat16 products)."""
    features, embeds = _inputs(torch.float32)

    def run(products):
        f = features.clone().requires_grad_()
        e = [x.clone().requires_grad_() for x in embeds]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            masks = products(e, f)
        assert all(m.dtype == torch.bfloat16 for m in masks)
        sum(m.float().square().sum() for m in masks).backward()
        return [f.grad] + [x.grad for x in e]

    def plain(e, f):
        pixels = f.permute(0, 2, 3, 1).reshape(2, -1, 8).transpose(1, 2)
        return [torch.bmm(x, pixels).view(2, -1, 5, 7) for x in e]

    for got, want in zip(run(layer_mask_logits), run(plain)):
        assert got.dtype == torch.float32
        # bfloat16 terms that cancel: a few percent of the largest gradient.
        torch.testing.assert_close(got, want, rtol=0.02, atol=0.03 * float(want.abs().max()))
