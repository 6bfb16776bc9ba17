"""The fast paths of the model equal the plain formulations they replace (values and gradients)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mask2former.modeling import deformable_gather, fast_ops
from mask2former.modeling.deformable_attention import (
    MultiscaleDeformableAttention,
    multi_scale_deformable_attention,
    multi_scale_deformable_attention_grid_sample,
)
from mask2former.modeling.deformable_gather import padded_deformable_sampling
from mask2former.modeling.swin import SwinAttention
from mask2former.modeling.transformer_decoder import MaskPredictor, query_pixel_products

SHAPES = [(3, 5), (6, 9), (11, 17)]


def _msda_inputs(batch=2, heads=4, dim=8, points=3, dtype=torch.float64, spread=0.3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    total = sum(h * w for h, w in SHAPES)
    queries = 7
    value = torch.randn(batch, total, heads, dim, generator=gen, dtype=dtype)
    # Locations reach beyond [0, 1] so that corners outside the maps are exercised.
    loc = torch.rand(batch, queries, heads, len(SHAPES), points, 2, generator=gen, dtype=dtype)
    loc = loc * (1 + 2 * spread) - spread
    weights = torch.rand(batch, queries, heads, len(SHAPES) * points, generator=gen, dtype=dtype)
    weights = weights.softmax(-1).view(batch, queries, heads, len(SHAPES), points)
    return value, loc, weights


def test_gather_msda_equals_grid_sample_values_and_gradients():
    value, loc, weights = (t.requires_grad_() for t in _msda_inputs())
    fast = multi_scale_deformable_attention(value, SHAPES, loc, weights)
    plain = multi_scale_deformable_attention_grid_sample(value, SHAPES, loc, weights)
    torch.testing.assert_close(fast, plain, rtol=0, atol=1e-12)
    grad = torch.randn_like(fast)
    g_fast = torch.autograd.grad(fast, (value, loc, weights), grad)
    g_plain = torch.autograd.grad(plain, (value, loc, weights), grad)
    for a, b in zip(g_fast, g_plain):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_gather_msda_exact_pixel_centres_and_edges():
    """Locations on pixel centres return the pixel; beyond the border they fade to zero."""
    value, loc, weights = _msda_inputs(spread=0.0, seed=1)
    h, w = SHAPES[0]
    loc = loc.clone()
    loc[..., 0, :, 0] = (torch.arange(3, dtype=loc.dtype)[None, None, None] % w + 0.5) / w
    loc[..., 0, :, 1] = 0.5 / h
    loc[0, 0, 0, 1, 0] = torch.tensor([-0.5, 1.5], dtype=loc.dtype)  # far outside
    loc[0, 0, 0, 2, 0] = torch.tensor([1.0, 1.0], dtype=loc.dtype)  # bottom-right edge
    fast = multi_scale_deformable_attention(value, SHAPES, loc, weights)
    plain = multi_scale_deformable_attention_grid_sample(value, SHAPES, loc, weights)
    torch.testing.assert_close(fast, plain, rtol=0, atol=1e-12)


def test_gather_msda_float32_and_bfloat16_values():
    value, loc, weights = _msda_inputs(dtype=torch.float32)
    plain = multi_scale_deformable_attention_grid_sample(value, SHAPES, loc, weights)
    fast = multi_scale_deformable_attention(value, SHAPES, loc, weights)
    torch.testing.assert_close(fast, plain, rtol=0, atol=1e-5)
    # bfloat16 values with float32 locations and weights: only the values' rounding shows.
    fast16 = multi_scale_deformable_attention(value.bfloat16(), SHAPES, loc, weights)
    assert fast16.dtype == torch.bfloat16
    torch.testing.assert_close(fast16.float(), plain, rtol=0.02, atol=0.02)


@pytest.mark.parametrize(
    "dtype, points, atol",
    [
        (torch.float64, 3, 1e-12),
        (torch.float64, 2, 1e-12),
        (torch.float32, 4, 2e-6),  # the model's case
        (torch.float32, 2, 2e-6),
    ],
)
def test_padded_sampling_equals_grid_sample(dtype, points, atol):
    """The inference path (zero-bordered table, unmasked taps) gives grid_sample's values,
    also for points far outside the maps and on their edges."""
    value, loc, weights = _msda_inputs(dtype=dtype, points=points, spread=0.6, seed=3)
    loc = loc.clone()
    loc[0, 0, 0, 0, 0] = torch.tensor([1.0, 1.0], dtype=dtype)  # bottom-right edge
    loc[0, 1, 0, 0, 0] = torch.tensor([0.0, 0.0], dtype=dtype)  # top-left edge
    loc[1, 0, 1, 2, 0] = torch.tensor([5.0, -7.0], dtype=dtype)  # far outside
    plain = multi_scale_deformable_attention_grid_sample(value, SHAPES, loc, weights)
    with torch.no_grad():
        fast = padded_deformable_sampling(value, SHAPES, loc, weights)
    assert fast.shape == plain.shape and fast.dtype == dtype
    torch.testing.assert_close(fast, plain, rtol=0, atol=atol)


def test_padded_value_table_has_a_zero_border_over_reused_memory():
    """The table is allocated empty and only its border zeroed: memory the allocator hands
    back (here just freed, full of NaN) must not show through anywhere."""
    shapes = [(3, 4), (2, 2)]
    value = torch.randn(2, 16, 2, 5)
    size = 2 * sum((h + 3) * (w + 3) for h, w in shapes) * 2 * 5
    for _ in range(3):
        garbage = torch.full((size,), float("nan"))
        del garbage
        table, starts = deformable_gather.padded_value_table(value, shapes)
        assert torch.isfinite(table).all()
        table = table.view(2, -1, 2, 5)
        first = 0
        for (h, w), start in zip(shapes, starts):
            level = table[:, start : start + (h + 3) * (w + 3)].view(2, h + 3, w + 3, 2, 5)
            inside = value[:, first : first + h * w].view(2, h, w, 2, 5)
            assert torch.equal(level[:, 1 : 1 + h, 1 : 1 + w], inside)
            border = level.clone()
            border[:, 1 : 1 + h, 1 : 1 + w] = 0
            assert not border.any()
            first += h * w


def test_padded_sampling_bfloat16_values():
    value, loc, weights = _msda_inputs(dtype=torch.float32, points=4)
    plain = multi_scale_deformable_attention_grid_sample(value, SHAPES, loc, weights)
    fast16 = padded_deformable_sampling(value.bfloat16(), SHAPES, loc, weights)
    assert fast16.dtype == torch.bfloat16
    torch.testing.assert_close(fast16.float(), plain, rtol=0.02, atol=0.02)


@pytest.mark.parametrize("chunk_taps", [None, 200])
def test_deformable_module_matches_plain_formula(chunk_taps, monkeypatch):
    """Also with the inference path cut into many chunks of queries (200 taps: 2 queries of
    4 heads and 24 taps per chunk), each image of the batch separately."""
    if chunk_taps is not None:
        monkeypatch.setattr(deformable_gather, "CHUNK_TAPS", chunk_taps)
    torch.manual_seed(0)
    dim, heads, levels, points = 32, 4, len(SHAPES), 2
    module = MultiscaleDeformableAttention(dim, heads, levels, points).double()
    for p in module.parameters():
        torch.nn.init.normal_(p, std=0.2)
    total = sum(h * w for h, w in SHAPES)
    x = torch.randn(2, total, dim, dtype=torch.float64)
    pos = torch.randn(2, total, dim, dtype=torch.float64)
    ref = torch.rand(2, total, levels, 2, dtype=torch.float64)
    x.requires_grad_()
    out, weights = module(x, pos, ref, SHAPES)  # with autograd: the gather's own backward
    with torch.no_grad():
        out_gather, weights_gather = module(x, pos, ref, SHAPES)  # inference: chunked taps
        assert module(x, pos, ref, SHAPES, need_weights=False)[1] is None

    # The textbook formulation, written out.
    q = x + pos
    value = module.value_proj(x).view(2, total, heads, -1)
    off = module.sampling_offsets(q).view(2, total, heads, levels, points, 2)
    attn = module.attention_weights(q).view(2, total, heads, -1).softmax(-1)
    attn = attn.view(2, total, heads, levels, points)
    norm = torch.tensor([[w, h] for h, w in SHAPES], dtype=torch.float64)
    loc = ref[:, :, None, :, None, :] + off / norm[None, None, None, :, None, :]
    expected = module.output_proj(
        multi_scale_deformable_attention_grid_sample(value, SHAPES, loc, attn)
    )
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(out_gather, expected.detach(), rtol=0, atol=1e-10)
    torch.testing.assert_close(weights, attn, rtol=0, atol=1e-12)
    torch.testing.assert_close(weights_gather, attn.detach(), rtol=0, atol=1e-12)
    # Gradients of the module's path (input and every parameter) equal autograd through
    # grid_sample.
    grad = torch.randn_like(out)
    params = [x, *module.parameters()]
    for got, want in zip(
        torch.autograd.grad(out, params, grad, retain_graph=True),
        torch.autograd.grad(expected, params, grad),
    ):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-9)


def test_gather_msda_bfloat16_gradients():
    """A bfloat16 table (autocast training) gets gradients of its dtype, close to float32's."""
    value, loc, weights = (t.requires_grad_() for t in _msda_inputs(dtype=torch.float32))
    grad = torch.randn(2, 7, 4 * 8)
    want = torch.autograd.grad(
        multi_scale_deformable_attention(value, SHAPES, loc, weights), (value, loc), grad
    )
    value16 = value.detach().bfloat16().requires_grad_()
    out16 = multi_scale_deformable_attention(value16, SHAPES, loc, weights)
    got = torch.autograd.grad(out16, (value16, loc), grad.bfloat16())
    assert got[0].dtype == torch.bfloat16
    for a, b in zip(got, want):
        scale = float(b.abs().max())
        torch.testing.assert_close(a.float(), b, rtol=0, atol=0.03 * scale)


