"""Training curves: read the JSON-lines logs of one or more runs and draw them in one PNG.

A run is a folder (its ``log.jsonl``, else ``training_log.jsonl`` as the built-in models ship
it, else ``pretrain_log.jsonl``) or a ``.jsonl`` file. Each line is one record with an integer
``step``: the trainer's window records (``loss``, ``lr``, ``loss_*`` terms, ``grad_norm``, speed),
its evaluation records (``eval/PQ``, ``eval/AP``, ``eval/mIoU``...; ``eval/error`` is text) and
the pretrainer's (``loss``, ``lr``, ``accuracy``...). Every numeric value gets a panel, one line
per run, the same colour for a run in every panel.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..evaluation.plot import check_plot_path, new_figure, require_matplotlib, save_png

__all__ = ["RunLog", "find_log", "read_log", "plot_curves", "LOG_NAMES"]

#: The log files a run folder may hold, in the order they are looked for.
LOG_NAMES = ("log.jsonl", "training_log.jsonl", "pretrain_log.jsonl")
# Bookkeeping, not curves: the speed depends on the machine, "seconds" is wall-clock time.
_NOT_PLOTTED = {"step", "steps_per_s", "seconds"}
_TITLES = {"loss": "loss (total)", "lr": "learning rate", "grad_norm": "gradient norm"}


@dataclass
class RunLog:
    """One run's curves: ``series[key] = (steps, values)``, non-finite values left out."""

    name: str
    path: str
    series: Dict[str, Tuple[List[int], List[float]]] = field(default_factory=dict)


def find_log(run: str) -> Path:
    """The log file of ``run``: the path itself if it is a file, else the first of
    :data:`LOG_NAMES` in the folder."""
    path = Path(run)
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"{run}: no such run folder or log file")
    for name in LOG_NAMES:
        if (path / name).is_file():
            return path / name
    raise FileNotFoundError(f"{run}: no {', '.join(LOG_NAMES)} in this folder")


def _plotted(key: str) -> bool:
    """Keys whose values must be numbers: the ones the trainer writes as numbers. Unknown keys
    with other values are skipped, so a future log field does not make old tools refuse."""
    return key in ("loss", "lr", "grad_norm") or key.startswith(("loss_", "eval/"))


