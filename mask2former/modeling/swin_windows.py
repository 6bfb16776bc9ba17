"""Swin's window layout: padding to whole windows, the cyclic shift and the window partition.

The training (and exported) form pads, rolls and partitions the map in three copies, and undoes
them in three more. Inference does the same with one row gather each way: :func:`window_rows`
precomputes, per map size, which token every window position reads and where every token's
window output lands, and :class:`WindowCache` keeps those indices and the shift masks between
calls.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Hashable, Optional, TypeVar

import torch
from torch.autograd.function import once_differentiable

__all__ = [
    "WindowCache",
    "WindowRows",
    "gather_rows",
    "shifted_window_mask",
    "window_merge",
    "window_partition",
]

T = TypeVar("T")


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) with H, W multiples of ``window`` -> (B * nH * nW, window * window, C)."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c).transpose(2, 3)
    return x.reshape(-1, window * window, c)


def window_merge(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B * nH * nW, window * window, C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.view(-1, h // window, w // window, window, window, c).transpose(2, 3)
    return x.reshape(-1, h, w, c)


def shifted_window_mask(h: int, w: int, window: int, shift: int, device) -> torch.Tensor:
    """Additive mask (nW, window^2, window^2) keeping shifted windows from mixing regions.

    After the cyclic shift, a window at the bottom/right edge holds pixels from up to four
    regions that are not neighbours in the image; pairs from different regions get -100 (the
    value of the original implementation, so results match it exactly).
    """
    # Region of each row (0, 1, 2 at the bounds h - window and h - shift), likewise of each
    # column; a pixel's region is row * 3 + column. Computed, not sliced, so that an exported
    # graph builds it for any size.
    rows = torch.arange(h, device=device)
    cols = torch.arange(w, device=device)
    row_region = (rows >= h - window).long() + (rows >= h - shift).long()
    col_region = (cols >= w - window).long() + (cols >= w - shift).long()
    region = (row_region[:, None] * 3 + col_region[None, :]).to(torch.float32)[None, :, :, None]
    ids = window_partition(region, window).squeeze(-1)  # (nW, window^2)
    diff = ids[:, None, :] - ids[:, :, None]
    return torch.where(diff != 0, -100.0, 0.0)


@dataclass
class WindowRows:
    """Row indices between a (B, H, W, C) map, flattened to (B * H * W, C), and its padded,
    shifted windows, flattened to (B * nW * window^2, C).

    - source: (B * nW * window^2,) the map row each window position holds (0 for padding).
    - padding: the window positions that are padding (zero after the layer norm).
    - back: (B * H * W,) the window position holding each map row.
    """

    source: torch.Tensor
    padding: torch.Tensor
    back: torch.Tensor


def window_rows(b: int, h: int, w: int, window: int, shift: int, device) -> WindowRows:
    """The indices of :class:`WindowRows` for a map of ``b`` images of h x w tokens, padded
    at the bottom and right to whole windows and rolled by ``-shift`` on both axes."""
    hp, wp = (h + window - 1) // window * window, (w + window - 1) // window * window
    # Position i of the rolled, padded axis holds padded pixel (i + shift) % size.
    rows = (torch.arange(hp, device=device) + shift) % hp
    cols = (torch.arange(wp, device=device) + shift) % wp
    inside = (rows < h)[:, None] & (cols < w)[None, :]
    source = torch.where(inside, rows[:, None] * w + cols[None, :], 0)

    def partition(grid: torch.Tensor) -> torch.Tensor:  # (hp, wp) -> window-major (hp * wp,)
        return grid.view(hp // window, window, wp // window, window).transpose(1, 2).reshape(-1)

    images = torch.arange(b, device=device)[:, None]
    source = (images * (h * w) + partition(source)).reshape(-1)
    padding = (~partition(inside)).repeat(b).nonzero().squeeze(1)
    # Token (r, c) sits at rolled position ((r - shift) % hp, (c - shift) % wp).
    r = (torch.arange(h, device=device) - shift) % hp
    c = (torch.arange(w, device=device) - shift) % wp
    index = (r[:, None] // window) * (wp // window) + c[None, :] // window
    index = index * window**2 + (r[:, None] % window) * window + c[None, :] % window
    back = (images * (hp * wp) + index.reshape(1, -1)).reshape(-1)
    return WindowRows(source, padding, back)


def gather_rows(
    x: torch.Tensor,
    take: torch.Tensor,
    back: torch.Tensor,
    back_zero: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """x (R, C) -> x[take] (T, C), whose backward is a gather as well: grad_x = grad[back],
    with the rows ``back_zero`` of it zeroed.

    That equals autograd's scatter-add when each row r of x is read at position back[r] and
    every other position of ``take`` receives a zero gradient (Swin's padding positions, zeroed
    after the layer norm); ``back_zero`` lists the positions of ``back`` that no output row
    reads (from windows back to tokens: the padding).
    """
    if not (torch.is_grad_enabled() and x.requires_grad):
        return x.index_select(0, take)
    return _RowGather.apply(x, take, back, back_zero)


class _RowGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, take, back, back_zero):
        ctx.save_for_backward(back, back_zero)
        return x.index_select(0, take)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        back, back_zero = ctx.saved_tensors
        grad_x = grad.index_select(0, back)
        if back_zero is not None:
            grad_x.index_fill_(0, back_zero, 0)
        return grad_x, None, None, None


class WindowCache:
    """Shift masks and window rows per size and device, kept for the latest few sizes."""

    def __init__(self, capacity: int = 32):
        self.capacity = capacity
        self._items: OrderedDict[Hashable, object] = OrderedDict()
        self._lock = threading.Lock()  # a service may run the model from several threads

    # Copies and pickles (copy.deepcopy of a model, torch.save of a whole module) start empty:
    # the lock cannot be copied and the indices are rebuilt on use.
    def __getstate__(self) -> dict:
        return {"capacity": self.capacity}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["capacity"])

    def _get(self, key: Hashable, build: Callable[[], T]) -> T:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]  # type: ignore[return-value]
        # Built as normal tensors even under inference_mode: a later training step at the
        # same size saves them for its backward, which inference tensors cannot be.
        with torch.inference_mode(False):
            value = build()
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return value

    def mask(self, h: int, w: int, window: int, shift: int, device) -> torch.Tensor:
        """:func:`shifted_window_mask` of a padded h x w map."""
        key = ("mask", h, w, window, shift, str(device))
        return self._get(key, lambda: shifted_window_mask(h, w, window, shift, device))

    def rows(self, b: int, h: int, w: int, window: int, shift: int, device) -> WindowRows:
        """:func:`window_rows` of a batch of b maps of h x w tokens."""
        key = ("rows", b, h, w, window, shift, str(device))
        return self._get(key, lambda: window_rows(b, h, w, window, shift, device))
