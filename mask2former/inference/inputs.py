"""Which files a ``segment`` run reads, and the output name each one gets."""

from __future__ import annotations

import glob
import os
from typing import Dict, List, Optional, Sequence, Tuple, Union

__all__ = ["IMAGE_EXTENSIONS", "RESERVED_NAMES", "collect_inputs", "output_names"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
PathLike = Union[str, "os.PathLike[str]"]
# Run-level files of the instance task (see outputs.py); no image's outputs may take these names.
RESERVED_NAMES = frozenset({"coco_results", "images"})


def _is_image_name(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTENSIONS)


def _inside(path: str, folder: Optional[str]) -> bool:
    return folder is not None and os.path.commonpath([path, folder]) == folder


def _scan_folder(item: str, skip: Optional[str]) -> List[str]:
    found = []
    for root, dirs, names in os.walk(item):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(root, n) for n in sorted(names) if _is_image_name(n)]
    return [f for f in found if not _inside(os.path.abspath(f), skip)]


def collect_inputs(
    inputs: Union[PathLike, Sequence[PathLike]], exclude: Optional[PathLike] = None
) -> Tuple[List[str], List[str]]:
    """Expand files, folders (recursively, image extensions only) and glob patterns.

    Returns (files in a stable order without duplicates, one error line per input that gave
    nothing). Files found by scanning under ``exclude`` (the output folder) are left out, so a
    second run does not segment the first run's overlays.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    skip = os.path.abspath(exclude) if exclude is not None else None
    files: List[str] = []
    errors: List[str] = []
    for item in map(os.fspath, inputs):
        if os.path.isdir(item):
            found = _scan_folder(item, skip)
            if not found:
                errors.append(f"{item}: no images ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
            files += found
        elif os.path.exists(item):
            files.append(item)  # given explicitly: tried whatever its extension
        elif glob.has_magic(item):
            found = sorted(f for f in glob.glob(item, recursive=True) if os.path.isfile(f))
            found = [f for f in found if not _inside(os.path.abspath(f), skip)]
            if not found:
                errors.append(f"{item}: no files match this pattern")
            files += found
        else:
            errors.append(f"{item}: no such file or folder")
    # One entry per real file: links and '**' through symlink loops reach a file many times.
    unique: Dict[str, str] = {}
    for f in files:
        unique.setdefault(os.path.realpath(f), os.path.normpath(f))
    return list(unique.values()), errors


def output_names(files: Sequence[str]) -> Dict[str, str]:
    """Output name (no extension) per file: its path relative to the files' common folder, so
    same-named files of different folders do not collide; ``a/x.png`` and ``a/x.jpg`` become
    ``x`` and ``x_jpg``, and ``images.png`` becomes ``images_png`` (``images.json`` is the
    run's COCO file)."""
    if not files:
        return {}
    absolute = {f: os.path.abspath(f) for f in files}
    common = os.path.commonpath([os.path.dirname(p) for p in absolute.values()])
    names: Dict[str, str] = {}
    used = set(RESERVED_NAMES)
    for f in files:
        stem, ext = os.path.splitext(os.path.relpath(absolute[f], common))
        name = stem
        if name in used:
            name = f"{stem}_{ext.lstrip('.')}" if ext else stem
        k = 1
        while name in used:
            name, k = f"{stem}_{k}", k + 1
        used.add(name)
        names[f] = name
    return names
