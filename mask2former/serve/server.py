"""Running the service: :func:`run_server` loads the model and hands the app to uvicorn.

With ``workers`` > 1 uvicorn starts that many processes, each building the app through
:func:`app_from_env` (the options travel in an environment variable, because the processes
are fresh interpreters) and loading its own copy of the model.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from dataclasses import asdict
from typing import Any, Optional

from .settings import ServerOptions, ServeSettings

__all__ = ["require_serve", "load_app", "app_from_env", "check_address", "run_server"]

OPTIONS_ENV = "MASK2FORMER_SERVE_OPTIONS"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def require_serve() -> None:
    """One-line ImportError naming the extra when FastAPI, uvicorn or python-multipart is
    missing (the package itself imports without them)."""
    try:
        import fastapi  # noqa: F401
        import python_multipart  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise ImportError(
            f"mask2former serve needs the serve extra ({e.name} is missing): "
            "pip install 'mask2former[serve]'"
        ) from None


def load_app(options: ServerOptions) -> Any:
    """The model of ``options`` loaded into a pipeline, behind a FastAPI app."""
    from ..inference.pipeline import build_pipeline
    from .app import build_app

    pipeline = build_pipeline(
        options.model, device=options.device, dtype=options.dtype, backend=options.backend
    )
    return build_app(pipeline, options.settings)


def app_from_env() -> Any:
    """uvicorn's app factory in each worker process: the options from ``OPTIONS_ENV``."""
    data = json.loads(os.environ[OPTIONS_ENV])
    options = ServerOptions(**dict(data, settings=ServeSettings(**data["settings"])))
    if options.workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        import torch

        # N processes each using every core would slow all of them down: share the cores.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // options.workers))
    return load_app(options)


def check_address(host: str, port: int) -> None:
    """A one-line OSError when ``host:port`` cannot be listened on (in use, no such address),
    before the model loads; uvicorn's own failure would be a log line and an exit."""
    where = f"{host}:{port}"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as e:
        raise OSError(f"cannot listen on {where} ({e.strerror})") from None
    with socket.socket(family, kind, proto) as sock:
        # The same option uvicorn sets, so a port in TIME_WAIT is not reported as taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as e:
            raise OSError(f"cannot listen on {where} ({e.strerror or e})") from None


def run_server(options: ServerOptions, log_level: str = "info", log: Optional[Any] = None) -> None:
    """Serve ``options.model`` on ``options.host:port`` until interrupted.

    Everything a user can get wrong (the extra, the address, the model) fails before the
    server starts, with one line: ImportError, OSError or ValueError.
    """
    require_serve()
    import uvicorn

    say = log or (lambda line: print(line, file=sys.stderr))
    check_address(options.host, options.port)
    app = load_app(options)  # in this process even with workers: a bad model fails here, once
    url = f"http://{options.host}:{options.port}"
    say(f"mask2former serve: {options.model} on {url} (page /, API docs /docs)")
    if options.host not in LOOPBACK:
        say("mask2former serve: listening beyond this machine; the service has no authentication")
    if options.workers == 1:
        uvicorn.run(app, host=options.host, port=options.port, log_level=log_level)
        return
    del app
    os.environ[OPTIONS_ENV] = json.dumps(asdict(options))
    uvicorn.run(
        f"{__name__}:app_from_env",
        factory=True,
        host=options.host,
        port=options.port,
        workers=options.workers,
        log_level=log_level,
    )
