"""Swin Transformer backbone (Liu et al., 2021) returning the four normalized stage outputs.

Attribute names follow the published checkpoints' keys under
``model.pixel_level_module.encoder``. Every stage works on 7x7 (``window_size``) windows even when
its map is smaller than a window: the map is zero-padded to whole windows, as in the original
detectron2 backbone and the transformers reference, so published weights give the same numbers.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..config import SwinConfig
from .activations import get_activation
from .exporting import is_exporting
from .fast_ops import inference_chunks, linear_into, token_mlp
from .grad_checkpoint import run_block
from .swin_embeddings import SwinEmbeddings
from .swin_windows import (
    WindowCache,
    gather_rows,
    shifted_window_mask,
    window_merge,
    window_partition,
)

__all__ = ["SwinBackbone", "build_swin_backbone"]


def relative_position_index(window: int) -> torch.Tensor:
    """(window^2, window^2) index into the (2*window-1)^2 relative-position bias table."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij"))
    coords = coords.flatten(1)  # (2, window^2)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


class SwinSelfAttention(nn.Module):
    """Multi-head attention inside a window with a learned relative-position bias."""

    def __init__(self, dim: int, num_heads: int, window_size: int, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads)
        )
        # Saved in the published checkpoints, so it is a persistent buffer.
        self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.query = nn.Linear(dim, dim, bias=qkv_bias)
        self.key = nn.Linear(dim, dim, bias=qkv_bias)
        self.value = nn.Linear(dim, dim, bias=qkv_bias)

    def position_bias(self) -> torch.Tensor:
        """(heads, window^2, window^2) bias added to the attention logits.

        Without autograd the gathered bias is cached, keyed by the table's storage, version
        counter (bumped by in-place updates such as optimizer steps or ``load_state_dict``),
        dtype and device, so inference does not index the table on every call.
        """
        table = self.relative_position_bias_table
        # Inference tensors (a model loaded under inference_mode) have no version counter, so
        # their in-place updates could not be noticed: those are never cached.
        # Nor when exporting: the graph must gather from the table it holds.
        use_cache = not (torch.is_grad_enabled() or table.is_inference() or is_exporting())
        if use_cache:
            key = (table.data_ptr(), table._version, table.dtype, table.device)
            cached = getattr(self, "_bias_cache", None)
            if cached is not None and cached[0] == key:
                return cached[1]
        n = self.window_size**2
        bias = table[self.relative_position_index.reshape(-1)]
        bias = bias.view(n, n, -1).permute(2, 0, 1).contiguous()
        if use_cache:
            self._bias_cache = (key, bias)
        return bias

    def forward(self, x: torch.Tensor, shift_mask: Optional[torch.Tensor]) -> torch.Tensor:
        """x: (B * nW, N, C); shift_mask: (nW, N, N) or None -> (B * nW, N, C)."""
        bw, n, c = x.shape
        heads = self.num_heads
        # One GEMM for query, key and value (x is read once instead of three times).
        weight = torch.cat((self.query.weight, self.key.weight, self.value.weight))
        bias = None
        if self.query.bias is not None:
            bias = torch.cat((self.query.bias, self.key.bias, self.value.bias))
        qkv = F.linear(x, weight, bias).view(bw, n, 3, heads, c // heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B * nW, heads, N, d) each
        attn_bias = self.position_bias().to(x.dtype).unsqueeze(0)  # (1, heads, N, N)
        if shift_mask is not None:
            nw = shift_mask.shape[0]
            attn_bias = attn_bias + shift_mask.to(x.dtype)[:, None]  # (nW, heads, N, N)
            if bw != nw:
                # The windows of one image are consecutive, so the mask repeats per image.
                # Kept 4-D: a 5-D call falls back to PyTorch's slow math attention.
                attn_bias = attn_bias.repeat(bw // nw, 1, 1, 1)
        if is_exporting():
            # The exporters' decomposition of the fused attention gives an output whose strides
            # break the reshape below; the plain formula exports cleanly (same values).
            scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1) + attn_bias
            out = scores.softmax(-1) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias)
        return out.transpose(1, 2).reshape(bw, n, c)