@pytest.mark.parametrize("size", [(5, 7), (12, 12)])
def test_mask_predictor_resized_features_equal_resized_logits(size):
    torch.manual_seed(0)
    predictor = MaskPredictor(16, 8).double()
    queries = torch.randn(2, 5, 16, dtype=torch.float64)
    features = torch.randn(2, 8, 24, 32, dtype=torch.float64)
    masks, blocked = predictor(queries, features, size)
    small = F.interpolate(masks, size=size, mode="bilinear", align_corners=False).flatten(2)
    expected = small.sigmoid() < 0.5
    expected &= ~expected.all(-1, keepdim=True)
    assert torch.equal(blocked, expected)
    embed = predictor.mask_embedder(queries)
    torch.testing.assert_close(masks, torch.einsum("bqc,bchw->bqhw", embed, features))


def test_token_mlp_chunks_equal_plain(monkeypatch):
    from mask2former.modeling import fast_ops

    torch.manual_seed(0)
    first, second = torch.nn.Linear(8, 32), torch.nn.Linear(32, 8)
    x = torch.randn(2, 37, 8)
    plain = second(F.gelu(first(x)))
    monkeypatch.setattr(fast_ops, "CHUNK_BYTES", 32 * 4 * 5)  # 5 rows a chunk
    with torch.no_grad():
        chunked = fast_ops.token_mlp(x, first, F.gelu, second)
    torch.testing.assert_close(chunked, plain, rtol=0, atol=1e-6)
    assert fast_ops.token_mlp(x, first, F.gelu, second).requires_grad  # autograd: plain path


