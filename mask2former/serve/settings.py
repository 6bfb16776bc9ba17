"""What the service is allowed to do (:class:`ServeSettings`) and how it is started
(:class:`ServerOptions`), checked when built so a bad value fails before the model loads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

__all__ = ["ServeSettings", "ServerOptions", "MiB"]

MiB = 1024 * 1024


def _at_least(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer of at least {low}, got {value!r}")


@dataclass(frozen=True)
class ServeSettings:
    """Limits of one service process.

    Attributes:
        max_batch: most queued requests the worker runs together (one pipeline call; images of
            the same network input size share forward passes).
        queue_size: most requests waiting for the worker; one more is answered 503, so a burst
            is refused at once instead of piling up latency and memory.
        max_upload_bytes: largest request body; a larger one is answered 413 without being read
            to the end.
    """

    max_batch: int = 4
    queue_size: int = 32
    max_upload_bytes: int = 20 * MiB

    def __post_init__(self) -> None:
        _at_least("max_batch", self.max_batch, 1)
        _at_least("queue_size", self.queue_size, 1)
        _at_least("max_upload_bytes", self.max_upload_bytes, 1024)


@dataclass(frozen=True)
class ServerOptions:
    """Everything ``mask2former serve`` runs with.

    Attributes:
        model: built-in name, checkpoint folder or hub id.
        device, dtype, backend: as :func:`mask2former.inference.pipeline.build_pipeline`.
        host, port: where to listen (loopback unless told otherwise).
        workers: uvicorn worker processes; each loads its own copy of the model and has its
            own queue.
        settings: the limits of each process.
    """

    model: str = "shapes"
    device: str = "cpu"
    dtype: Optional[str] = None
    backend: Optional[str] = None
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    settings: ServeSettings = field(default_factory=ServeSettings)

    def __post_init__(self) -> None:
        _at_least("workers", self.workers, 1)
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise ValueError(f"port must be an integer, got {self.port!r}")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port must be 1..65535, got {self.port}")