class SwinAttentionOutput(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dense = nn.Linear(dim, dim)


class SwinAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, window_size: int, qkv_bias: bool):
        super().__init__()
        self.self = SwinSelfAttention(dim, num_heads, window_size, qkv_bias)
        self.output = SwinAttentionOutput(dim)

    def forward(self, x: torch.Tensor, shift_mask: Optional[torch.Tensor]) -> torch.Tensor:
        """x: (B * nW, N, C) windows; shift_mask (nW, N, N) or None -> (B * nW, N, C).

        Without autograd, many windows go in groups: the temporaries stay a few MB, recycled
        by the allocator, not hundreds of MB of fresh memory per block at the first stage."""
        bw, n, c = x.shape
        step = inference_chunks(bw, 4 * n * c * x.element_size())
        if step is None:
            return self.output.dense(self.self(x, shift_mask))
        per_image = bw if shift_mask is None else shift_mask.shape[0]
        out = torch.empty_like(x)
        for first in range(0, bw, per_image):  # a group never mixes two images' masks
            for start in range(0, per_image, step):
                stop = min(per_image, start + step)
                mask = None if shift_mask is None else shift_mask[start:stop]
                windows = slice(first + start, first + stop)
                y = self.self(x[windows], mask)
                linear_into(y.view(-1, c), self.output.dense, out[windows].view(-1, c))
        return out


class SwinMlpIn(nn.Module):
    def __init__(self, dim: int, hidden: int, act: str):
        super().__init__()
        self.dense = nn.Linear(dim, hidden)
        self.act = get_activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))