def test_swin_position_bias_cache_follows_weight_updates():
    from mask2former.modeling.swin import SwinSelfAttention

    attn = SwinSelfAttention(dim=8, num_heads=2, window_size=3)
    with torch.no_grad():
        first = attn.position_bias()
        attn.relative_position_bias_table.add_(1.0)  # in-place update, e.g. an optimizer step
        second = attn.position_bias()
    torch.testing.assert_close(second, first + 1.0)
    fresh = attn.position_bias()  # with autograd: never cached, carries gradients
    assert fresh.requires_grad
    torch.testing.assert_close(fresh.detach(), second)


def test_bfloat16_model_runs_and_stays_near_float32(tmp_path):
    from mask2former import Mask2FormerForUniversalSegmentation

    from .reference_models import make_reference

    _, folder = make_reference(tmp_path)
    f32 = Mask2FormerForUniversalSegmentation.from_pretrained(folder)
    b16 = Mask2FormerForUniversalSegmentation.from_pretrained(folder, torch_dtype=torch.bfloat16)
    pixels = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        out32 = f32(pixels)
        out16 = b16(pixels.bfloat16())
    assert out16.masks_queries_logits.dtype == torch.bfloat16
    masks32, masks16 = out32.masks_queries_logits, out16.masks_queries_logits.float()
    assert torch.isfinite(masks16).all()
    assert ((masks32 > 0) == (masks16 > 0)).float().mean() > 0.95
    scale = out32.class_queries_logits.abs().max()
    assert (
        out32.class_queries_logits - out16.class_queries_logits.float()
    ).abs().max() < 0.1 * scale


