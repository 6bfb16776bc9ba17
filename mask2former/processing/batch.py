"""The processor's output container."""

from __future__ import annotations

from typing import Any

__all__ = ["BatchFeature"]


def _move(value: Any, *args: Any, **kwargs: Any) -> Any:
    if hasattr(value, "to") and callable(value.to) and not isinstance(value, BatchFeature):
        try:
            import torch
        except ImportError:  # pragma: no cover
            return value
        if isinstance(value, torch.Tensor):
            # Only floating tensors follow a dtype argument (masks and labels keep theirs).
            if not value.is_floating_point():
                kwargs = {k: v for k, v in kwargs.items() if k != "dtype"}
                args = tuple(a for a in args if not isinstance(a, torch.dtype))
            return value.to(*args, **kwargs)
        return value
    if isinstance(value, list):
        return [_move(v, *args, **kwargs) for v in value]
    if isinstance(value, tuple):
        return tuple(_move(v, *args, **kwargs) for v in value)
    return value


class BatchFeature(dict):
    """A dict of model inputs that also allows attribute access (``batch.pixel_values``).

    ``to(device)`` (or ``to(dtype)``, or both) moves every tensor, including those in the lists of
    ``mask_labels`` and ``class_labels``, and returns the batch; integer tensors keep their dtype.
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"batch has no field {name!r}") from None

    def to(self, *args: Any, **kwargs: Any) -> BatchFeature:
        for key in list(self.keys()):
            self[key] = _move(self[key], *args, **kwargs)
        return self
