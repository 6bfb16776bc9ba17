"""``mask2former serve``: the model behind an HTTP API and a web page (needs the serve extra).

Only argument parsing lives here; the work is :func:`mask2former.serve.server.run_server`.
"""

from __future__ import annotations

import argparse

from ..serve.settings import MiB, ServeSettings  # dataclasses only: no FastAPI for --help
from .common import add_inference_model_arguments, positive_float, positive_int

DEFAULTS = ServeSettings()


def _port(text: str) -> int:
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be 1..65535, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_inference_model_arguments(parser)
    server = parser.add_argument_group("server")
    server.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 for all "
        "interfaces: there is no authentication)",
    )
    server.add_argument("--port", type=_port, default=8000, help="(default: 8000)")
    server.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        metavar="N",
        help="server processes, each with its own copy of the model and queue (default: 1)",
    )
    limits = parser.add_argument_group("limits (per worker)")
    limits.add_argument(
        "--max-batch",
        type=positive_int,
        default=DEFAULTS.max_batch,
        metavar="N",
        help=f"queued requests run together in one pipeline call (default: {DEFAULTS.max_batch})",
    )
    limits.add_argument(
        "--queue-size",
        type=positive_int,
        default=DEFAULTS.queue_size,
        metavar="N",
        help=f"requests that may wait; more are answered 503 (default: {DEFAULTS.queue_size})",
    )
    limits.add_argument(
        "--max-upload-mb",
        type=positive_float,
        default=DEFAULTS.max_upload_bytes / MiB,
        metavar="MB",
        help="largest request body in MiB; larger ones are answered 413 (default: "
        f"{DEFAULTS.max_upload_bytes / MiB:g})",
    )


def run(args: argparse.Namespace) -> int:
    from ..serve.server import run_server
    from ..serve.settings import ServerOptions

    settings = ServeSettings(
        max_batch=args.max_batch,
        queue_size=args.queue_size,
        max_upload_bytes=max(1024, int(args.max_upload_mb * MiB)),
    )
    options = ServerOptions(
        model=args.model,
        device=args.device,
        dtype=args.dtype,
        backend=args.backend,
        host=args.host,
        port=args.port,
        workers=args.workers,
        settings=settings,
    )
    run_server(options)
    return 0