def test_swin_position_bias_of_a_model_built_under_inference_mode():
    from mask2former.modeling.swin import SwinSelfAttention

    with torch.inference_mode():
        attn = SwinSelfAttention(dim=8, num_heads=2, window_size=3)
        assert attn.position_bias().shape == (2, 9, 9)


def test_swin_window_groups_equal_one_pass(monkeypatch):
    """Inference cuts many windows into groups (each image's shift mask sliced to match): the
    same values as one pass over all windows."""
    torch.manual_seed(0)
    attention = SwinAttention(dim=16, num_heads=2, window_size=3, qkv_bias=True)
    with torch.no_grad():
        attention.self.relative_position_bias_table.normal_()
    images, per_image = 2, 5
    x = torch.randn(images * per_image, 9, 16)
    mask = torch.where(torch.rand(per_image, 9, 9) > 0.5, -100.0, 0.0)
    for shift_mask in (mask, None):
        whole = attention(x, shift_mask)  # autograd on: one pass
        monkeypatch.setattr(fast_ops, "CHUNK_BYTES", 3 * 4 * 9 * 16 * 4)  # 3 windows a group
        with torch.no_grad():
            grouped = attention(x, shift_mask)
        monkeypatch.undo()
        torch.testing.assert_close(grouped, whole.detach(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_query_pixel_products_equal_batched_matmul(dtype):
    """Per-image products on a channels-last map's transposed view (inference) equal bmm; with
    autograd the batched form runs and gradients flow."""
    torch.manual_seed(0)
    features = torch.randn(2, 16, 5, 7).to(dtype).contiguous(memory_format=torch.channels_last)
    pixels = features.flatten(2)  # (B, C, N) with transposed strides
    embed = torch.randn(2, 3, 16, dtype=dtype)
    want = torch.bmm(embed, pixels.contiguous())
    with torch.no_grad():
        got = query_pixel_products(embed, pixels)
    torch.testing.assert_close(got, want)
    trained = embed.clone().requires_grad_()
    query_pixel_products(trained, pixels).sum().backward()
    assert trained.grad is not None and trained.grad.shape == embed.shape


@pytest.mark.parametrize(
    "act", [nn.GELU(), nn.GELU(approximate="tanh"), nn.ReLU(), nn.SiLU(), nn.Tanh()]
)
def test_token_mlp_chunks_with_in_place_activations(act, monkeypatch):
    """Inference in row chunks, the activation applied in place: the plain MLP's values."""
    monkeypatch.setattr(fast_ops, "CHUNK_BYTES", 32 * 4 * 7)  # 7 rows a chunk
    torch.manual_seed(0)
    first, second = nn.Linear(8, 32), nn.Linear(32, 8)
    x = torch.randn(2, 50, 8)
    want = second(act(first(x)))
    with torch.no_grad():
        got = fast_ops.token_mlp(x, first, act, second)
    torch.testing.assert_close(got, want.detach(), rtol=0, atol=0)


@pytest.mark.parametrize("chunk_rows", [None, 7])
def test_token_mlp_residual_equals_plain_sum(chunk_rows, monkeypatch):
    """``residual=`` adds the skip connection in the MLP's own buffer: the exact plain sum in
    float32 (bfloat16 goes through oneDNN where available; see the next test)."""
    if chunk_rows is not None:
        monkeypatch.setattr(fast_ops, "CHUNK_BYTES", 32 * 4 * chunk_rows)
    torch.manual_seed(0)
    first, second = nn.Linear(8, 32), nn.Linear(32, 8)
    x, skip = torch.randn(2, 50, 8), torch.randn(2, 50, 8)
    want = skip + second(F.relu(first(x)))
    with torch.no_grad():
        got = fast_ops.token_mlp(x, first, nn.ReLU(), second, residual=skip)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    with_grad = fast_ops.token_mlp(x, first, nn.ReLU(), second, residual=skip)
    assert with_grad.requires_grad
    torch.testing.assert_close(with_grad, want, rtol=0, atol=0)


@pytest.mark.parametrize("act", [nn.ReLU(), nn.GELU(), nn.GELU(approximate="tanh"), nn.SiLU()])
@pytest.mark.parametrize("chunk_rows", [None, 7])
def test_fused_bfloat16_mlp_matches_float32(act, chunk_rows, monkeypatch):
    """The oneDNN path (bias, activation and residual fused into the products) gives the float32
    MLP's values to bfloat16 precision, in one go and in row chunks; activations oneDNN does
    not fuse take the plain path."""
    if fast_ops._ONEDNN_LINEAR is None:
        pytest.skip("this CPU or torch build has no native bfloat16 oneDNN linear")
    if chunk_rows is not None:
        monkeypatch.setattr(fast_ops, "CHUNK_BYTES", 32 * 2 * chunk_rows)
    torch.manual_seed(0)
    first, second = nn.Linear(16, 32), nn.Linear(32, 16)
    x, skip = torch.randn(3, 41, 16), torch.randn(3, 41, 16)
    want = skip + second(act(first(x)))
    first16, second16 = first.bfloat16(), second.bfloat16()
    with torch.no_grad():
        assert fast_ops.fused_bfloat16_linears(x.bfloat16())
        got = fast_ops.token_mlp(x.bfloat16(), first16, act, second16, residual=skip.bfloat16())
    assert got.dtype == torch.bfloat16 and got.shape == want.shape
    torch.testing.assert_close(got.float(), want.detach(), rtol=0.02, atol=0.05)
    assert not fast_ops.fused_bfloat16_linears(x.bfloat16())  # autograd: plain products
    assert not fast_ops.fused_bfloat16_linears(x)  # float32: plain products


def _float32_module_inputs():
    """A float32 deformable attention module with random weights and (x, pos, ref) for it."""
    torch.manual_seed(0)
    dim, heads, levels, points = 32, 4, len(SHAPES), 2
    module = MultiscaleDeformableAttention(dim, heads, levels, points)
    for p in module.parameters():
        torch.nn.init.normal_(p, std=0.2)
    total = sum(h * w for h, w in SHAPES)
    x, pos = torch.randn(2, total, dim), torch.randn(2, total, dim)
    return module, x, pos, torch.rand(2, total, levels, 2)


def test_deformable_module_residual_in_its_chunks(monkeypatch):
    """Inference adds the residual to each chunk's projected rows: the same values as adding it
    to the module's output, in one chunk and in many, float32 and bfloat16."""
    module, x, pos, ref = _float32_module_inputs()
    with torch.no_grad():
        want, _ = module(x, pos, ref, SHAPES, need_weights=False)
        want = x + want
        for chunk_taps in (None, 200):
            if chunk_taps is not None:
                monkeypatch.setattr(deformable_gather, "CHUNK_TAPS", chunk_taps)
            got, _ = module(x, pos, ref, SHAPES, need_weights=False, residual=x)
            torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
        half = copy.deepcopy(module).bfloat16()
        got16, _ = half(x.bfloat16(), pos.bfloat16(), ref, SHAPES, residual=x.bfloat16())
    torch.testing.assert_close(got16.float(), want, rtol=0.05, atol=0.1)
    grad_out, _ = module(x, pos, ref, SHAPES, residual=x)  # autograd path
    torch.testing.assert_close(grad_out.detach(), want, rtol=0, atol=1e-5)


def test_encoder_layer_eval_form_equals_training_form():
    """Without dropout the encoder layer takes its residuals inside the attention and the MLP;
    the training form (explicit sums after dropout) gives the same values."""
    from mask2former.modeling.pixel_decoder import DeformableEncoderLayer, reference_points

    torch.manual_seed(0)
    layer = DeformableEncoderLayer(dim=32, num_heads=4, ffn_dim=64, dropout=0.1)
    total = sum(h * w for h, w in SHAPES)
    x, pos = torch.randn(2, total, 32), torch.randn(2, total, 32)
    ref = reference_points(SHAPES, 2, x.device, torch.float32)
    layer.train()
    layer.dropout = 1e-9  # the training form (explicit sums), its dropout next to nothing
    with torch.no_grad():
        trained_form, _ = layer(x, pos, ref, SHAPES)
    layer.dropout = 0.1
    layer.eval()
    with torch.no_grad():
        eval_form, _ = layer(x, pos, ref, SHAPES)
        reused, _ = layer(x.clone(), pos, ref, SHAPES, reuse_input=True)
    torch.testing.assert_close(eval_form, trained_form, rtol=0, atol=1e-5)
    torch.testing.assert_close(reused, eval_form, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shared_point_sample_equals_grid_sample(dtype):
    """The matcher's point sampling (taps once per point, one embedding_bag for all channels)
    gives grid_sample's values: inside, on the edges and corners, and outside the maps."""
    from mask2former.loss.point_sampling import point_sample, shared_point_sample

    torch.manual_seed(0)
    features = torch.randn(3, 17, 9, 13, dtype=dtype)
    coords = torch.rand(3, 400, 2, dtype=dtype) * 1.6 - 0.3
    edges = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.5, 1.0], [-2, 3]])
    coords[:, : len(edges)] = edges.to(dtype)
    want = point_sample(features, coords)
    got = shared_point_sample(features, coords)
    assert got.shape == want.shape == (3, 17, 400)
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(got, want, rtol=0, atol=tolerance)
    assert (got[:, :, 5] == 0).all()  # far outside: zeros


