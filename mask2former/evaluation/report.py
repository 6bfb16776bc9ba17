"""Shared output helpers of the evaluators: terminal tables and JSON files.

Metrics are reported in percent (0-100) as detectron2 does. An undefined metric (no ground truth
and no prediction of a class) is ``NaN`` in memory and ``null`` in JSON, because strict JSON has no
NaN.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from ..files import write_json as write_json_file

__all__ = ["format_table", "to_jsonable", "write_json"]


def to_jsonable(obj: Any) -> Any:
    """Recursively turn numpy scalars/arrays into Python ones and non-finite floats into None."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        value = float(obj)
        return value if math.isfinite(value) else None
    return obj


def write_json(path: Union[str, Path], result: Any, overwrite: bool = True) -> None:
    """Write ``result`` as indented JSON through the package's safe writer."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_file(path, to_jsonable(result), indent=2, overwrite=overwrite)


def _cell(value: Any) -> str:
    """A table cell: floats with 2 decimals, NaN/None as '-', anything else via str."""
    if value is None:
        return "-"
    if isinstance(value, (float, np.floating)):
        return "-" if not math.isfinite(float(value)) else f"{float(value):.2f}"
    return str(value)


def format_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], title: Optional[str] = None
) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned.

    >>> print(format_table(["", "PQ"], [["All", 51.234]]))
    |     |    PQ |
    |-----|-------|
    | All | 51.23 |
    """
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row)]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths))
        ]
        return "| " + " | ".join(parts) + " |"

    out = [] if title is None else [title]
    out.append(line(list(headers)))
    out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    out.extend(line(row) for row in cells)
    return "\n".join(out)
