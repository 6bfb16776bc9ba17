"""Training checkpoints, written atomically and read without unpickling code.

A checkpoint is a folder ``step-NNNNNNN`` holding the model in the published layout
(config.json + model.safetensors, so it loads with ``from_pretrained``), the image processor's
preprocessor_config.json when one is given, and ``training_state.pt`` (optimiser, scheduler,
step, random-number-generator states, the run's settings). It is filled in a private temporary
folder (:func:`mask2former.files.atomic_directory`: a random, exclusively created name, so a
file or symlink planted in the run folder is never written through) and renamed when complete;
``latest`` (a one-line text file, replaced atomically and durably) names the newest complete
one. A crash at any moment leaves the previous checkpoint intact and ``latest`` valid.

``training_state.pt`` is read with ``torch.load(weights_only=True)``, which never runs pickled
code, and its structure is checked before anything uses it: a damaged or foreign file is a
:class:`~mask2former.checkpoint.CheckpointError` naming it, never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import shutil
import tempfile
import warnings
from typing import Any, Dict, List, Optional

import torch

from ..checkpoint import CheckpointError
from ..files import atomic_directory, open_atomic, write_text

__all__ = [
    "save_checkpoint",
    "save_model_folder",
    "save_model_files",
    "load_training_state",
    "latest_checkpoint",
    "prune_checkpoints",
    "remove_run",
    "run_entries",
]

STATE_FILE = "training_state.pt"
LATEST = "latest"
LOG_FILE = "log.jsonl"
FINAL = "final"
EVENTS_DIR = "tensorboard"  # the run's TensorBoard event files
_CHECKPOINT_NAME = re.compile(r"step-\d{7,}")
# Temporary names of this module's writers (atomic_directory and open_atomic use ".NAME.*.tmp").
_TEMPORARY = re.compile(r"\.(step-\d{7,}|latest|final|log\.jsonl)\..*\.tmp")


def _sync_tree(folder: str) -> None:
    """fsync every file of ``folder`` and the folder itself, so that a checkpoint named by
    ``latest`` survives a power cut whole (``latest`` is written durably after it)."""
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if os.path.isfile(path) and not os.path.islink(path):
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    with contextlib.suppress(OSError):  # not every file system syncs folders
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_model(folder: str, model, image_processor=None) -> None:
    model.save_pretrained(folder)
    if image_processor is not None:
        image_processor.save_pretrained(folder)


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
    # replace=True: the same step is written again after a resume from an older checkpoint.
    with atomic_directory(final, replace=True) as tmp:
        _write_model(tmp, model, image_processor)
        with open_atomic(os.path.join(tmp, STATE_FILE), "wb") as f:
            torch.save(training_state, f)
        _sync_tree(tmp)
    write_text(os.path.join(directory, LATEST), name + "\n", durable=True)
    return final


def save_model_folder(folder: str, model, image_processor=None) -> None:
    """Write a model folder (config.json, model.safetensors, preprocessor_config.json) as one
    atomic rename, replacing an older ``folder`` (a run's ``final``) only once the new one is
    complete."""
    with atomic_directory(folder, replace=True) as tmp:
        _write_model(tmp, model, image_processor)
        _sync_tree(tmp)


def save_model_files(folder: str, model, image_processor=None) -> List[str]:
    """Write the model's files into an existing ``folder`` that holds other files too (the
    pretraining log): each is written into a private temporary folder and then moved over its
    name, so an interrupted save leaves the old file and nothing is written through a planted
    symlink. Returns the names written."""
    os.makedirs(folder, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".model.", suffix=".tmp", dir=folder)
    try:
        _write_model(staging, model, image_processor)
        _sync_tree(staging)
        names = sorted(os.listdir(staging))
        for name in names:
            target = os.path.join(folder, name)
            if os.path.isdir(target) and not os.path.islink(target):
                raise IsADirectoryError(f"{target} is a folder; cannot write the model's {name}")
            os.replace(os.path.join(staging, name), target)
        return names
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def latest_checkpoint(directory: str) -> Optional[str]:
    """The newest complete checkpoint folder in ``directory``, or None when there is none.

    Raises:
        CheckpointError: ``latest`` is unreadable, names something other than a checkpoint
            folder, or names one that is missing or incomplete.
    """
    pointer = os.path.join(directory, LATEST)
    if not os.path.lexists(pointer):
        return None
    if os.path.islink(pointer) or not os.path.isfile(pointer):
        raise CheckpointError(f"{pointer} is not a plain file; it should name a checkpoint")
    try:
        with open(pointer, encoding="utf-8") as f:
            name = f.read(256).strip()
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"cannot read {pointer}: {e}") from None
    # Only a checkpoint name, never a path: a damaged or planted pointer cannot lead elsewhere.
    if not _CHECKPOINT_NAME.fullmatch(name):
        raise CheckpointError(f"{pointer} does not name a checkpoint folder (step-NNNNNNN)")
    path = os.path.join(directory, name)
    if not os.path.isfile(os.path.join(path, STATE_FILE)):
        raise CheckpointError(f"{pointer} names {name}, which is missing or incomplete")
    return path


def _fail(path: str, problem: str) -> CheckpointError:
    return CheckpointError(
        f"{path}: {problem} (a damaged file, or not a training state written by mask2former)"
    )


def _check_rng(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.dtype == torch.uint8 and value.dim() == 1


def _check_optimizer(state: Any) -> Optional[str]:
    if not isinstance(state, dict) or not isinstance(state.get("state"), dict):
        return "'optimizer' is not an optimiser state"
    groups = state.get("param_groups")
    if not isinstance(groups, list) or not all(
        isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups
    ):
        return "'optimizer' has no valid parameter groups"
    return None


def _check_state(state: Any) -> Optional[str]:
    """What is wrong with a loaded training state, or None."""
    if not isinstance(state, dict):
        return f"holds a {type(state).__name__}, not a training state"
    required = ("step", "optimizer", "scheduler", "scaler", "torch_rng", "train_config")
    missing = [key for key in required if key not in state]
    if missing:
        return f"missing {', '.join(missing)}"
    step = state["step"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        return f"'step' is {step!r}, not a step number"
    problem = _check_optimizer(state["optimizer"])
    if problem:
        return problem
    for key in ("scheduler", "scaler"):
        if not isinstance(state[key], dict):
            return f"'{key}' is a {type(state[key]).__name__}, not a state"
    if state["scheduler"].get("last_epoch") != step:
        return f"the scheduler's step {state['scheduler'].get('last_epoch')!r} is not {step}"
    if not _check_rng(state["torch_rng"]):
        return "'torch_rng' is not a random-number-generator state"
    cuda = state.get("cuda_rng", [])
    if not isinstance(cuda, (list, tuple)) or not all(_check_rng(t) for t in cuda):
        return "'cuda_rng' is not a list of random-number-generator states"
    try:
        settings = json.loads(state["train_config"])
    except (TypeError, ValueError):
        return "'train_config' is not the run's settings as JSON"
    if not isinstance(settings, dict):
        return "'train_config' is not the run's settings as JSON"
    world = state.get("world_size", 1)
    if isinstance(world, bool) or not isinstance(world, int) or world < 1:
        return f"'world_size' is {world!r}"
    return None


def _load_problem(error: Exception) -> str:
    """What a failed ``torch.load(weights_only=True)`` means, in words (torch's own message
    suggests loading without weights_only, which would run the file's code)."""
    if isinstance(error, pickle.UnpicklingError) and "GLOBAL" in str(error):
        return "holds Python objects that loading would have to run code for; refused unread"
    return "cannot be read: truncated, damaged or not a PyTorch file"


def load_training_state(checkpoint: str) -> Dict[str, Any]:
    """The checked training state of ``checkpoint`` (``train_config`` parsed into a dict as
    ``settings``).

    Raises:
        CheckpointError: naming the file, when it is missing, truncated, holds anything but
            tensors and plain values (a pickle that would run code is refused unread), or lacks
            a part of the state or has one of the wrong type.
    """
    path = os.path.join(checkpoint, STATE_FILE)
    if not os.path.isfile(path):
        raise CheckpointError(f"no {STATE_FILE} in {checkpoint}")
    try:
        with warnings.catch_warnings():  # torch's own notes on odd pickles say nothing useful
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds; all mean "not a usable state"
        raise _fail(path, _load_problem(e)) from None
    problem = _check_state(state)
    if problem:
        raise _fail(path, problem)
    state["settings"] = json.loads(state["train_config"])
    return state


def _checkpoint_folders(directory: str) -> List[str]:
    return sorted(
        name
        for name in os.listdir(directory)
        if _CHECKPOINT_NAME.fullmatch(name) and not os.path.islink(os.path.join(directory, name))
    )


def prune_checkpoints(directory: str, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (never the one ``latest`` names);
    ``keep <= 0`` keeps all."""
    if keep <= 0:
        return
    current = latest_checkpoint(directory)
    for name in _checkpoint_folders(directory)[:-keep]:
        path = os.path.join(directory, name)
        if current is None or os.path.abspath(path) != os.path.abspath(current):
            shutil.rmtree(path, ignore_errors=True)


def run_entries(directory: str) -> List[str]:
    """The entries of ``directory`` that a training run writes: checkpoints, ``latest``, the
    log, the TensorBoard event files, ``final`` and temporaries a killed run left."""
    if not os.path.isdir(directory):
        return []
    named = {LATEST, LOG_FILE, FINAL, EVENTS_DIR}
    return sorted(
        name
        for name in os.listdir(directory)
        if name in named or _CHECKPOINT_NAME.fullmatch(name) or _TEMPORARY.fullmatch(name)
    )


def remove_run(directory: str) -> List[str]:
    """Delete the previous training run in ``directory`` (the entries of :func:`run_entries`;
    other files are left alone); returns the names removed. A symlink is removed, never
    followed."""
    removed = run_entries(directory)
    for name in removed:
        path = os.path.join(directory, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    return removed