@pytest.mark.parametrize("act", [nn.ReLU(), nn.GELU(), nn.GELU(approximate="tanh")])
@pytest.mark.parametrize("bias", [True, False])
def test_chunked_training_mlp_values_and_gradients(act, bias, monkeypatch):
    """A training step's MLP in row chunks, hidden rows recomputed in the backward: the plain
    MLP's values and gradients (input, weights, biases)."""
    monkeypatch.setattr(fast_ops, "CHUNK_BYTES", 32 * 8 * 6)  # 6 rows a chunk (float64)
    torch.manual_seed(0)
    first = nn.Linear(8, 32, bias=bias).double()
    second = nn.Linear(32, 8, bias=bias).double()
    x = torch.randn(2, 29, 8, dtype=torch.float64, requires_grad=True)
    skip = torch.randn(2, 29, 8, dtype=torch.float64)
    calls = []
    chunked = fast_ops.chunked_mlp_training
    monkeypatch.setattr(
        fast_ops, "chunked_mlp_training", lambda *a: calls.append(a[-1]) or chunked(*a)
    )
    got = fast_ops.token_mlp(x, first, act, second, residual=skip)
    assert calls == [6]  # the chunked form, 6 rows a chunk
    want = skip + second(act(first(x)))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    grad = torch.randn_like(want)
    params = [x, *first.parameters(), *second.parameters()]
    for g, w in zip(
        torch.autograd.grad(got, params, grad), torch.autograd.grad(want, params, grad)
    ):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-10)


