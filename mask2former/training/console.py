"""What the training commands print besides their results: one-line notes and warnings.

Libraries warn in their own format (``/path/file.py:123: UserWarning: ...`` and the source
line), which in a terminal reads like a crash. While a command trains, :func:`one_line_warnings`
prints every warning as ``mask2former CMD: note: <first line>``; the trainer itself drops the
ones that are expected and say nothing to the user. Warnings stay warnings: code that records
them (tests, ``warnings.catch_warnings``) still sees them.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from typing import Iterator

__all__ = ["note", "warn", "one_line_warnings"]


def _first_line(text: str, fallback: str) -> str:
    lines = str(text).strip().splitlines()
    return lines[0] if lines else fallback


def note(command: str, message: str) -> None:
    """Print ``mask2former COMMAND: note: MESSAGE`` (one line) to stderr."""
    print(f"mask2former {command}: note: {_first_line(message, '')}", file=sys.stderr)


def warn(command: str, message: str) -> None:
    """Print ``mask2former COMMAND: warning: MESSAGE`` (one line) to stderr: something that is
    allowed but is probably not what the user meant."""
    print(f"mask2former {command}: warning: {_first_line(message, '')}", file=sys.stderr)


@contextlib.contextmanager
def one_line_warnings(command: str) -> Iterator[None]:
    """Within the block, warnings print as one-line notes."""

    def format_warning(message, category, filename, lineno, line=None) -> str:
        return f"mask2former {command}: note: {_first_line(message, category.__name__)}\n"

    previous = warnings.formatwarning
    warnings.formatwarning = format_warning
    try:
        yield
    finally:
        warnings.formatwarning = previous
