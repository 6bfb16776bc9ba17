"""Pictures of results: the per-class bar chart of ``evaluate --plot``, and the figure helpers
that :mod:`mask2former.training.curves` shares.

matplotlib is an optional extra (``pip install 'mask2former[plot]'``), imported only when a
figure is drawn. Figures are drawn on matplotlib's Agg canvas directly, without ``pyplot``: no
global backend switch (a notebook that imports this package keeps its own), no GUI, no figure
registry to leak. PNGs are rendered in memory and written by :func:`mask2former.files.write_bytes`,
so an existing file is replaced only when asked and an interrupted write leaves no half file.
"""

from __future__ import annotations

import io
import math
import os
from typing import Any, Dict, List, Optional, Tuple

from ..files import check_output_file, write_bytes

__all__ = [
    "PLOT_EXTRA",
    "require_matplotlib",
    "new_figure",
    "check_plot_path",
    "save_png",
    "per_class_values",
    "plot_results",
]

PLOT_EXTRA = "plotting needs the plot extra: pip install 'mask2former[plot]'"
DPI = 100  # pixels per inch of the figures: sizes in pixels are what users ask for


def require_matplotlib() -> None:
    """Raise the one-line ImportError of the plot extra if matplotlib cannot be imported, so a
    long evaluation is not run only to fail when its figure is drawn."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    except ImportError:
        raise ImportError(PLOT_EXTRA) from None


def new_figure(width: int, height: int) -> Any:
    """A ``width`` x ``height`` pixel matplotlib Figure on an Agg canvas, laid out by
    matplotlib's constrained layout (labels never overlap, whatever the panel count)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(PLOT_EXTRA) from None
    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def check_plot_path(path: str, overwrite: bool, option: str = "--out") -> None:
    """Refuse an output file that cannot or must not be written, before any work is done."""
    check_output_file(path, overwrite, option, name_hint="a .png file name")


def save_png(figure: Any, path: str, overwrite: bool = False) -> None:
    """Render ``figure`` as PNG in memory and write it through the safe writer. No
    ``bbox_inches="tight"``: the file keeps exactly the figure's pixel size."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    write_bytes(path, buffer.getvalue(), overwrite=overwrite)


def _finite(value: Any) -> Optional[float]:
    """A plottable number, or None (a JSON ``null`` or a NaN: a class with nothing to score)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


# task -> (the per-class value that is drawn, the task's headline metric)
_METRICS = {"panoptic": ("PQ", "PQ"), "instance": ("AP", "AP"), "semantic": ("IoU", "mIoU")}


def per_class_values(results: Dict[str, Dict[str, Any]]) -> List[Tuple[str, str, Dict, Dict]]:
    """``(title, metric, {class: value or None}, {class: is a thing})`` for each task of ``results``
    (``EvaluationReport.results``) that has per-class results: panoptic PQ, instance mask AP
    (a bare number per class) and semantic IoU."""
    panels = []
    # Only panoptic results say which classes are things; the other panels borrow that.
    panoptic = (results.get("panoptic") or {}).get("per_class") or {}
    known = {n: bool(e.get("isthing", 1)) for n, e in panoptic.items() if isinstance(e, dict)}
    for task, (metric, headline) in _METRICS.items():
        per_class = (results.get(task) or {}).get("per_class") or {}
        if not per_class:
            continue
        values, things = {}, {}
        for name, entry in per_class.items():
            is_dict = isinstance(entry, dict)
            values[name] = _finite(entry.get(metric) if is_dict else entry)
            things[name] = known.get(name, True)
        total = _finite(results[task].get(headline))
        shown = "-" if total is None else f"{total:.1f}"
        panels.append((f"{task}: {metric} per class ({headline} {shown})", metric, values, things))
    return panels


def plot_results(results: Dict[str, Dict[str, Any]], path: str, overwrite: bool = False) -> None:
    """Write a PNG of per-class bar charts, one panel per task, to ``path``."""
    panels = per_class_values(results)
    if not panels:
        raise ValueError("the evaluation has no per-class results to plot")
    rows = max(len(values) for _, _, values, _ in panels)
    # Wide enough for class names beside the bars, tall enough for ~20 px a bar.
    figure = new_figure(460 * len(panels), max(360, 22 * rows + 120))
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, metric, values, things) in zip(axes, panels):
        names = list(values)
        heights = [values[n] or 0.0 for n in names]
        # Things and stuff in two colours: a panoptic model's weak spot is usually one kind.
        colours = ["tab:blue" if things[n] else "tab:olive" for n in names]
        bars = ax.barh(range(len(names)), heights, color=colours)
        labels = ["-" if values[n] is None else f"{values[n]:.1f}" for n in names]
        ax.bar_label(bars, labels=labels, padding=2, fontsize=8)
        ax.set_yticks(range(len(names)), labels=names, fontsize=8)
        ax.set_ylim(rows - 0.5, -0.5)  # the first class on top; one bar size in every panel
        ax.set_xlim(0, 110)  # metrics are percentages; room for the value labels
        ax.set_xlabel(f"{metric} (%)")
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    if not all(t for _, _, _, things in panels for t in things.values()):
        from matplotlib.patches import Patch

        kinds = [Patch(color="tab:blue", label="thing"), Patch(color="tab:olive", label="stuff")]
        figure.legend(handles=kinds, loc="outside lower center", ncols=2, fontsize=8)
    save_png(figure, path, overwrite=overwrite)