def test_chunked_training_mlp_frozen_weights_and_input(monkeypatch):
    """Only what needs a gradient gets one: frozen first layer, input without grad."""
    monkeypatch.setattr(fast_ops, "CHUNK_BYTES", 32 * 8 * 6)
    torch.manual_seed(0)
    first, second = nn.Linear(8, 32).double(), nn.Linear(32, 8).double()
    first.requires_grad_(False)
    x = torch.randn(40, 8, dtype=torch.float64)
    got = fast_ops.token_mlp(x, first, nn.ReLU(), second)
    want = second(F.relu(first(x)))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    grads = torch.autograd.grad(got.sum(), list(second.parameters()))
    wants = torch.autograd.grad(want.sum(), list(second.parameters()))
    for g, w in zip(grads, wants):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("chunk_rows", [None, 7])
def test_token_mlp_into_residual_overwrites_its_input(dtype, chunk_rows, monkeypatch):
    """``into_residual`` with the residual being x itself: every chunk reads its rows before
    writing them, so the result is x + mlp(x) of the original x, in x's own buffer."""
    if chunk_rows is not None:
        monkeypatch.setattr(fast_ops, "CHUNK_BYTES", 32 * 4 * chunk_rows)
    torch.manual_seed(0)
    first, second = nn.Linear(16, 32).to(dtype), nn.Linear(32, 16).to(dtype)
    x = torch.randn(2, 45, 16).to(dtype)
    with torch.no_grad():
        want = fast_ops.token_mlp(x, first, nn.ReLU(), second, residual=x)
        got = fast_ops.token_mlp(x, first, nn.ReLU(), second, residual=x, into_residual=True)
    assert got.data_ptr() == x.data_ptr() and got.shape == x.shape
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_deformable_module_into_residual_overwrites_its_queries(monkeypatch):
    """The encoder's in-place form: the module's input is also its residual and its output
    buffer; chunks of queries overwrite their own rows only after reading them."""
    monkeypatch.setattr(deformable_gather, "CHUNK_TAPS", 200)
    module, x, pos, ref = _float32_module_inputs()
    with torch.no_grad():
        want = x + module(x, pos, ref, SHAPES, need_weights=False)[0]
        got, _ = module(x, pos, ref, SHAPES, need_weights=False, residual=x, into_residual=True)
    assert got.data_ptr() == x.data_ptr()
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("mask_channels, bias", [(32, True), (32, False), (24, True)])
@pytest.mark.parametrize("batch", [1, 2])
def test_pixel_decoder_fpn_step_inference_equals_autograd_form(mask_channels, bias, batch):
    """The inference FPN step writes into spent stride-4 maps; its values are the plain step's
    (a different mask feature width or no bias takes the plain projection)."""
    from mask2former.modeling.pixel_decoder import DeformableEncoder, PixelDecoder

    torch.manual_seed(0)
    decoder = PixelDecoder([8, 12, 20, 24], 32, mask_channels, DeformableEncoder([])).eval()
    if not bias:
        decoder.mask_projection.bias = None
    with torch.no_grad():
        for p in decoder.parameters():
            p.normal_(0.0, 0.3)
    finest = torch.randn(batch, 8, 13, 18).contiguous(memory_format=torch.channels_last)
    coarse = torch.randn(batch, 32, 7, 9).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        plain = decoder._fpn_step(finest, coarse)
        fast = decoder._fpn_step_inference(finest.clone(), coarse.clone())
    assert fast.shape == plain.shape == (batch, mask_channels, 13, 18)
    torch.testing.assert_close(fast, plain, rtol=1e-6, atol=1e-6)
    with torch.inference_mode():  # the model's own inference path takes the fast form
        through_forward = decoder(
            [
                finest,
                torch.randn(batch, 12, 7, 9),
                torch.randn(batch, 20, 4, 5),
                torch.randn(batch, 24, 2, 3),
            ]
        )
    assert through_forward.mask_features.shape == plain.shape


@pytest.mark.parametrize("size", [(32, 48), (30, 45)])
def test_swin_patch_embedding_as_matrix_product_equals_convolution(size):
    """Patches x weights equals the strided convolution (values and gradients), padded or not."""
    from mask2former.modeling.swin_embeddings import SwinPatchEmbeddingsProjection

    torch.manual_seed(0)
    embed = SwinPatchEmbeddingsProjection(3, 8, 4)
    x = torch.randn(2, 3, *size, dtype=torch.float64, requires_grad=True)
    embed = embed.double()
    out = embed(x)
    h, w = size
    padded = F.pad(x, (0, -w % 4, 0, -h % 4))
    plain = embed.projection(padded).permute(0, 2, 3, 1)
    assert out.shape == plain.shape == (2, (h + 3) // 4, (w + 3) // 4, 8)
    torch.testing.assert_close(out, plain, rtol=0, atol=1e-12)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (x, embed.projection.weight, embed.projection.bias), grad)
    want = torch.autograd.grad(plain, (x, embed.projection.weight, embed.projection.bias), grad)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