class SwinMlpOut(nn.Module):
    def __init__(self, hidden: int, dim: int):
        super().__init__()
        self.dense = nn.Linear(hidden, dim)


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero whole samples of a residual branch with probability ``p``."""
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


class SwinBlock(nn.Module):
    """(Shifted-)window attention block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        shift_size: int,
        mlp_ratio: float,
        qkv_bias: bool,
        act: str,
        eps: float,
        drop_path_rate: float,
    ):
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        self.drop_path_rate = drop_path_rate
        self.layernorm_before = nn.LayerNorm(dim, eps=eps)
        self.attention = SwinAttention(dim, num_heads, window_size, qkv_bias)
        self.layernorm_after = nn.LayerNorm(dim, eps=eps)
        hidden = int(mlp_ratio * dim)
        self.intermediate = SwinMlpIn(dim, hidden, act)
        self.output = SwinMlpOut(hidden, dim)

    def forward(self, x: torch.Tensor, windows: WindowCache) -> torch.Tensor:
        """x: (B, H, W, C) -> (B, H, W, C). One row gather into the padded, shifted windows
        and one back (indices per size from ``windows``; the layer norm is per token, so it runs
        on the gathered rows, and padding is zeroed after it, as the padded form pads the
        normalized map with zeros). Exported graphs take the padded form (any size)."""
        if is_exporting():
            return self.padded_form(x)
        b, h, w, c = x.shape
        ws, shift = self.window_size, self.shift_size
        hp, wp = (h + ws - 1) // ws * ws, (w + ws - 1) // ws * ws
        rows = windows.rows(b, h, w, ws, shift, x.device)
        tokens = x.reshape(-1, c)
        y = self.layernorm_before(gather_rows(tokens, rows.source, rows.back))
        y = y.index_fill_(0, rows.padding, 0)  # the norm keeps its input, not its output
        shift_mask = windows.mask(hp, wp, ws, shift, x.device) if shift else None
        y = self.attention(y.view(-1, ws * ws, c), shift_mask)
        y = gather_rows(y.view(-1, c), rows.back, rows.source, rows.padding)
        if torch.is_grad_enabled() or self._drops_paths():
            x = x + drop_path(y.view(b, h, w, c), self.drop_path_rate, self.training)
        else:
            x = y.add_(tokens).view(b, h, w, c)
        return self._mlp(x)

    def padded_form(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` by padding, rolling and partitioning the map (the exported graph's
        form; the gathers of :meth:`forward` give the same values)."""
        b, h, w, c = x.shape
        ws, shift = self.window_size, self.shift_size
        y = self.layernorm_before(x)
        # Padded to whole windows. Written as (ceil(h / ws)) * ws, not h + (-h) % ws: the same
        # number, but an exporter's symbolic shapes then see a multiple of ws at once.
        hp, wp = (h + ws - 1) // ws * ws, (w + ws - 1) // ws * ws
        y = F.pad(y, (0, 0, 0, wp - w, 0, hp - h))
        shift_mask = None
        if shift:
            y = torch.roll(y, shifts=(-shift, -shift), dims=(1, 2))
            shift_mask = shifted_window_mask(hp, wp, ws, shift, x.device)
        y = self.attention(window_partition(y, ws), shift_mask)
        y = window_merge(y, ws, hp, wp)
        if shift:
            y = torch.roll(y, shifts=(shift, shift), dims=(1, 2))
        x = x + drop_path(y[:, :h, :w], self.drop_path_rate, self.training)
        return self._mlp(x)

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        """x + mlp(norm(x)), the second half of the block."""
        mlp = self.intermediate.dense, self.intermediate.act, self.output.dense
        if self._drops_paths():
            y = token_mlp(self.layernorm_after(x), *mlp)
            return x + drop_path(y, self.drop_path_rate, True)
        return token_mlp(self.layernorm_after(x), *mlp, residual=x)

    def _drops_paths(self) -> bool:
        return self.training and self.drop_path_rate > 0


class SwinPatchMerging(nn.Module):
    """2x2 neighbourhood concatenation + linear: (B, H, W, C) -> (B, ceil(H/2), ceil(W/2), 2C)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[1:3]
        hp, wp = (h + 1) // 2 * 2, (w + 1) // 2 * 2  # even (see SwinBlock for the form)
        if is_exporting() or hp != h or wp != w:
            x = F.pad(x, (0, 0, 0, wp - w, 0, hp - h))
        # Order (even row, even col), (odd, even), (even, odd), (odd, odd): the weights expect it.
        if is_exporting():  # slices: the exporters' shapes need no divisibility proof
            parts = [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]]
            return self.reduction(self.norm(torch.cat(parts, -1)))
        # One copy: (B, H/2, row, W/2, col, C) -> (B, H/2, W/2, col, row, C).
        b, c = x.shape[0], x.shape[-1]
        x = x.reshape(b, hp // 2, 2, wp // 2, 2, c).permute(0, 1, 3, 4, 2, 5)
        return self.reduction(self.norm(x.reshape(b, hp // 2, wp // 2, 4 * c)))


class SwinStage(nn.Module):
    def __init__(self, blocks: List[SwinBlock], downsample: Optional[SwinPatchMerging]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, x: torch.Tensor, windows: WindowCache) -> torch.Tensor:
        """The stage's blocks (not the downsampling): (B, H, W, C) -> (B, H, W, C)."""
        for block in self.blocks:
            x = block(x, windows)
        return x


class SwinEncoder(nn.Module):
    def __init__(self, layers: List[SwinStage]):
        super().__init__()
        self.layers = nn.ModuleList(layers)


class SwinBackbone(nn.Module):
    """Swin backbone: (B, 3, H, W) -> 4 maps (B, C_i, H/2^(i+2), W/2^(i+2)), each normalized."""

    def __init__(
        self,
        embeddings: SwinEmbeddings,
        encoder: SwinEncoder,
        channels: List[int],
        out_features: List[str],
    ):
        super().__init__()
        self.embeddings = embeddings
        self.encoder = encoder
        self.channels = [
            c for c, name in zip(channels, _stage_names(len(channels))) if name in out_features
        ]
        self.out_features = list(out_features)
        self.hidden_states_norms = nn.ModuleDict(
            {
                name: nn.LayerNorm(c)
                for c, name in zip(channels, _stage_names(len(channels)))
                if name in out_features
            }
        )
        self.gradient_checkpointing = False  # per stage (mask2former.modeling.grad_checkpoint)
        # Shift masks and window indices per map size, kept between calls.
        self.windows = WindowCache()

    def forward(self, pixel_values: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        x = self.embeddings(pixel_values)
        features = []
        for name, stage in zip(_stage_names(len(self.encoder.layers)), self.encoder.layers):
            x = run_block(self, stage, x, self.windows)
            if name in self.hidden_states_norms:
                # NCHW view of channels-last memory: the convolutions that consume it run
                # channels-last (no NCHW copy here, no layout reorders inside oneDNN).
                features.append(self.hidden_states_norms[name](x).permute(0, 3, 1, 2))
            if stage.downsample is not None:
                x = stage.downsample(x)
        return tuple(features)


def _stage_names(n: int) -> List[str]:
    return [f"stage{i + 1}" for i in range(n)]


def build_swin_backbone(config: SwinConfig) -> SwinBackbone:
    """Swin backbone for ``config``; stochastic depth grows linearly to ``drop_path_rate``.

    The linear schedule is the original Swin's; the transformers reference applies the full rate
    to every block (it computes the schedule and then ignores it). Inference is unaffected.
    """
    total = sum(config.depths)
    rates = torch.linspace(0, config.drop_path_rate, total).tolist() if total else []
    stages = []
    start = 0
    for i, (depth, heads) in enumerate(zip(config.depths, config.num_heads)):
        dim = config.embed_dim * 2**i
        blocks = [
            SwinBlock(
                dim=dim,
                num_heads=heads,
                window_size=config.window_size,
                shift_size=0 if j % 2 == 0 else config.window_size // 2,
                mlp_ratio=config.mlp_ratio,
                qkv_bias=config.qkv_bias,
                act=config.hidden_act,
                eps=config.layer_norm_eps,
                drop_path_rate=rates[start + j],
            )
            for j in range(depth)
        ]
        start += depth
        downsample = SwinPatchMerging(dim) if i < len(config.depths) - 1 else None
        stages.append(SwinStage(blocks, downsample))
    return SwinBackbone(
        embeddings=SwinEmbeddings(config.num_channels, config.embed_dim, config.patch_size),
        encoder=SwinEncoder(stages),
        channels=config.stage_channels,
        out_features=config.out_features,
    )
