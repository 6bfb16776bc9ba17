"""``mask2former serve``: the pipeline behind an HTTP API and a web page (FastAPI + uvicorn,
the ``serve`` extra: ``pip install 'mask2former[serve]'``).

- :mod:`.settings`: the limits (:class:`ServeSettings`) and how to run (:class:`ServerOptions`).
- :mod:`.batcher`: the bounded queue and the worker thread that runs queued requests together.
- :mod:`.upload`: the request body read and parsed in memory, under a size limit.
- :mod:`.app`: the FastAPI application (:func:`~.app.build_app`).
- :mod:`.server`: loading the model and running uvicorn (:func:`~.server.run_server`).

Only :mod:`.app` and :mod:`.server` need the extra, and they import it when called, so this
package (and ``mask2former serve --help``) loads without it.
"""

from __future__ import annotations

from .settings import ServerOptions, ServeSettings

__all__ = ["ServeSettings", "ServerOptions", "build_app", "run_server"]


def __getattr__(name: str):
    # Lazy: the app and the server pull in FastAPI, which is an optional extra.
    if name == "build_app":
        from .app import build_app

        return build_app
    if name == "run_server":
        from .server import run_server

        return run_server
    raise AttributeError(f"module 'mask2former.serve' has no attribute {name!r}")
