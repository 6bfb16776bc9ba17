"""A request's upload, read and parsed in memory: the body under a size limit, its
multipart/form-data parts, the image decoded from bytes and the task options checked.

Nothing touches the disk (the usual form parsers spool large files to temporary files), and
every problem is a :class:`RequestError` with the HTTP status and a message naming it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Dict, List, Optional

import numpy as np

from ..inference.images import load_image_bytes
from ..inference.options import ModelInfo, TaskOptions, check_request

__all__ = [
    "RequestError",
    "Upload",
    "FIELDS",
    "read_body",
    "parse_form",
    "decode_image",
    "task_options",
]

#: The form fields of an upload: the image file and the optional request options.
FIELDS = ("image", "task", "threshold")
MAX_PARTS = 8  # a form has three fields; more is a mistake or an attack, not a request


class RequestError(Exception):
    """A bad request: ``status`` (400, 413, ...) and a one-line ``message`` for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Upload:
    """The parsed form: the image's bytes and file name, and the text fields."""

    data: bytes = b""
    filename: str = "upload"
    fields: Dict[str, str] = field(default_factory=dict)


async def read_body(headers: Any, stream: AsyncIterator[bytes], limit: int) -> bytes:
    """The whole body (``headers``: the request's, by lower-case name), or 413 as soon as it is known to pass ``limit`` bytes (from the
    Content-Length header before reading, else while reading)."""
    length = headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise RequestError(400, f"bad Content-Length header {length!r}")
        if int(length) > limit:
            raise RequestError(413, _too_large(int(length), limit))
    chunks: List[bytes] = []
    size = 0
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            raise RequestError(413, _too_large(size, limit))
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int, limit: int) -> str:
    return f"upload too large: {size} bytes, the limit is {limit} bytes ({limit / 2**20:.3g} MiB)"


class _Parts:
    """The callbacks of python-multipart's streaming parser, collecting parts in memory."""

    def __init__(self) -> None:
        self.parts: List[Dict[str, Any]] = []
        self._header = b""
        self._value = b""

    def callbacks(self) -> Dict[str, Any]:
        return {
            "on_part_begin": self._begin,
            "on_header_field": lambda d, s, e: self._add("_header", d[s:e]),
            "on_header_value": lambda d, s, e: self._add("_value", d[s:e]),
            "on_header_end": self._header_end,
            "on_part_data": lambda d, s, e: self.parts[-1]["data"].extend(d[s:e]),
        }

    def _add(self, name: str, data: bytes) -> None:
        setattr(self, name, getattr(self, name) + data)

    def _begin(self) -> None:
        if len(self.parts) >= MAX_PARTS:
            raise RequestError(400, f"too many form fields (expected {', '.join(FIELDS)})")
        self.parts.append({"headers": {}, "data": bytearray()})

    def _header_end(self) -> None:
        self.parts[-1]["headers"][self._header.lower()] = self._value
        self._header = self._value = b""


def parse_form(content_type: Optional[str], body: bytes) -> Upload:
    """The image and fields of a multipart/form-data body (400 for anything else)."""
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import MultipartParser, parse_options_header

    kind, params = parse_options_header(content_type or "")
    if kind != b"multipart/form-data" or not params.get(b"boundary"):
        raise RequestError(
            400, "expected a multipart/form-data upload with the image in the field 'image'"
        )
    collected = _Parts()
    try:
        parser = MultipartParser(params[b"boundary"], collected.callbacks())
        parser.write(body)
        parser.finalize()
    except (FormParserError, ValueError) as e:
        raise RequestError(400, f"malformed multipart/form-data body ({e})") from None
    upload, found = Upload(), False
    for part in collected.parts:
        _, options = parse_options_header(part["headers"].get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if name not in FIELDS:
            raise RequestError(400, f"unknown form field {name!r} (expected {', '.join(FIELDS)})")
        if name == "image":
            found = True
            upload.data = bytes(part["data"])
            upload.filename = options.get(b"filename", b"upload").decode("utf-8", "replace")
        else:
            upload.fields[name] = part["data"].decode("utf-8", "replace").strip()
    if not found:
        raise RequestError(400, "no image: send the file in the multipart field 'image'")
    return upload


def decode_image(data: bytes, name: str) -> np.ndarray:
    """An upload's bytes as :func:`~mask2former.inference.images.load_image` returns a file:
    (H, W, 3) uint8 RGB, upright, size-checked; :class:`ImageError` naming ``name`` else."""
    return load_image_bytes(data, name)


def task_options(info: ModelInfo, fields: Dict[str, str]) -> TaskOptions:
    """The request's task and threshold (empty or absent: the model's own), checked."""
    task = fields.get("task") or None
    threshold: Optional[float] = None
    text = fields.get("threshold") or ""
    if text:
        try:
            threshold = float(text)
        except ValueError:
            raise RequestError(400, f"threshold must be a number in [0, 1], got {text!r}") from None
        if not math.isfinite(threshold):
            raise RequestError(400, f"threshold must be a number in [0, 1], got {text!r}")
    try:
        check_request(task, threshold)
    except ValueError as e:
        raise RequestError(400, str(e)) from None
    return info.options(task=task, threshold=threshold)
