"""Open a dataset given on the command line: a folder in the layout of
:func:`~mask2former.data.export.export_panoptic_dataset`, or ``shapes`` for generated data."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from .coco_instances import CocoInstancesDataset
from .coco_panoptic import CocoPanopticDataset
from .errors import DatasetError
from .semantic import SemanticSegmentationDataset
from .shapes import ShapesConfig, ShapesDataset

__all__ = ["open_dataset"]


def open_dataset(
    spec: str,
    task: str = "panoptic",
    num: int = 200,
    seed: int = 12345,
    image_size: int = 256,
    num_labels: Optional[int] = None,
) -> Any:
    """``spec`` is "shapes" (``num`` generated images from ``seed``) or a folder holding
    ``images/`` with ``panoptic/`` + ``panoptic.json``, ``instances.json`` or ``semantic/``.

    The view is chosen by ``task``: panoptic data serves every task (instance and semantic
    targets are derived from it), ``instances.json`` serves the instance task, and
    ``semantic/`` (ADE20K-style PNGs, read with ``reduce_labels``) the semantic task.
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
        return SemanticSegmentationDataset(
            images, root / "semantic", reduce_labels=True, num_labels=num_labels
        )
    if has_panoptic:
        return CocoPanopticDataset(images, root / "panoptic", root / "panoptic.json")
    if (root / "semantic").is_dir():
        return SemanticSegmentationDataset(
            images, root / "semantic", reduce_labels=True, num_labels=num_labels
        )
    if (root / "instances.json").is_file():
        return CocoInstancesDataset(images, root / "instances.json")
    raise DatasetError(
        f"{root}: no dataset found; expected images/ with panoptic/ + panoptic.json, "
        "instances.json or semantic/"
    )
