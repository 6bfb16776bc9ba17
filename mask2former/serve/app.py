"""The HTTP service: :func:`build_app` puts a pipeline behind FastAPI.

Routes: ``POST /v1/segment`` (the ``segment`` command's JSON record of one uploaded image;
``?overlay=1`` adds the overlay PNG), ``POST /v1/overlay`` (the PNG itself), ``GET /v1/model``,
``GET /healthz``, the web page at ``/`` and the OpenAPI docs at ``/docs``. Every error is
JSON, ``{"error": "..."}``: 400 for a bad upload or option, 413 for a body over the limit, 503
when the queue is full, 500 if the model fails on an image (the server keeps running).
"""

# No ``from __future__ import annotations`` here: FastAPI reads the route functions'
# annotations (``Request``), which are imported inside the function that defines them.
import asyncio
import base64
import io
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ..config import TASKS
from ..inference.images import ImageError
from ..inference.options import TaskOptions
from ..inference.outputs import image_record
from ..inference.results import SegmentationResult
from ..visualize import draw_overlay, instance_color
from .batcher import Batcher, QueueFull, ShuttingDown
from .settings import ServeSettings
from .upload import FIELDS, RequestError, decode_image, parse_form, read_body, task_options

__all__ = ["build_app", "overlay_colors", "STATIC_FILES"]

_log = logging.getLogger("mask2former.serve")

#: The web page's files (package data under ``static/``) and their media types.
STATIC_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {
                        "image": {"type": "string", "format": "binary"},
                        "task": {"type": "string", "enum": list(TASKS)},
                        "threshold": {"type": "number", "minimum": 0, "maximum": 1},
                    },
                }
            }
        },
    }
}


def overlay_colors(result: SegmentationResult) -> Dict[str, str]:
    """Segment id -> "#rrggbb", the colour :func:`~mask2former.visualize.draw_overlay` gives it
    (its class colour, a shade of it for the 2nd, 3rd, ... segment of a class)."""
    seen: Dict[int, int] = {}
    colors = {}
    for segment in result.segments:
        label = int(segment["label_id"])
        r, g, b = instance_color(label, seen.get(label, 0))
        seen[label] = seen.get(label, 0) + 1
        colors[str(segment["id"])] = f"#{r:02x}{g:02x}{b:02x}"
    return colors


@dataclass
class _Segmented:
    """One answered upload: its file name, decoded image and result."""

    filename: str
    image: np.ndarray
    result: SegmentationResult


class _Service:
    """What the routes share: the pipeline, its batcher and the limits."""

    def __init__(self, pipeline: Any, settings: ServeSettings) -> None:
        self.pipeline = pipeline
        self.settings = settings
        self.batcher = Batcher(pipeline, settings.max_batch, settings.queue_size)

    def _prepare(
        self, content_type: Optional[str], body: bytes
    ) -> Tuple[str, np.ndarray, TaskOptions]:
        """Parse the form, check the options (cheap) before decoding the image."""
        upload = parse_form(content_type, body)
        options = task_options(self.pipeline.info, upload.fields)
        try:
            image = decode_image(upload.data, upload.filename)
        except ImageError as e:
            raise RequestError(400, str(e)) from None
        return upload.filename, image, options

    async def segment(self, request: Any) -> _Segmented:
        """Read, check and decode the upload, queue it, and wait for its result."""
        from starlette.concurrency import run_in_threadpool

        if self.batcher.full:  # refuse early, before reading and decoding (submit rechecks)
            raise RequestError(
                503, f"server busy: {self.batcher.waiting} requests waiting; try again later"
            )
        limit = self.settings.max_upload_bytes
        body = await read_body(request.headers, request.stream(), limit)
        content_type = request.headers.get("content-type")
        # Parsing and decoding are CPU work: off the event loop, which keeps serving.
        filename, image, options = await run_in_threadpool(self._prepare, content_type, body)
        try:
            future = self.batcher.submit(image, options)
        except QueueFull as e:
            raise RequestError(503, f"{e}; try again later") from None
        except ShuttingDown as e:
            raise RequestError(503, str(e)) from None
        try:
            result = await asyncio.wrap_future(future)
        except ShuttingDown as e:
            raise RequestError(503, str(e)) from None
        except ValueError as e:  # the model refuses this input (e.g. an ONNX graph's bounds)
            raise RequestError(400, f"{filename}: {e}") from None
        except Exception as e:
            # The client gets one line; the server's log keeps the traceback.
            _log.error("segmentation of %s failed", filename, exc_info=e)
            message = f"{filename}: segmentation failed ({type(e).__name__}: {e})"
            raise RequestError(500, message) from e
        return _Segmented(filename, image, result)

    def overlay_png(self, done: _Segmented) -> bytes:
        result = done.result
        picture = draw_overlay(
            done.image, result.segmentation, result.segments, self.pipeline.info.id2label
        )
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        return buffer.getvalue()

    def record(self, done: _Segmented, overlay: bool) -> Dict[str, Any]:
        """The ``segment`` command's record; with ``overlay`` also the PNG and its colours."""
        record = image_record(done.filename, done.result, self.pipeline.name)
        if overlay:
            record["overlay_png"] = base64.b64encode(self.overlay_png(done)).decode("ascii")
            record["overlay_colors"] = overlay_colors(done.result)
        return record

    def model(self) -> Dict[str, Any]:
        from ..inference.onnx_runner import OnnxRunner

        info, processor = self.pipeline.info, self.pipeline.processor
        return {
            "model": self.pipeline.name,
            "backend": "onnxruntime" if isinstance(self.pipeline.runner, OnnxRunner) else "torch",
            "task": info.task,
            "tasks": list(TASKS),
            "threshold": info.threshold,
            "labels": {str(k): v for k, v in sorted(info.id2label.items())},
            "stuff_label_ids": list(info.stuff_label_ids),
            "input_size": getattr(processor, "size", None),
            "size_divisor": getattr(processor, "size_divisor", None),
            "fields": list(FIELDS),
            "limits": {
                "max_batch": self.settings.max_batch,
                "queue_size": self.settings.queue_size,
                "max_upload_bytes": self.settings.max_upload_bytes,
            },
        }


