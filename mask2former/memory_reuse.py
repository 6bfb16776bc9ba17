"""Keep large freed blocks in the process for the next forward pass (glibc only).

glibc serves every allocation above its mmap threshold (at most 32 MB) with fresh pages from
the kernel and returns them on free. A 800x1088 forward makes many such maps (a stride-4 map
of 256 float32 channels is 55 MB), so each forward touches ~470 MB of new pages: ~120,000 page
faults and their zero-filling, 0.1-0.2 s of a 1.7 s forward on two cores. With mmap turned
off and the heap's top not trimmed, freed blocks stay in the heap and the next forward reuses
them: the same results, no page faults after the first call, and a peak resident size a few
percent higher (the heap keeps its high-water mark).

This changes how the whole process allocates memory, so the library never does it on import:
the ``mask2former`` command turns it on for its own process (``MASK2FORMER_MEMORY_REUSE=0``
keeps glibc's defaults), and Python users call :func:`enable_memory_reuse` once.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading

__all__ = ["enable_memory_reuse", "memory_reuse_wanted"]

# mallopt parameters from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
# The largest trim threshold mallopt takes (an int): free space at the heap's top is given
# back only above 2 GB.
_TRIM_THRESHOLD = 2**31 - 1

_lock = threading.Lock()
_enabled = False


def _glibc():
    """The C library if it is glibc (mallopt with these parameters), else None."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    # Only glibc has gnu_get_libc_version; musl, macOS and Windows do not.
    return libc if hasattr(libc, "gnu_get_libc_version") else None


def enable_memory_reuse() -> bool:
    """Make glibc keep large freed blocks for reuse instead of returning them to the kernel.

    Returns True when the setting is in effect (now or from an earlier call), False where the
    C library is not glibc (nothing is changed there). Results of any computation are
    unchanged; only where memory comes from differs. Not reversible within the process.
    """
    global _enabled
    with _lock:
        if _enabled:
            return True
        libc = _glibc()
        if libc is None:
            return False
        # Order matters little: both take effect for the next allocation. mallopt returns 1
        # on success.
        ok = libc.mallopt(_M_MMAP_MAX, 0) == 1
        ok = libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1 and ok
        _enabled = ok
        return ok


def memory_reuse_wanted(environ=None) -> bool:
    """Whether the command should turn memory reuse on: yes unless MASK2FORMER_MEMORY_REUSE
    is 0, false, no or off."""
    value = (environ if environ is not None else os.environ).get("MASK2FORMER_MEMORY_REUSE", "")
    return value.strip().lower() not in ("0", "false", "no", "off")
