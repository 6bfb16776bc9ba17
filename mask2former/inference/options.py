"""What a segmentation request asks for (:class:`TaskOptions`) and what a model declares about
itself (:class:`ModelInfo`): the defaults every front end shares."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, FrozenSet, Iterable, Optional, Tuple

from ..config import TASKS  # the one list of tasks (config.json's ``task`` takes the same)

__all__ = ["TASKS", "TaskOptions", "ModelInfo", "check_request", "model_threshold"]


def model_threshold(config: Any, fallback: Optional[float]) -> Optional[float]:
    """The segment score threshold a model declares for testing (``object_mask_threshold`` in its
    config.json: a small model trained briefly is right with less confidence than the 0.8 the
    published models use), else ``fallback``."""
    value = config.object_mask_threshold
    if value is None:
        return fallback
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(
            f"config.json: object_mask_threshold must be a number in [0, 1], got {value!r}"
        )
    return float(value)


def _probability(name: str, value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not 0.0 <= value <= 1.0
    ):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def check_request(task: Optional[str], threshold: Optional[float]) -> None:
    """The task and score threshold of a request, each when given (ValueError naming it)."""
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if threshold is not None:
        _probability("threshold", threshold)


@dataclass(frozen=True)
class ModelInfo:
    """What a model's config.json says about using it.

    Attributes:
        id2label: class id -> name.
        task: the task it was trained for (``task``), else "panoptic".
        object_mask_threshold: its segment score threshold for testing, if it declares one.
        stuff_label_ids: classes fused into one segment per image (``stuff_label_ids``).
        ignore_value: the "unlabelled" value of its semantic maps (``ignore_value``).
    """

    id2label: Dict[int, str]
    task: str = "panoptic"
    object_mask_threshold: Optional[float] = None
    stuff_label_ids: Tuple[int, ...] = ()
    ignore_value: int = 255

    @property
    def threshold(self) -> float:
        """The segment score threshold of a request that names none: the model's, else 0.5."""
        return 0.5 if self.object_mask_threshold is None else self.object_mask_threshold

    @classmethod
    def from_config(cls, config: Any) -> ModelInfo:
        task = config.task
        stuff = config.stuff_label_ids or ()
        return cls(
            id2label={int(k): str(v) for k, v in dict(config.id2label).items()},
            task=task if task in TASKS else "panoptic",
            object_mask_threshold=model_threshold(config, None),
            stuff_label_ids=tuple(int(i) for i in stuff),
            ignore_value=int(config.ignore_value),
        )

    def label(self, label_id: int) -> str:
        return self.id2label.get(int(label_id), str(label_id))

    def options(
        self,
        task: Optional[str] = None,
        threshold: Optional[float] = None,
        mask_threshold: float = 0.5,
        overlap_mask_area_threshold: float = 0.8,
        label_ids_to_fuse: Optional[Iterable[int]] = None,
        top_k: Optional[int] = None,
    ) -> TaskOptions:
        """Request options, each missing one taken from this model's defaults."""
        fuse = self.stuff_label_ids if label_ids_to_fuse is None else label_ids_to_fuse
        return TaskOptions(
            task=task or self.task,
            threshold=self.threshold if threshold is None else threshold,
            mask_threshold=mask_threshold,
            overlap_mask_area_threshold=overlap_mask_area_threshold,
            label_ids_to_fuse=frozenset(int(i) for i in fuse),
            top_k=top_k,
        )


@dataclass(frozen=True)
class TaskOptions:
    """One post-processing request (see :mod:`mask2former.processing.postprocess`).

    Attributes:
        task: "panoptic", "instance" or "semantic".
        threshold: minimum segment score (panoptic, instance).
        mask_threshold: mask probability above which a pixel belongs to a mask.
        overlap_mask_area_threshold: fraction of its mask a segment must keep (negative: all).
        label_ids_to_fuse: panoptic classes merged into one segment per image.
        top_k: instance candidates, the top (query, class) pairs (None: one per query).
    """

    task: str
    threshold: float = 0.5
    mask_threshold: float = 0.5
    overlap_mask_area_threshold: float = 0.8
    label_ids_to_fuse: FrozenSet[int] = frozenset()
    top_k: Optional[int] = None

    def __post_init__(self) -> None:
        check_request(self.task, self.threshold)
        _probability("mask_threshold", self.mask_threshold)
        if self.top_k is not None and (isinstance(self.top_k, bool) or self.top_k < 1):
            raise ValueError(f"top_k must be an integer of at least 1, got {self.top_k!r}")