def _number(key: str, value: Any, where: str) -> Optional[float]:
    """``value`` as a finite float; None for null, NaN and infinities (the trainer writes those
    as "NaN"/"inf" strings: a float16 run's skipped steps), which leave a gap in the curve."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value)  # "NaN", "inf", "-inf" from json_line
        except ValueError:
            if _plotted(key) and key != "eval/error":
                raise ValueError(f"{where}: {key!r} is {value!r}, not a number") from None
            return None
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        if _plotted(key):
            raise ValueError(f"{where}: {key!r} is {json.dumps(value)[:40]}, not a number")
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _parse_line(line: str, where: str) -> Dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(record, dict):
        raise ValueError(f"{where}: not a JSON object")
    step = record.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"{where}: no step (a whole number of 0 or more) in the record")
    return record


def read_log(path: str, name: Optional[str] = None) -> RunLog:
    """Read and check a log file; a bad line raises ValueError naming the file and line."""
    log = RunLog(name or Path(path).stem, str(path))
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file (UTF-8 JSON lines expected)") from None
    records = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue  # blank lines (a trailing newline, a hand edit) carry nothing
        where = f"{path} line {number}"
        record = _parse_line(line, where)
        records += 1
        for key, raw in record.items():
            if key in _NOT_PLOTTED:
                continue
            value = _number(key, raw, where)
            if value is not None:
                steps, values = log.series.setdefault(key, ([], []))
                steps.append(record["step"])
                values.append(value)
    if not records:
        raise ValueError(f"{path}: no log records (an empty log)")
    return log


def _run_name(run: str, log_path: Path) -> str:
    """The legend's name: the run folder's name ("." resolved; "(pretrain)" added for a
    backbone pretraining log, often drawn beside its model's), or a file's own stem when it is
    not one of the standard log names."""
    if log_path.name not in LOG_NAMES:
        return log_path.stem
    name = log_path.resolve().parent.name or str(run)
    return f"{name} (pretrain)" if log_path.name == "pretrain_log.jsonl" else name


def read_runs(runs: Sequence[str]) -> List[RunLog]:
    """The logs of ``runs``, with names that are unique in the legend."""
    logs = []
    for run in runs:
        path = find_log(run)
        logs.append(read_log(str(path), _run_name(run, path)))
    names = [log.name for log in logs]
    for i, log in enumerate(logs):
        if names.count(log.name) > 1:  # two folders called "run": show what the user typed
            log.name = runs[i]
    seen: Dict[str, int] = {}
    for log in logs:  # the same path given twice
        seen[log.name] = seen.get(log.name, 0) + 1
        if seen[log.name] > 1:
            log.name = f"{log.name} ({seen[log.name]})"
    return logs


def _panel_keys(logs: Sequence[RunLog]) -> List[str]:
    """The panels, in reading order: total loss, its terms, learning rate, gradient norm, the
    evaluation metrics, then anything else numeric (the pretrainer's accuracies)."""
    keys: List[str] = []
    for log in logs:
        keys.extend(k for k in log.series if k not in keys)

    def rank(key: str) -> int:
        if key == "loss":
            return 0
        if key.startswith("loss_"):
            return 1
        if key in ("lr", "grad_norm"):
            return 2 + (key == "grad_norm")
        return 4 if key.startswith("eval/") else 5

    return sorted(keys, key=rank)  # stable: first appearance within each group


def _draw(figure: Any, logs: Sequence[RunLog], keys: Sequence[str], columns: int) -> None:
    rows = math.ceil(len(keys) / columns)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    colours = [f"C{i % 10}" for i in range(len(logs))]
    for ax, key in zip(axes, keys):
        for log, colour in zip(logs, colours):
            if key not in log.series:
                continue
            steps, values = log.series[key]
            # Evaluations are few points: markers show where they were taken.
            marker = "o" if key.startswith("eval/") or len(steps) < 20 else None
            ax.plot(steps, values, color=colour, marker=marker, markersize=3, linewidth=1.2)
        title = _TITLES.get(key, key.replace("eval/", "eval ") if "/" in key else key)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel(key, fontsize=8)
        ax.tick_params(labelsize=8)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))
        ax.grid(alpha=0.3)
    for ax in axes[len(keys) :]:
        ax.set_visible(False)
    # One legend for the figure: the same run has the same colour in every panel.
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c) for c in colours]
    figure.legend(handles, [log.name for log in logs], loc="outside upper center",
                  ncols=min(len(logs), 4), fontsize=9)  # fmt: skip


def plot_curves(
    runs: Sequence[str],
    out: str,
    overwrite: bool = False,
    width: int = 1500,
    height: Optional[int] = None,
    columns: int = 3,
) -> List[RunLog]:
    """Draw the curves of ``runs`` (folders or .jsonl files) into the PNG ``out``, ``width`` x
    ``height`` pixels (height default: 300 per row of panels). An existing ``out`` is refused
    unless ``overwrite``. Returns the logs that were drawn."""
    if not runs:
        raise ValueError("no runs to plot")
    check_plot_path(out, overwrite)
    require_matplotlib()
    logs = read_runs(runs)
    keys = _panel_keys(logs)
    if not keys:
        raise ValueError("the logs have no numeric values to plot")
    columns = max(1, min(columns, len(keys)))
    if height is None:
        height = 300 * math.ceil(len(keys) / columns) + 60  # + the legend
    figure = new_figure(width, height)
    _draw(figure, logs, keys, columns)
    save_png(figure, os.fspath(out), overwrite=overwrite)
    return logs