def build_app(pipeline: Any, settings: Optional[ServeSettings] = None) -> Any:
    """The FastAPI application of a loaded pipeline
    (:class:`~mask2former.inference.pipeline.Pipeline`) under ``settings``' limits."""
    from fastapi import FastAPI

    from .. import __version__

    service = _Service(pipeline, settings or ServeSettings())

    @asynccontextmanager
    async def lifespan(app):
        yield
        service.batcher.stop()

    app = FastAPI(
        title="mask2former",
        version=__version__,
        description="Mask2Former image segmentation: upload an image, get its segments.",
        lifespan=lifespan,
    )
    app.state.service = service
    _add_error_handlers(app)
    _add_api(app, service)
    _add_page(app)
    return app


def _error(status: int, message: str, headers: Optional[Dict[str, str]] = None) -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _add_error_handlers(app: Any) -> None:
    """Every error as ``{"error": "..."}``: ours, FastAPI's validation and routing errors, and,
    as a last resort, anything unexpected (a 500, never a dead server)."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    @app.exception_handler(RequestError)
    async def request_error(request, exc: RequestError):
        headers = {"Retry-After": "1"} if exc.status == 503 else None
        return _error(exc.status, exc.message, headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc: RequestValidationError):
        problems = [
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}"
            for e in exc.errors()
        ]
        return _error(400, "; ".join(problems) or "bad request")

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request, exc: Exception):
        return _error(500, f"internal error ({type(exc).__name__}: {exc})")


def _add_api(app: Any, service: _Service) -> None:
    from fastapi import Query, Request
    from fastapi.responses import Response
    from starlette.concurrency import run_in_threadpool

    overlay_query = Query(False, description="also return the overlay PNG, base64")

    @app.post("/v1/segment", openapi_extra=UPLOAD_BODY, summary="Segment an image (JSON)")
    async def segment(request: Request, overlay: bool = overlay_query):
        done = await service.segment(request)
        return await run_in_threadpool(service.record, done, overlay)

    @app.post(
        "/v1/overlay",
        openapi_extra=UPLOAD_BODY,
        summary="Segment an image (overlay PNG)",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}},
    )
    async def overlay(request: Request):
        done = await service.segment(request)
        png = await run_in_threadpool(service.overlay_png, done)
        return Response(png, media_type="image/png")

    @app.get("/v1/model", summary="The model: labels, task, input size, backend")
    async def model():
        return service.model()

    @app.get("/healthz", summary="Liveness and queue length")
    async def healthz():
        batcher = service.batcher
        return {"status": "ok", "waiting": batcher.waiting, "batches": batcher.batches}


def _read_static(name: str) -> bytes:
    return (resources.files("mask2former.serve") / "static" / name).read_bytes()


def _add_page(app: Any) -> None:
    """The web page: package data read once, served from memory (works offline)."""
    from fastapi.responses import Response

    files = {name: _read_static(name) for name in STATIC_FILES}

    @app.get("/", include_in_schema=False)
    async def index():
        return Response(files["index.html"], media_type=STATIC_FILES["index.html"])

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str):
        if name not in files:
            return _error(404, f"no such file: {name}")
        return Response(files[name], media_type=STATIC_FILES[name])
