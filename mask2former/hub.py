"""Finding checkpoint files: local folders first, then the Hugging Face hub (``hub`` extra)."""

from __future__ import annotations

import os
from typing import Any, Optional, Union

__all__ = ["resolve_file", "BUILTIN_MODELS_DIR", "HUB_OPTIONS"]

# The download options of transformers' from_pretrained that huggingface_hub's hf_hub_download
# takes as they are (for a local folder or a built-in model they do nothing).
HUB_OPTIONS = ("cache_dir", "revision", "token", "local_files_only", "force_download")

# Models shipped inside the package, loadable by name (e.g. ``from_pretrained("shapes")``).
BUILTIN_MODELS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")


def _builtin_dir(name: str) -> Optional[str]:
    path = os.path.join(BUILTIN_MODELS_DIR, name)
    return path if os.path.isdir(path) else None


def resolve_file(
    path_or_id: Union[str, os.PathLike],
    filename: str,
    required: bool = True,
    *,
    subfolder: str = "",
    **hub_options: Any,
) -> Optional[str]:
    """The local path of ``filename`` for a checkpoint given as a folder, a file or a hub id.

    A folder is searched directly; a path to a file is returned as is when its name matches; a
    name of a built-in model resolves inside the package; anything else that looks like
    ``owner/name`` is fetched with huggingface_hub. With ``required=False`` a missing file gives
    ``None`` instead of an error. ``subfolder``: the files lie in that folder of the checkpoint
    (local or on the hub). ``hub_options`` (:data:`HUB_OPTIONS`: ``cache_dir``, ``revision``,
    ``token``, ``local_files_only``, ``force_download``) go to ``hf_hub_download`` for a hub id.
    """
    unknown = sorted(set(hub_options) - set(HUB_OPTIONS))
    if unknown:
        raise TypeError(f"resolve_file: unknown hub options {unknown}")
    path = os.fspath(path_or_id)
    if os.path.isfile(path):
        if os.path.basename(path) == filename:
            return path
        path = os.path.dirname(path)
    builtin = _builtin_dir(path) if not os.path.isdir(path) else None
    if builtin is not None:
        path = builtin
    if os.path.isdir(path):
        path = os.path.join(path, subfolder) if subfolder else path
        candidate = os.path.join(path, filename)
        if os.path.isfile(candidate):
            return candidate
        if required:
            raise FileNotFoundError(f"{filename} not found in {path}")
        return None
    if path.count("/") != 1 or path.startswith((".", "/")) or path.endswith("/"):
        raise FileNotFoundError(
            f"no local folder {path!r}, and it is neither a built-in model nor a hub id of the "
            "form 'owner/name'"
        )
    owner = path.split("/")[0]
    if os.path.isdir(owner):
        # 'models/missing' with a local 'models' folder is a mistyped path, not a hub id.
        raise FileNotFoundError(
            f"no local folder {path!r} (the folder {owner!r} exists but holds no {path[len(owner) + 1 :]!r})"
        )
    try:
        return _download(path, filename, required, subfolder, hub_options)
    except (ImportError, OSError) as e:
        raise type(e)(f"no local folder {path!r}; as a hub id: {e}") from None


def _hub_resolves() -> bool:
    """Whether the hub's host name resolves (a cheap test for being offline)."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname
    try:
        socket.getaddrinfo(host, 443)
    except (OSError, UnicodeError):
        return False
    return True


def _download(
    repo_id: str, filename: str, required: bool, subfolder: str, options: dict
) -> Optional[str]:
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.utils import EntryNotFoundError, LocalEntryNotFoundError
    except ImportError:
        raise ImportError(
            "loading from the Hugging Face hub needs huggingface_hub: "
            "pip install 'mask2former[hub]'"
        ) from None
    try:
        # Offline, the hub client retries for about half a minute, logging each try: look in
        # the local cache only when the hub's host does not even resolve.
        options = {k: v for k, v in options.items() if v is not None}
        local_only = bool(options.pop("local_files_only", False)) or not _hub_resolves()
        return hf_hub_download(
            repo_id,
            filename,
            subfolder=subfolder or None,
            local_files_only=local_only,
            **options,
        )
    except LocalEntryNotFoundError:  # offline and not in the local cache
        if not required:
            return None
        raise OSError(
            f"could not fetch {filename} from hub repository {repo_id!r}: the hub is "
            "unreachable (offline?) and the file is not in the local cache"
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
