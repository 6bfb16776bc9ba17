"""Activation functions by the names used in config files."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["get_activation"]


class _QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class _NewGELU(nn.Module):
    """The tanh approximation of GELU ("gelu_new" in config files)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def get_activation(name: str) -> nn.Module:
    """A fresh activation module for a config name such as "relu" or "gelu"."""
    table = {
        "relu": nn.ReLU,
        "gelu": nn.GELU,
        "silu": nn.SiLU,
        "swish": nn.SiLU,
        "gelu_new": _NewGELU,
        "quick_gelu": _QuickGELU,
        "tanh": nn.Tanh,
        "sigmoid": nn.Sigmoid,
    }
    if name not in table:
        raise ValueError(f"unknown activation {name!r}; choose from {sorted(table)}")
    return table[name]()
