"""Open a dataset given on the command line: a folder in the layout of
:func:`~mask2former.data.export.export_panoptic_dataset`, or ``shapes`` for generated data; and
compare a dataset's classes with a model's."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from .coco_instances import CocoInstancesDataset
from .coco_panoptic import CocoPanopticDataset
from .errors import DatasetError
from .io import load_json
from .semantic import SemanticSegmentationDataset
from .shapes import ShapesConfig, ShapesDataset

__all__ = [
    "open_dataset",
    "read_categories",
    "dataset_id2label",
    "describe_label_mismatch",
    "check_labels",
]

CATEGORIES_FILE = "categories.json"


def read_categories(path: Path) -> List[Dict[str, Any]]:
    """The categories of a ``categories.json`` (a list of objects with ``id`` and ``name``, as
    ``mask2former shapes`` writes it), sorted by id.

    Raises:
        DatasetError: naming the file, when it is not such a list or repeats an id.
    """
    data = load_json(path)
    if not isinstance(data, list) or not data:
        raise DatasetError(path, "expected a non-empty list of categories (id, name)")
    seen = set()
    for k, c in enumerate(data):
        if not isinstance(c, dict) or "id" not in c or "name" not in c:
            raise DatasetError(path, f"category #{k} is not an object with 'id' and 'name'")
        if isinstance(c["id"], bool) or not isinstance(c["id"], int):
            raise DatasetError(path, f"category #{k} has id {c['id']!r}, not an integer")
        if c["id"] in seen:
            raise DatasetError(path, f"category id {c['id']} appears twice")
        seen.add(c["id"])
    return sorted(data, key=lambda c: c["id"])


def _semantic(root: Path, num_labels: Optional[int]) -> SemanticSegmentationDataset:
    """A semantic folder; its classes are named by ``categories.json`` beside ``images/`` when
    there is one (label i = the i-th category by id, as ``mask2former shapes`` writes it)."""
    names = root / CATEGORIES_FILE
    categories = read_categories(names) if names.is_file() else None
    return SemanticSegmentationDataset(
        root / "images",
        root / "semantic",
        reduce_labels=True,
        num_labels=num_labels,
        categories=categories,
    )


def open_dataset(
    spec: str,
    task: str = "panoptic",
    num: int = 200,
    seed: int = 12345,
    image_size: int = 256,
    num_labels: Optional[int] = None,
) -> Any:
    """``spec`` is "shapes" (``num`` generated images from ``seed``) or a folder holding
    ``images/`` with ``panoptic/`` + ``panoptic.json``, ``instances.json`` or ``semantic/``
    (its classes named by an optional ``categories.json``).

    The view is chosen by ``task``: panoptic data serves every task (instance and semantic
    targets are derived from it), ``instances.json`` serves the instance task, and
    ``semantic/`` (ADE20K-style PNGs, read with ``reduce_labels``) the semantic task.

    Raises:
        FileNotFoundError: ``spec`` is not a folder.
        DatasetError: the folder holds no dataset, or a broken one.
    """
    if spec == "shapes":
        return ShapesDataset(
            num, seed=seed, config=ShapesConfig(height=image_size, width=image_size)
        )
    root = Path(spec)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {spec} (or use 'shapes')")
    images = root / "images"
    has_panoptic = (root / "panoptic.json").is_file() and (root / "panoptic").is_dir()
    if task == "instance" and (root / "instances.json").is_file():
        return CocoInstancesDataset(images, root / "instances.json")
    if task == "semantic" and (root / "semantic").is_dir() and not has_panoptic:
        return _semantic(root, num_labels)
    if has_panoptic:
        return CocoPanopticDataset(images, root / "panoptic", root / "panoptic.json")
    if (root / "semantic").is_dir():
        return _semantic(root, num_labels)
    if (root / "instances.json").is_file():
        return CocoInstancesDataset(images, root / "instances.json")
    raise DatasetError(
        root,
        "no dataset found; expected images/ with panoptic/ + panoptic.json, instances.json "
        "or semantic/ (or use 'shapes')",
    )


def dataset_id2label(dataset: Any) -> Optional[Dict[int, str]]:
    """The dataset's classes as ``{label: name}``, or None when it does not name them (a
    semantic folder without ``categories.json``)."""
    cats = getattr(dataset, "categories", None)
    if cats:
        return {i: str(c["name"]) for i, c in enumerate(sorted(cats, key=lambda c: int(c["id"])))}
    names = getattr(dataset, "label_names", None)
    if names:
        return dict(enumerate(str(n) for n in names))
    return None


_DEFAULT_NAME = re.compile(r"LABEL_\d+")


def _named(id2label: Mapping[int, str]) -> bool:
    """False for the placeholder names a config gets without id2label (LABEL_0, ...)."""
    return not all(_DEFAULT_NAME.fullmatch(str(n)) for n in id2label.values())


def _show(names: List[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)})" if len(names) > limit else "")


def _names(id2label: Mapping[int, str]) -> List[str]:
    return [str(id2label[i]) for i in sorted(id2label, key=int)]


def _first_difference(model: List[str], data: List[str]) -> Optional[str]:
    for i, (a, b) in enumerate(zip(model, data)):
        if a != b:
            return f"class {i} is {a!r} in the model, {b!r} in the dataset"
    return None


def describe_label_mismatch(
    model_id2label: Mapping[int, str], data_id2label: Optional[Mapping[int, str]]
) -> Optional[str]:
    """None when a model's classes are the dataset's (same count and, unless the model's are
    placeholders like LABEL_0, the same names in the same order); else one line saying how they
    differ."""
    if not data_id2label:
        return None
    model, data = _names(model_id2label), _names(data_id2label)
    if len(model) != len(data):
        return (
            f"the model has {len(model)} classes ({_show(model)}), the dataset {len(data)} "
            f"({_show(data)})"
        )
    difference = _first_difference(model, data) if _named(model_id2label) else None
    if difference:
        return (
            f"the model and the dataset name their {len(model)} classes differently ({difference})"
        )
    return None


def check_labels(model_id2label: Mapping[int, str], dataset: Any) -> None:
    """Refuse to score a model on a dataset of other classes (its predictions of class i would
    be compared with ground truth of another class i).

    The dataset's classes must be the model's first ones, by name where both name them: the
    same list, or its beginning (an instances dataset holds only the thing classes, which come
    first in COCO's and the shapes' panoptic category order). A semantic dataset that does not
    name its classes is checked by its label values when it is read (``num_labels``).

    Raises:
        ValueError: one line naming the difference (the counts, or the first differing name).
    """
    data_id2label = dataset_id2label(dataset)
    if not data_id2label:
        return
    model, data = _names(model_id2label), _names(data_id2label)
    if len(data) > len(model):
        raise ValueError(
            f"the dataset has {len(data)} classes ({_show(data)}), the model only {len(model)} "
            f"({_show(model)})"
        )
    difference = _first_difference(model, data) if _named(model_id2label) else None
    if difference:
        raise ValueError(f"the model's classes are not the dataset's: {difference}")
