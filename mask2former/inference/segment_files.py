"""Files in, files out: :func:`segment` finds the inputs, runs them through the pipeline and
writes the outputs.

Every per-image problem (missing, unreadable, not an image, bad size, a failed forward pass, an
unwritable output) becomes one line naming the file and a "failed" count; the run goes on with
the other images.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from .images import ImageError, load_image
from .inputs import collect_inputs, output_names
from .options import TaskOptions, check_request
from .outputs import OutputPaths, prepare_out_dir, read_record, write_coco, write_outputs
from .pipeline import Pipeline, build_pipeline, window_size

__all__ = ["SegmentReport", "segment"]

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class SegmentReport:
    """What a run did: counts, wall time, the JSON files written and the error lines."""

    done: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    outputs: List[str] = field(default_factory=list)
    errors: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def summary(self) -> str:
        return (
            f"{self.done} image(s) segmented, {self.failed} failed, {self.skipped} skipped "
            f"in {self.seconds:.1f} s"
        )


def _check_batch_size(batch_size: Any) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer of at least 1, got {batch_size!r}")


def segment(
    inputs: Union[PathLike, Sequence[PathLike]],
    out_dir: PathLike = "out",
    model: PathLike = "shapes",
    task: Optional[str] = None,
    threshold: Optional[float] = None,
    batch_size: int = 1,
    device: str = "cpu",
    dtype: Optional[str] = None,
    backend: Optional[str] = None,
    label_ids_to_fuse: Optional[Iterable[int]] = None,
    overwrite: bool = False,
    progress: Optional[bool] = None,
    predictor: Any = None,
    log: Optional[Callable[[str], None]] = None,
) -> SegmentReport:
    """Segment image files, folders (recursively) and glob patterns; write results to ``out_dir``.

    Per image ``<name>.overlay.png`` (the picture), ``<name>.ids.png`` (16-bit grey PNG, pixel =
    segment id, 0 = none) and ``<name>.json`` (image, size, task, model, segments with id, label,
    score, area, bbox, was_fused and a COCO RLE mask), where ``<name>`` mirrors the input's path
    relative to the inputs' common folder. With the instance task also ``coco_results.json`` (COCO
    results, as ``COCO.loadRes`` takes them) and ``images.json`` (the matching ``images`` and
    ``categories``; ``category_id`` = the model's label id). Bad inputs are reported one line
    each and skipped; existing outputs are kept unless ``overwrite`` (an image whose JSON is
    missing is incomplete and is redone).

    Args:
        model: built-in name, checkpoint folder or hub id (ignored when ``predictor`` is given).
        task, threshold, label_ids_to_fuse: as :meth:`mask2former.Predictor.predict`; default
            the model's own settings.
        batch_size: images per forward pass (same-size inputs only).
        device, dtype: where and in which precision the model runs.
        backend: "torch" or "onnxruntime" (see :func:`~.pipeline.build_pipeline`).
        progress: show a progress bar (None: only on a terminal).
        predictor: a loaded :class:`mask2former.Predictor` or
            :class:`~mask2former.inference.pipeline.Pipeline` to use instead of ``model``.
        log: receives each message line (default: stderr, above the progress bar).

    Returns:
        A :class:`SegmentReport` (done, failed, skipped, seconds, outputs, errors).
    """
    start = time.perf_counter()
    out_dir = os.fspath(out_dir)
    # Everything that does not depend on an image is checked once, before any work.
    _check_batch_size(batch_size)
    check_request(task, threshold)
    prepare_out_dir(out_dir)
    run = _Run(out_dir, overwrite, log)
    files, errors = collect_inputs(inputs, exclude=out_dir)
    for message in errors:
        run.fail(message)
    if predictor is None:
        pipeline = build_pipeline(model, device=device, dtype=dtype, backend=backend)
    else:
        pipeline = getattr(predictor, "pipeline", predictor)
    options = pipeline.info.options(
        task=task, threshold=threshold, label_ids_to_fuse=label_ids_to_fuse
    )
    todo = run.plan(files, options.task)
    run.start_progress(len(todo), progress)
    window = window_size(batch_size)
    for begin in range(0, len(todo), window):
        run.segment_window(pipeline, todo[begin : begin + window], options, batch_size)
    run.close()
    if options.task == "instance" and run.records:
        write_coco(out_dir, run.records, pipeline.info.id2label)
    run.report.seconds = time.perf_counter() - start
    return run.report


class _Run:
    """The state of one ``segment`` call: its report, progress bar and instance records."""

    def __init__(self, out_dir: str, overwrite: bool, log: Optional[Callable[[str], None]]):
        self.out_dir = out_dir
        self.overwrite = overwrite
        self.log = log
        self.report = SegmentReport()
        self.bar: Any = None
        self.paths: Dict[str, OutputPaths] = {}
        self.records: Dict[str, Dict[str, Any]] = {}  # instance task: for the COCO files
        self.debug = bool(os.environ.get("MASK2FORMER_DEBUG"))

    def say(self, message: str) -> None:
        if self.log is not None:
            self.log(message)
        elif self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    def fail(self, message: str) -> None:
        self.report.failed += 1
        self.report.errors.append(message)
        self.say(message)

    def plan(self, files: List[str], task: str) -> List[str]:
        """The files to segment; the others (done by an earlier run) are skipped."""
        names = output_names(files)
        todo = []
        for f in files:
            paths = self.paths[f] = OutputPaths.under(self.out_dir, names[f])
            paths.remove_temporaries()  # left behind by a killed run
            if self.overwrite or not os.path.exists(paths.json):
                todo.append(f)
                continue
            self.report.skipped += 1
            self.say(f"{f}: skipped, {paths.json} exists (use --overwrite to replace)")
            if task == "instance":
                old = read_record(paths.json)
                if old is not None and old.get("task") == "instance":
                    self.records[f] = old
        return todo

    def start_progress(self, total: int, progress: Optional[bool]) -> None:
        if total:
            from tqdm.auto import tqdm

            disable = None if progress is None else not progress
            self.bar = tqdm(total=total, unit="img", disable=disable)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def _load(self, files: List[str]) -> List[Tuple[str, np.ndarray]]:
        loaded = []
        for f in files:
            try:
                loaded.append((f, load_image(f)))
            except ImageError as e:
                self.fail(str(e))
                self.bar.update(1)
        return loaded

    def segment_window(
        self, pipeline: Pipeline, files: List[str], options: TaskOptions, batch_size: int
    ) -> None:
        loaded = self._load(files)
        if not loaded:
            return
        try:
            results = pipeline.predict([a for _, a in loaded], options, batch_size=batch_size)
        except Exception as e:  # the model failed on this window: report, go on with the next
            if self.debug:
                raise
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            for f, _ in loaded:
                self.fail(f"{f}: segmentation failed ({type(e).__name__}: {first})")
                self.bar.update(1)
            return
        for (f, image), result in zip(loaded, results):
            self._write(pipeline, f, image, result)
            self.bar.update(1)

    def _write(self, pipeline: Pipeline, f: str, image: np.ndarray, result: Any) -> None:
        info, paths = pipeline.info, self.paths[f]
        try:
            record = write_outputs(f, image, result, pipeline.name, info.id2label, paths)
        except (OSError, ValueError) as e:
            if self.debug:
                raise
            self.fail(f"{f}: cannot write outputs ({e})")
            return
        self.report.done += 1
        self.report.outputs.append(paths.json)
        if result.task == "instance":
            self.records[f] = record
