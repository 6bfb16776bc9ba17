"""The one way this package writes files, and the check that keeps data-built paths in place.

Every file is first written to a temporary file created exclusively (``tempfile.mkstemp``: a
random name, ``O_CREAT | O_EXCL``, so a planted file or symlink is never opened) in the target's
own folder, then moved over the target with ``os.replace``, which is atomic on one file system
and replaces a symlink itself rather than writing through it. A failure removes the temporary
file, so an interrupted write leaves the old file (or none), never half of one.

``overwrite=False`` refuses to replace an existing entry, atomically where the file system has
hard links (``os.link`` fails on an existing name), so two runs cannot both "create" one file.

Data-built names (a dataset's ``file_name``, an input's relative path) go through
:func:`confined_path`, which keeps sub-folders but refuses absolute names, ``..`` and symlinked
folders that lead outside the output folder.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from typing import IO, Any, Iterator, Union

__all__ = [
    "UnsafePathError",
    "open_atomic",
    "write_bytes",
    "write_text",
    "write_json",
    "save_image",
    "append_text",
    "atomic_directory",
    "check_output_file",
    "confined_path",
    "remove_stale_temporaries",
]

PathLike = Union[str, "os.PathLike[str]"]


class UnsafePathError(ValueError):
    """A name built from data would land outside its output folder."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def open_atomic(
    path: PathLike,
    mode: str = "wb",
    *,
    overwrite: bool = True,
    durable: bool = False,
    encoding: str = "utf-8",
) -> Iterator[IO]:
    """Open a new temporary file beside ``path``; on a clean exit it becomes ``path``.

    Args:
        path: the file to write; its folder must exist.
        mode: "wb" or "w" (text, ``encoding``).
        overwrite: False raises FileExistsError if ``path`` exists (before and at the rename).
        durable: fsync the file before the rename (checkpoints: survive a power cut).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"open_atomic writes new files only (mode 'w' or 'wb'), got {mode!r}")
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    if not overwrite and os.path.lexists(path):
        raise FileExistsError(errno.EEXIST, "exists (not replaced)", path)
    if os.path.isdir(path) and not os.path.islink(path):
        raise IsADirectoryError(errno.EISDIR, "is a folder", path)
    fd, tmp = tempfile.mkstemp(prefix=f".{name[:80]}.", suffix=".tmp", dir=folder)
    try:
        # mkstemp makes the file private (0600); give it the permissions a plain open would.
        os.fchmod(fd, 0o666 & ~_umask())
        kwargs = {"encoding": encoding, "newline": ""} if mode == "w" else {}
        with os.fdopen(fd, mode, **kwargs) as f:
            fd = -1  # owned by the file object now
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        _commit(tmp, path, overwrite)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _commit(tmp: str, path: str, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # fails if path exists: no window between the check and the move
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, "exists (not replaced)", path) from None
    except OSError:  # a file system without hard links
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, "exists (not replaced)", path) from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def write_bytes(path: PathLike, data: bytes, **options: Any) -> None:
    """Write ``data`` to ``path`` atomically (options of :func:`open_atomic`)."""
    with open_atomic(path, "wb", **options) as f:
        f.write(data)


def write_text(path: PathLike, text: str, **options: Any) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with open_atomic(path, "w", **options) as f:
        f.write(text)


def write_json(
    path: PathLike, data: Any, *, indent: Union[int, None] = None, **options: Any
) -> None:
    """Write ``data`` as JSON (no NaN or infinity: they are not JSON) atomically."""
    text = json.dumps(data, indent=indent, allow_nan=False)
    write_text(path, text + "\n", **options)


def save_image(
    path: PathLike, image: Any, format: str = "PNG", overwrite: bool = True, **encoder: Any
) -> None:
    """Save a PIL image, or an array Pillow understands, atomically (``encoder``: Pillow's
    options of the format, e.g. ``optimize=True``)."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        image = Image.fromarray(image)
    with open_atomic(path, "wb", overwrite=overwrite) as f:
        image.save(f, format=format, **encoder)


def append_text(path: PathLike, text: str) -> None:
    """Append ``text`` to a log file, creating it if needed; never through a symlink."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(os.fspath(path), flags, 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "is a symlink; not appending through it", path) from None
        raise
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        f.write(text)


@contextlib.contextmanager
def atomic_directory(path: PathLike, *, replace: bool = False) -> Iterator[str]:
    """A new private folder beside ``path``; filled by the caller, it becomes ``path`` on a
    clean exit (an existing ``path`` folder is removed first only with ``replace=True``)."""
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)[:80]}.", suffix=".tmp", dir=parent)
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
        if os.path.lexists(path):
            if not replace:
                raise FileExistsError(errno.EEXIST, "exists (not replaced)", path)
            if os.path.islink(path) or not os.path.isdir(path):
                os.unlink(path)
            else:
                shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_output_file(
    path: PathLike, overwrite: bool, option: str, name_hint: str = "a file name"
) -> None:
    """Refuse, before any work is done, an output file that cannot or must not be written: a
    folder, an existing file (unless ``overwrite``), or a path under a file. Errors name the
    command-line ``option``."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{option} {path} is a folder; give {name_hint}")
    if os.path.lexists(path) and not overwrite:
        raise FileExistsError(f"{option} {path} exists (use --overwrite to replace it)")
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.exists(parent) and not os.path.isdir(parent):
        raise NotADirectoryError(f"{option} {path}: {parent} is a file")


def confined_path(root: PathLike, name: str, what: str = "name") -> str:
    """``root/name`` for a relative ``name`` built from data, refusing anything that would land
    outside ``root``: absolute names, ``..`` components, or folders under ``root`` that are
    symlinks leading out of it. Sub-folders are kept.

    Raises:
        UnsafePathError: naming ``what`` and the entry.
    """
    root = os.fspath(root)
    text = str(name)
    unix = text.replace("\\", "/")
    parts = [p for p in unix.split("/") if p not in ("", ".")]
    if not text or "\x00" in text:
        raise UnsafePathError(f"{what} {text!r}: not a usable file name")
    if os.path.isabs(text) or unix.startswith("/") or (len(text) > 1 and text[1] == ":"):
        raise UnsafePathError(f"{what} {text!r}: absolute paths are not allowed here")
    if ".." in parts or not parts:
        raise UnsafePathError(f"{what} {text!r}: '..' would leave the output folder")
    path = os.path.join(root, *parts)
    real_root = os.path.realpath(root)
    real_parent = os.path.realpath(os.path.dirname(path))
    if os.path.commonpath([real_root, real_parent]) != real_root:
        raise UnsafePathError(f"{what} {text!r}: leads outside {root} through a symlink")
    return path


def remove_stale_temporaries(folder: PathLike, name: str) -> None:
    """Delete temporary files a killed writer of ``folder/name`` left behind."""
    prefix = f".{name[:80]}."
    with contextlib.suppress(FileNotFoundError):
        for entry in os.listdir(folder):
            if entry.startswith(prefix) and entry.endswith(".tmp"):
                target = os.path.join(folder, entry)
                if os.path.isfile(target) and not os.path.islink(target):
                    with contextlib.suppress(OSError):
                        os.unlink(target)
