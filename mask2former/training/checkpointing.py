"""Training checkpoints, written atomically and read without unpickling code.

A checkpoint is a folder ``step-NNNNNNN`` holding the model in the published layout
(config.json + model.safetensors, so it loads with ``from_pretrained``), the image processor's
preprocessor_config.json when one is given, and ``training_state.pt`` (optimiser, scheduler,
step, random-number-generator states). It is first written under a temporary name and renamed
when complete, and ``latest`` (a one-line text file, replaced atomically) names the newest
complete one: a crash at any moment leaves the previous checkpoint intact and ``latest`` valid.
"""

from __future__ import annotations

import os
import shutil
from typing import Any, Dict, Optional

import torch

__all__ = ["save_checkpoint", "load_training_state", "latest_checkpoint", "prune_checkpoints"]

STATE_FILE = "training_state.pt"
LATEST = "latest"


def _atomic_write_text(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(
    directory: str,
    step: int,
    model,
    training_state: Dict[str, Any],
    image_processor=None,
) -> str:
    """Write checkpoint ``step`` into ``directory``; returns its folder."""
    os.makedirs(directory, exist_ok=True)
    name = f"step-{step:07d}"
    final = os.path.join(directory, name)
    tmp = os.path.join(directory, f".{name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    if image_processor is not None:
        image_processor.save_pretrained(tmp)
    torch.save(training_state, os.path.join(tmp, STATE_FILE))
    if os.path.exists(final):  # re-written after a resume from an older checkpoint
        shutil.rmtree(final)
    os.replace(tmp, final)
    _atomic_write_text(os.path.join(directory, LATEST), name + "\n")
    return final


def latest_checkpoint(directory: str) -> Optional[str]:
    """The newest complete checkpoint folder in ``directory``, or None."""
    pointer = os.path.join(directory, LATEST)
    if not os.path.isfile(pointer):
        return None
    with open(pointer, encoding="utf-8") as f:
        name = f.read().strip()
    path = os.path.join(directory, name)
    if not os.path.isfile(os.path.join(path, STATE_FILE)):
        raise FileNotFoundError(f"{pointer} names {name}, which is missing or incomplete")
    return path


def load_training_state(checkpoint: str) -> Dict[str, Any]:
    path = os.path.join(checkpoint, STATE_FILE)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"no {STATE_FILE} in {checkpoint}") from None


def prune_checkpoints(directory: str, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (never the one ``latest`` names)."""
    if keep <= 0:
        return
    names = sorted(n for n in os.listdir(directory) if n.startswith("step-"))
    current = latest_checkpoint(directory)
    for name in names[:-keep]:
        path = os.path.join(directory, name)
        if current is None or os.path.abspath(path) != os.path.abspath(current):
            shutil.rmtree(path, ignore_errors=True)
