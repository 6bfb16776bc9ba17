"""TensorBoard event files of a run: every log record's numbers as scalars, and pictures.

The JSON log stays the record of a run; the event file repeats each record (same step numbers)
so the run can be watched with ``tensorboard --logdir``. TensorBoard is an optional
dependency (the ``tensorboard`` extra): without it :func:`open_event_log` prints one note and
training goes on without event files.

Tags are ``<section>/<key>`` for training values (``train/loss``, ``train/loss_mask``,
``train/grad_norm``, ``train/lr``, ``train/images_per_s``) and ``eval/<task>/<metric>`` for
evaluation metrics (``eval/panoptic/PQ``, ``eval/instance/AP``, ``eval/semantic/mIoU``).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np

from .checkpointing import EVENTS_DIR

__all__ = ["NOTE", "EventLog", "metric_tag", "open_event_log", "open_run_events", "run_scalars"]

NOTE = (
    "note: TensorBoard logs need the tensorboard extra: pip install 'mask2former[tensorboard]'; "
    "training goes on without them"
)

# The task a metric belongs to, by the start of its name: evaluation records name metrics
# flat ("eval/PQ", "eval/PQ_th"), TensorBoard groups them better by task.
_METRIC_TASKS = (
    (("PQ", "SQ", "RQ"), "panoptic"),
    (("AP",), "instance"),
    (("mIoU", "fwIoU", "IoU", "mAcc", "pAcc"), "semantic"),
)

_noted = False  # the missing-tensorboard note is printed once per process, not per run


def metric_tag(name: str) -> str:
    """The tag of evaluation metric ``name``: ``eval/<task>/<name>`` when the name tells the
    task (PQ..., AP..., mIoU...), else ``eval/<name>`` (a name with its own "/" is kept)."""
    if "/" not in name:
        for prefixes, task in _METRIC_TASKS:
            if name.startswith(prefixes):
                return f"eval/{task}/{name}"
    return f"eval/{name}"


def _number(value: Any) -> Optional[float]:
    """``value`` as a float when it is a number (not a bool, None or text), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        return None
    return float(value)


def run_scalars(record: Mapping[str, Any], trainer: Any) -> Dict[str, float]:
    """What a :class:`~mask2former.training.Trainer`'s record implies besides its own values:
    the learning rate of every parameter group (``lr/group<i>``, when there is more than one;
    the record holds the first) and the images per second (``steps_per_s`` times the images
    of one optimiser step: the batch of every process, times the accumulated batches)."""
    cfg = trainer.config
    lrs = trainer.scheduler.get_last_lr()
    images_per_step = cfg.batch_size * cfg.grad_accum * trainer.dist.world_size
    extra: Dict[str, float] = {}
    if "lr" in record and len(lrs) > 1:
        extra.update({f"lr/group{i}": float(lr) for i, lr in enumerate(lrs)})
    speed = _number(record.get("steps_per_s"))
    if speed is not None:
        extra["images_per_s"] = speed * images_per_step
    return extra


class EventLog:
    """One run's event files in ``folder``, written by a ``SummaryWriter``; with ``folder``
    None, a log that writes nothing (the other processes of a multi-process run, a run
    without TensorBoard, a closed log), so the trainer needs no checks.

    Args:
        folder: where the event files go (created when missing), or None.
        purge_step: on resume, the first step the resumed run writes: events of that step and
            later, written by the interrupted run after its checkpoint, are dropped by
            TensorBoard (the resumed run writes them again).
        section: the tag prefix of training values ("train", "pretrain").
        eval_keys: record keys that are evaluation metrics although not named ``eval/...``.
        writer_class: the writer (default: ``torch.utils.tensorboard.SummaryWriter``).
    """

    def __init__(
        self,
        folder: Optional[str],
        purge_step: Optional[int] = None,
        section: str = "train",
        eval_keys: Sequence[str] = (),
        writer_class: Any = None,
    ) -> None:
        self.folder = folder
        self.section = section
        self.eval_keys = frozenset(eval_keys)
        self.writer: Any = None
        if folder is not None:
            if writer_class is None:
                from torch.utils.tensorboard import SummaryWriter as writer_class
            self.writer = writer_class(log_dir=folder, purge_step=purge_step)

    @property
    def active(self) -> bool:
        """Whether anything is written (worth making pictures for)."""
        return self.writer is not None

    def tag(self, key: str) -> str:
        """The tag of record key ``key``."""
        if key.startswith("eval/"):
            return metric_tag(key[len("eval/") :])
        if key in self.eval_keys:
            return metric_tag(key)
        return f"{self.section}/{key}"

    def scalars(
        self, step: int, record: Mapping[str, Any], extra: Optional[Mapping[str, float]] = None
    ) -> None:
        """Every number of log record ``record`` (and of ``extra``, training values such as
        :func:`run_scalars`) as a scalar at ``step``; "step", text (an evaluation's error) and
        missing values (None) are not numbers to plot. NaN and infinities are written as they
        are: TensorBoard shows them, as the log does."""
        if self.writer is None:
            return
        values = {self.tag(k): v for k, v in record.items() if k != "step"}
        values.update({f"{self.section}/{k}": v for k, v in (extra or {}).items()})
        for tag, value in values.items():
            number = _number(value)
            if number is not None:
                self.writer.add_scalar(tag, number, step)

    def image(self, tag: str, step: int, rgb: np.ndarray) -> None:
        """An (H, W, 3) uint8 picture at ``step``."""
        if self.writer is not None:
            self.writer.add_image(tag, np.asarray(rgb, dtype=np.uint8), step, dataformats="HWC")

    def evaluation(self, step: int, pictures: Sequence[np.ndarray]) -> None:
        """An evaluation's prediction pictures (``predictions/<i>``: the same images each
        time, so TensorBoard's step slider shows them change), then everything to disk: an
        evaluation is when someone looks."""
        for i, picture in enumerate(pictures):
            self.image(f"predictions/{i}", step, picture)
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        """Write out and close the files; the log writes nothing afterwards (a later
        ``fit`` opens a new one)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def open_event_log(folder: str, purge_step: Optional[int] = None, **options: Any) -> EventLog:
    """An :class:`EventLog` in ``folder`` (``options`` as its); one that writes nothing, with
    a note on stderr the first time, when TensorBoard cannot be imported: the run goes on."""
    global _noted
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        if not _noted:
            _noted = True
            print(NOTE, file=sys.stderr)
        return EventLog(None, **options)
    return EventLog(folder, purge_step, writer_class=SummaryWriter, **options)


def open_run_events(trainer: Any) -> EventLog:
    """The event log of a :class:`~mask2former.training.Trainer`'s run, in
    ``output_dir/tensorboard``, written by the main process only. A run resumed at step N
    purges the steps after N that its interrupted run wrote after the checkpoint, so no step
    is shown twice."""
    options = dict(section=trainer.progress_label, eval_keys=getattr(trainer, "metric_keys", ()))
    if not trainer.dist.is_main:
        return EventLog(None, **options)
    folder = os.path.join(trainer.config.output_dir, EVENTS_DIR)
    return open_event_log(folder, trainer.step + 1 if trainer.step else None, **options)
