"""Reader for semantic segmentation folders: image + label PNG pairs matched by file stem."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from .errors import DatasetError
from .io import read_image, read_label_png
from .sample import Sample

__all__ = ["SemanticSegmentationDataset", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class SemanticSegmentationDataset:
    """ADE20K-style semantic segmentation: ``image_dir/x.jpg`` pairs with ``label_dir/x.png``.

    Label PNGs are single-channel (or palette) class indices. With ``reduce_labels=True`` (ADE20K,
    and the semantic PNGs written by :func:`export_panoptic_dataset`) label 0 means
    "other/void" and becomes ``ignore_index``, and every other label is decreased by 1, exactly
    as the image processor's ``reduce_labels``. Without it labels are taken as they are and
    ``ignore_index`` (255) marks unlabelled pixels.

    Every image must have a label and every label an image; a mismatch is reported at
    construction naming the file, so wrong folders fail early.

    Args:
        image_dir, label_dir: the two folders (may be the same one only if stems differ).
        reduce_labels: see above.
        ignore_index: value of unlabelled pixels after reduction.
        num_labels: when given, a label >= num_labels (other than ignore_index) is an error.
            Defaults to the number of ``categories`` when they are given.
        label_names: optional class names, kept as ``label_names``.
        categories: optional COCO-style categories (``id``, ``name``, ``isthing``), e.g. a
            ``categories.json``; label ``i`` is the ``i``-th by id (as in
            :func:`export_panoptic_dataset`). Kept as ``categories``; sets ``label_names``.

    Samples: ``image`` (H, W, 3) uint8, ``masks`` (N, H, W) bool (one per class present),
    ``labels`` (N,) int64 (sorted), ``semantic`` (H, W) int64 class map (ignore_index where void),
    ``file_name``.
    """

    def __init__(
        self,
        image_dir: Union[str, Path],
        label_dir: Union[str, Path],
        reduce_labels: bool = False,
        ignore_index: int = 255,
        num_labels: Optional[int] = None,
        label_names: Optional[Sequence[str]] = None,
        categories: Optional[Sequence[Dict[str, Any]]] = None,
    ) -> None:
        self.image_dir = Path(image_dir)
        self.label_dir = Path(label_dir)
        self.reduce_labels = reduce_labels
        self.ignore_index = int(ignore_index)
        self.categories: Optional[List[Dict[str, Any]]] = None
        if categories:
            self.categories = sorted(categories, key=lambda c: int(c["id"]))
            label_names = [str(c["name"]) for c in self.categories]
            if num_labels is None:
                num_labels = len(self.categories)
        self.num_labels = num_labels
        self.label_names: Optional[List[str]] = list(label_names) if label_names else None
        for d in (self.image_dir, self.label_dir):
            if not d.is_dir():
                raise DatasetError(d, "folder not found")
        images = {
            p.stem: p for p in self.image_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS
        }
        labels = {p.stem: p for p in self.label_dir.iterdir() if p.suffix.lower() == ".png"}
        for stem in sorted(images):
            if stem not in labels:
                raise DatasetError(images[stem], f"no label {stem}.png in {self.label_dir}")
        for stem in sorted(labels):
            if stem not in images:
                raise DatasetError(labels[stem], f"no image named {stem}.* in {self.image_dir}")
        self._pairs = [(images[s], labels[s]) for s in sorted(images)]

    def __len__(self) -> int:
        return len(self._pairs)

    def __getitem__(self, index: int) -> Sample:
        image_path, label_path = self._pairs[index]
        image = read_image(image_path)
        raw = read_label_png(label_path)
        h, w = image.shape[:2]
        if raw.shape != (h, w):
            raise DatasetError(
                label_path, f"label size {raw.shape[1]}x{raw.shape[0]} != image size {w}x{h}"
            )
        if self.reduce_labels:
            semantic = np.where(raw == 0, self.ignore_index, raw - 1)
        else:
            semantic = raw
        present = np.unique(semantic)
        present = present[present != self.ignore_index]
        if self.num_labels is not None and present.size and present.max() >= self.num_labels:
            bad = present[present >= self.num_labels].tolist()
            raise DatasetError(
                label_path, f"label value(s) {bad[:10]} >= num_labels={self.num_labels}"
            )
        return Sample(
            image=image,
            masks=semantic[None, :, :] == present[:, None, None],
            labels=present.astype(np.int64),
            semantic=semantic.astype(np.int64),
            file_name=image_path.name,
        )

    def validate(self) -> None:
        """Read every sample once; raises :class:`DatasetError` at the first broken one."""
        for i in range(len(self)):
            self[i]
