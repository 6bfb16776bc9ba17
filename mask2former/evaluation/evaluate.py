"""``evaluate`` as a library call: a model name and a dataset in, metrics (and files) out."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..files import check_output_file
from ..inference.options import TASKS
from ..inference.pipeline import build_pipeline
from .coco_ap import CocoMaskAPEvaluator
from .miou import SemanticSegmentationEvaluator
from .pq import PanopticQualityEvaluator
from .report import write_json
from .runner import evaluate_pipeline

__all__ = [
    "EvaluationReport",
    "evaluate",
    "evaluate_predictions",
    "check_outputs",
    "default_tasks",
]

_TABLES = {
    "panoptic": PanopticQualityEvaluator.format_table,
    "instance": CocoMaskAPEvaluator.format_table,
    "semantic": SemanticSegmentationEvaluator.format_table,
}


@dataclass
class EvaluationReport:
    """What an evaluation found, with the settings that produced it (``predictions``: the
    saved predictions scored instead of a model; ``model``, ``dtype`` and ``threshold`` are then
    None)."""

    model: Optional[str]
    data: str
    seed: Optional[int]
    dtype: Optional[str]
    threshold: Optional[float]
    detections: int
    results: Dict[str, Dict[str, Any]]
    seconds: float = 0.0
    predictions: Optional[str] = None

    def summary(self) -> Dict[str, Any]:
        """The JSON document of ``--json``."""
        head: Dict[str, Any] = {"model": self.model}
        if self.predictions is not None:
            head = {"predictions": self.predictions}
        return {
            **head,
            "data": self.data,
            "seed": self.seed,
            **({"dtype": self.dtype} if self.dtype is not None else {}),
            **({"panoptic_threshold": self.threshold} if self.threshold is not None else {}),
            "instance_detections": self.detections,
            "results": self.results,
        }

    def tables(self, per_class: bool = False) -> str:
        return "\n\n".join(_TABLES[t](r, per_class=per_class) for t, r in self.results.items())

    def headline(self) -> str:
        parts = []
        if "panoptic" in self.results:
            pq = self.results["panoptic"]["PQ"]
            setting = "" if self.threshold is None else f" (threshold {self.threshold:g})"
            parts.append(f"PQ {pq:.1f}{setting}")
        if "instance" in self.results:
            parts.append(f"mask AP {self.results['instance']['AP']:.1f}")
        if "semantic" in self.results:
            parts.append(f"mIoU {self.results['semantic']['mIoU']:.1f}")
        return f"{', '.join(parts)} ({self.seconds:.0f}s)"


def check_outputs(
    json_path: Optional[str], folder: Optional[str], overwrite: bool, plot: Optional[str] = None
) -> None:
    """Output problems are found before the model runs, not after the whole evaluation."""
    if json_path:
        check_output_file(json_path, overwrite, "--json")
    if plot:
        from .plot import check_plot_path, require_matplotlib

        check_plot_path(plot, overwrite, option="--plot")
        require_matplotlib()  # a missing extra is found now, not after the evaluation
    if folder:
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise NotADirectoryError(f"--save-predictions {folder} is a file")
        if os.path.isdir(folder) and os.listdir(folder) and not overwrite:
            raise FileExistsError(
                f"--save-predictions {folder} is not empty (use --overwrite to replace its files)"
            )


def default_tasks(data: str) -> List[str]:
    """The tasks a dataset supports: all with panoptic data, else its one kind."""
    if data == "shapes" or (Path(data) / "panoptic.json").is_file():
        return list(TASKS)
    if (Path(data) / "semantic").is_dir():
        return ["semantic"]
    return ["instance"]


def evaluate(
    model: str = "shapes",
    data: str = "shapes",
    tasks: Optional[Sequence[str]] = None,
    json_path: Optional[str] = None,
    save_predictions: Optional[str] = None,
    overwrite: bool = False,
    num: int = 200,
    seed: int = 12345,
    max_images: Optional[int] = None,
    batch_size: int = 4,
    threshold: Optional[float] = None,
    detections: int = 100,
    device: str = "cpu",
    dtype: str = "float32",
    backend: Optional[str] = None,
    progress: bool = True,
    plot: Optional[str] = None,
    ap_backend: str = "auto",
) -> EvaluationReport:
    """Evaluate a model (built-in name, folder or hub id) on a dataset (folder, or "shapes" for
    ``num`` generated images from ``seed``); see :func:`~.runner.evaluate_model` for the test
    settings; ``backend`` as :func:`~mask2former.inference.pipeline.build_pipeline`. ``threshold`` defaults to the model's ``object_mask_threshold``, else 0.8.
    Writes ``json_path``, ``save_predictions`` and ``plot`` (a PNG of per-class bar charts) when
    given (refused up front when they exist, unless ``overwrite``). ``ap_backend``: the COCOeval
    of mask AP (:mod:`.backends`)."""
    from ..data.loading import check_labels, open_dataset
    from .backends import choose_ap_backend

    check_outputs(json_path, save_predictions, overwrite, plot=plot)
    choose_ap_backend(ap_backend)  # an unknown or missing backend is refused before the model
    start = time.perf_counter()
    pipeline = build_pipeline(model, device=device, dtype=dtype, backend=backend)
    info = pipeline.info
    if threshold is None:
        threshold = 0.8 if info.object_mask_threshold is None else info.object_mask_threshold
    tasks = list(tasks or default_tasks(data))
    dataset = open_dataset(data, task=tasks[0], num=num, seed=seed, num_labels=len(info.id2label))
    check_labels(info.id2label, dataset)
    results = evaluate_pipeline(
        pipeline,
        dataset,
        tasks=[t for t in TASKS if t in tasks],
        batch_size=batch_size,
        threshold=threshold,
        detections=detections,
        max_images=max_images,
        save_predictions=save_predictions,
        progress=progress,
        ap_backend=ap_backend,
    )
    report = EvaluationReport(
        model=str(model),
        data=str(data),
        seed=seed if data == "shapes" else None,
        dtype=dtype,
        threshold=threshold,
        detections=detections,
        results=results,
    )
    return _finish(report, json_path, plot, overwrite, start)


def evaluate_predictions(
    predictions: str,
    data: str = "shapes",
    tasks: Optional[Sequence[str]] = None,
    json_path: Optional[str] = None,
    overwrite: bool = False,
    num: int = 200,
    seed: int = 12345,
    max_images: Optional[int] = None,
    detections: int = 100,
    ap_backend: str = "auto",
    progress: bool = True,
    plot: Optional[str] = None,
) -> EvaluationReport:
    """Score saved predictions (see :mod:`.saved` for the layouts: ``evaluate
    --save-predictions``' folder, panopticapi's JSON + PNG folder, a COCO results JSON) on a
    dataset, as :func:`evaluate` scores a model; no model is loaded. ``tasks``: default, those
    both the dataset and the predictions have. ``ap_backend``: the COCOeval of mask AP (see
    :mod:`.backends`; "auto" is the fastest installed, all agree with pycocotools).

    Raises:
        PredictionsError: predictions that do not match the dataset (file and field named),
            before any scoring.
        FileNotFoundError / DatasetError / ValueError: a missing path, a broken dataset, an
            output that exists.
    """
    from ..data.loading import open_dataset
    from .backends import choose_ap_backend
    from .from_files import label_space_categories, score_predictions
    from .saved import PredictionsError, dataset_keys, find_prediction_files, read_predictions

    check_outputs(json_path, None, overwrite, plot=plot)
    if "instance" in (tasks or ["instance"]):
        choose_ap_backend(ap_backend)  # an unknown or missing backend is refused now
    start = time.perf_counter()
    files = find_prediction_files(predictions)
    if tasks:
        tasks = [t for t in TASKS if t in tasks]
    else:
        tasks = [t for t in default_tasks(data) if t in files.tasks()]
        if not tasks:
            raise PredictionsError(
                predictions,
                f"holds {' and '.join(files.tasks())} predictions; the dataset {data} has "
                f"{' and '.join(default_tasks(data))} ground truth",
            )
    dataset = open_dataset(data, task=tasks[0], num=num, seed=seed)
    cats = label_space_categories(dataset)
    keys = dataset_keys(dataset, cats)
    limit = len(dataset) if max_images is None else min(max_images, len(dataset))
    saved = read_predictions(predictions, tasks, keys, limit)
    results = score_predictions(
        dataset, saved, keys, tasks, cats, limit, detections, ap_backend, progress
    )
    report = EvaluationReport(
        model=None,
        data=str(data),
        seed=seed if data == "shapes" else None,
        dtype=None,
        threshold=None,
        detections=detections,
        results=results,
        predictions=str(predictions),
    )
    return _finish(report, json_path, plot, overwrite, start)


def _finish(
    report: EvaluationReport,
    json_path: Optional[str],
    plot: Optional[str],
    overwrite: bool,
    start: float,
) -> EvaluationReport:
    """Write the report's JSON and plot when asked; stamp its time."""
    if json_path:
        write_json(json_path, report.summary(), overwrite=overwrite)
    if plot:
        from .plot import plot_results

        plot_results(report.results, plot, overwrite=overwrite)
    report.seconds = time.perf_counter() - start
    return report
