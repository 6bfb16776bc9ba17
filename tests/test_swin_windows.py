"""Swin's window layout: the inference gather against the padded, rolled, partitioned form."""

import copy
import pickle

import pytest
import torch

from mask2former.modeling.swin import SwinBlock
from mask2former.modeling.swin_windows import WindowCache, window_partition, window_rows


def _block(shift: int) -> SwinBlock:
    torch.manual_seed(0)
    block = SwinBlock(16, 2, 7, shift, 2.0, True, "gelu", 1e-5, 0.0).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.3)
    return block


@pytest.mark.parametrize("shift", [0, 3])
@pytest.mark.parametrize("size", [(7, 14), (9, 11), (3, 5)])
def test_gathered_windows_equal_padded_rolled_windows(shift, size):
    """The row gathers give the values of the padded form (pad, roll, partition, merge, roll
    back, crop), with and without autograd, for maps that are and are not whole windows and
    for a batch of two; with autograd, the same gradients for the input and every weight."""
    block = _block(shift)
    x = torch.randn(2, *size, 16)
    with torch.no_grad():
        fast = block(x, WindowCache())
        plain = block.padded_form(x)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
    weights = torch.randn_like(x)
    grads = []
    for run in (lambda t: block(t, WindowCache()), block.padded_form):
        block.zero_grad()
        leaf = x.clone().requires_grad_()
        out = run(leaf)
        (out * weights).sum().backward()
        grads.append([leaf.grad] + [p.grad.clone() for p in block.parameters()])
        torch.testing.assert_close(out.detach(), plain, rtol=1e-5, atol=1e-5)
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shift", [0, 3])
def test_window_rows_match_partition_of_the_padded_rolled_map(shift):
    b, h, w, ws = 2, 9, 11, 7
    ids = torch.arange(1, b * h * w + 1, dtype=torch.float32).view(b, h, w, 1)
    padded = torch.nn.functional.pad(ids, (0, 0, 0, 14 - w, 0, 14 - h))
    rolled = torch.roll(padded, shifts=(-shift, -shift), dims=(1, 2))
    want = window_partition(rolled, ws).reshape(-1)  # 0 marks padding
    rows = window_rows(b, h, w, ws, shift, "cpu")
    got = ids.view(-1)[rows.source]
    got[rows.padding] = 0
    assert torch.equal(got, want)
    # back is the inverse: every token comes home from its window position.
    assert torch.equal(want[rows.back], ids.view(-1))


def test_window_cache_is_bounded_and_copies_empty():
    cache = WindowCache(capacity=2)
    first = cache.rows(1, 8, 8, 7, 3, "cpu")
    assert cache.rows(1, 8, 8, 7, 3, "cpu") is first
    cache.mask(14, 14, 7, 3, "cpu")
    cache.rows(1, 9, 9, 7, 0, "cpu")
    assert len(cache._items) == 2
    assert cache.rows(1, 8, 8, 7, 3, "cpu") is not first  # evicted, rebuilt
    for twin in (copy.deepcopy(cache), pickle.loads(pickle.dumps(cache))):
        assert len(twin._items) == 0 and twin.capacity == 2


def test_indices_cached_under_inference_mode_serve_a_training_step():
    """The cache outlives the call: what an inference_mode call left there (indices, shift
    mask) must be usable by a later training step at the same size."""
    block = _block(3).train()
    cache = WindowCache()
    x = torch.randn(1, 9, 11, 16)
    with torch.inference_mode():
        block(x, cache)
    leaf = x.clone().requires_grad_()
    block(leaf, cache).sum().backward()
    assert leaf.grad is not None and torch.isfinite(leaf.grad).all()


def test_gathered_windows_under_autocast_match_the_padded_form():
    block = _block(3).train()
    x = torch.randn(2, 9, 11, 16)
    grads = []
    for run in (lambda t: block(t, WindowCache()), block.padded_form):
        leaf = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = run(leaf)
        out.float().sum().backward()
        grads.append(leaf.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=0.05, atol=0.05)


@pytest.mark.parametrize("size", [(8, 6), (9, 7)])
def test_patch_merging_one_copy_equals_the_four_slices(size, monkeypatch):
    """The 2x2 neighbourhoods as one reshape/permute copy equal the concatenated strided
    slices the exported graph uses (the order the checkpoints' weights expect)."""
    from mask2former.modeling import swin

    torch.manual_seed(0)
    merge = swin.SwinPatchMerging(5).eval()
    x = torch.randn(2, *size, 5)
    with torch.no_grad():
        fast = merge(x)
        monkeypatch.setattr(swin, "is_exporting", lambda: True)
        sliced = merge(x)
    assert fast.shape == (2, (size[0] + 1) // 2, (size[1] + 1) // 2, 10)
    torch.testing.assert_close(fast, sliced, rtol=0, atol=0)
