"""The classes a model is trained for: where they come from (the dataset, the ``--init``
model or a config.json) and what the config records of them (task, stuff classes)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from ..config import Mask2FormerConfig
from ..data.loading import _named, dataset_id2label, describe_label_mismatch
from .console import note, warn
from .presets import PRESETS

__all__ = ["dataset_labels", "label_source", "note_label_change", "set_task"]


def _config_labels(spec: str) -> Optional[Dict[int, str]]:
    """The named classes of a ``model_config`` config.json (None for a preset or no names)."""
    if spec in PRESETS:
        return None
    labels = Mask2FormerConfig.from_json_file(spec).id2label
    return labels if _named(labels) else None


def label_source(
    dataset: Any,
    init_labels: Optional[Dict[int, str]] = None,
    model_config: Optional[str] = None,
) -> Tuple[Dict[int, str], str]:
    """The classes to train and where they come from: the dataset's own (its categories, or a
    semantic folder's categories.json) first, then the ``init`` model's, then those of the
    ``model_config`` config.json.

    Returns:
        ``(id2label, source)``, source one of "the dataset", "--init", "--model-config".

    Raises:
        ValueError: none of them names the classes.
    """
    labels = dataset_id2label(dataset)
    if labels:
        return labels, "the dataset"
    if init_labels:
        return dict(init_labels), "--init"
    labels = _config_labels(model_config) if model_config else None
    if labels:
        return labels, "--model-config"
    raise ValueError(
        "the dataset names no classes: add a categories.json (id, name) beside its images/, or "
        "pass --init MODEL or --model-config CONFIG.json with an id2label"
    )


def dataset_labels(
    dataset: Any,
    init_labels: Optional[Dict[int, str]],
    model_config: Optional[str],
    command: str,
) -> Dict[int, str]:
    """:func:`label_source`'s classes; when they are not the dataset's own, says so in a note
    of ``command`` and gives the dataset their count (a label value past them is then a
    DatasetError naming its file)."""
    id2label, source = label_source(dataset, init_labels, model_config)
    if source != "the dataset":
        note(
            command, f"the dataset names no classes: using the {len(id2label)} classes of {source}"
        )
        dataset.num_labels = len(id2label)
    return id2label


def set_task(config: Mask2FormerConfig, dataset: Any, task: str) -> List[int]:
    """Record the task and the stuff labels in ``config``; returns the thing labels. A dataset
    without categories keeps the config's stuff labels (the ``init`` model's)."""
    cats = sorted(getattr(dataset, "categories", None) or [], key=lambda c: int(c["id"]))
    config.task = task
    if not cats:
        stuff = set(config.stuff_label_ids or [])
        return [i for i in range(config.num_labels) if i not in stuff]
    config.stuff_label_ids = [i for i, c in enumerate(cats) if not c.get("isthing", 1)]
    return [i for i, c in enumerate(cats) if c.get("isthing", 1)]


def note_label_change(
    init: str, init_labels: Dict[int, str], id2label: Dict[int, str], command: str
) -> bool:
    """Say in one line how the ``init`` model's classes differ from the dataset's; True when
    its class head is re-initialised (the counts differ)."""
    problem = describe_label_mismatch(init_labels, id2label)
    if problem is None:
        return False
    if len(init_labels) != len(id2label):
        note(command, f"--init {init}: {problem}; fine-tuning with a new class head")
        return True
    warn(
        command,
        f"--init {init}: {problem}; its class head is kept, so each class is fine-tuned as the "
        "dataset's class of the same number",
    )
    return False
