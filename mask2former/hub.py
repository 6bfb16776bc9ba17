"""Finding checkpoint files: local folders first, then the Hugging Face hub (``hub`` extra)."""

from __future__ import annotations

import os
from typing import Optional, Union

__all__ = ["resolve_file", "BUILTIN_MODELS_DIR"]

# Models shipped inside the package, loadable by name (e.g. ``from_pretrained("shapes")``).
BUILTIN_MODELS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")


def _builtin_dir(name: str) -> Optional[str]:
    path = os.path.join(BUILTIN_MODELS_DIR, name)
    return path if os.path.isdir(path) else None


def resolve_file(
    path_or_id: Union[str, os.PathLike], filename: str, required: bool = True
) -> Optional[str]:
    """The local path of ``filename`` for a checkpoint given as a folder, a file or a hub id.

    A folder is searched directly; a path to a file is returned as is when its name matches; a
    name of a built-in model resolves inside the package; anything else that looks like
    ``owner/name`` is fetched with huggingface_hub. With ``required=False`` a missing file gives
    ``None`` instead of an error.
    """
    path = os.fspath(path_or_id)
    if os.path.isfile(path):
        if os.path.basename(path) == filename:
            return path
        path = os.path.dirname(path)
    builtin = _builtin_dir(path) if not os.path.isdir(path) else None
    if builtin is not None:
        path = builtin
    if os.path.isdir(path):
        candidate = os.path.join(path, filename)
        if os.path.isfile(candidate):
            return candidate
        if required:
            raise FileNotFoundError(f"{filename} not found in {path}")
        return None
    if path.count("/") != 1 or path.startswith((".", "/")):
        raise FileNotFoundError(
            f"{path!r} is neither a local folder, a built-in model nor a hub id of the form "
            "'owner/name'"
        )
    return _download(path, filename, required)


def _download(repo_id: str, filename: str, required: bool) -> Optional[str]:
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.utils import EntryNotFoundError, LocalEntryNotFoundError
    except ImportError:
        raise ImportError(
            f"{repo_id!r} is not a local folder; loading from the Hugging Face hub needs "
            "huggingface_hub: pip install 'mask2former[hub]'"
        ) from None
    try:
        return hf_hub_download(repo_id, filename)
    except LocalEntryNotFoundError as e:  # offline and not in the local cache
        if not required:
            return None
        raise OSError(
            f"could not fetch {filename} from hub repository {repo_id!r}: offline or "
            f"unreachable and not cached ({str(e).splitlines()[0]}); pass a local folder instead"
        ) from None
    except EntryNotFoundError:
        if required:
            raise FileNotFoundError(f"{filename} not found in hub repository {repo_id}") from None
        return None
    except Exception as e:  # offline, unknown repository, authentication, ...
        if not required and "404" in str(e):
            return None
        raise OSError(
            f"could not fetch {filename} from hub repository {repo_id!r} "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); if you are "
            "offline, pass a local folder instead"
        ) from None
