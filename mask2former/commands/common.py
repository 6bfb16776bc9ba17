"""What the subcommands share: argument types and argument groups.

Argument types turn a bad value into argparse's one-line error naming the option, before
anything is loaded: ``parser.add_argument("--batch-size", type=positive_int, ...)``.
``device`` imports torch only for values other than "cpu", so ``--help`` and the default stay
instant.

Argument groups add the options several commands have, with one spelling, type and check:
:func:`add_model_arguments` (--model, --device, --dtype), :func:`add_device_argument`,
:func:`add_output_arguments` (--out, --overwrite, --resume), :func:`add_training_data_arguments`
(--data ... --crop) and :func:`add_loading_arguments` (--batch-size, --workers); each takes
the command's own defaults and help texts.
"""

from __future__ import annotations

import argparse
import math
from typing import Optional, Union

__all__ = [
    "add_inference_model_arguments",
    "positive_int",
    "nonnegative_int",
    "positive_float",
    "nonnegative_float",
    "probability",
    "device",
    "DTYPES",
    "add_device_argument",
    "add_loading_arguments",
    "add_model_arguments",
    "add_output_arguments",
    "add_progress_argument",
    "add_training_data_arguments",
]

Group = Union[argparse.ArgumentParser, argparse._ArgumentGroup]

#: Model precisions of --dtype.
DTYPES = ("float32", "bfloat16", "float16")
DEVICE_HELP = "cpu, cuda or cuda:N"
MODEL_HELP = "built-in model name, checkpoint folder or hub id"


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def positive_float(text: str) -> float:
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def nonnegative_float(text: str) -> float:
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def probability(text: str) -> float:
    value = _float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def device(text: str) -> str:
    """A torch device name that exists on this machine ("cpu", "cuda", "cuda:1", "mps")."""
    if text == "cpu":
        return text
    import torch

    try:
        parsed = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(
            f"unknown device {text!r} (use cpu, cuda or cuda:N)"
        ) from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text!r}: CUDA is not available on this machine")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(
                f"{text!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    elif parsed.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise argparse.ArgumentTypeError(f"{text!r}: MPS is not available on this machine")
    elif parsed.type != "cpu":
        raise argparse.ArgumentTypeError(f"device {text!r} is not supported (use cpu or cuda)")
    return text


# -- argument groups ------------------------------------------------------------------------


def add_device_argument(group: Group, help: str = DEVICE_HELP) -> None:
    """``--device`` (default cpu): a device that exists on this machine."""
    group.add_argument("--device", type=device, default="cpu", help=help)


def add_inference_model_arguments(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The model group of the commands that serve a model to images (segment, serve): the
    built-in "shapes" by default, precision left to the model (float32)."""
    return add_model_arguments(
        parser,
        model_help="built-in model name, checkpoint folder or hub id (default: the built-in "
        "'shapes')",
        metavar="NAME_OR_PATH",
        dtype_default=None,
        dtype_help="model precision (default: float32)",
        device_help="cpu or cuda (default: cpu)",
    )


def add_model_arguments(
    parser: argparse.ArgumentParser,
    *,
    model_help: str = MODEL_HELP,
    metavar: Optional[str] = None,
    dtype_default: Optional[str] = "float32",
    dtype_help: Optional[str] = None,
    device_help: Optional[str] = None,
) -> argparse._ArgumentGroup:
    """A "model" group for the commands that run a trained model (segment, evaluate):
    ``--model`` (default the built-in "shapes"), ``--device``, ``--dtype`` (one of
    :data:`DTYPES`; ``dtype_default`` None leaves the choice to the command) and ``--backend``."""
    group = parser.add_argument_group("model")
    group.add_argument("--model", default="shapes", metavar=metavar, help=model_help)
    add_device_argument(group, help=device_help)
    group.add_argument("--dtype", choices=DTYPES, default=dtype_default, help=dtype_help)
    group.add_argument(
        "--backend",
        choices=("torch", "onnxruntime"),
        default=None,
        help="runtime: torch, or onnxruntime for a folder written by 'mask2former export' "
        "(needs the onnx extra); default: onnxruntime for a folder with model.onnx and no "
        "PyTorch weights, else torch",
    )
    return group


def add_output_arguments(
    parser: argparse.ArgumentParser,
    *,
    out_help: str,
    overwrite_help: str,
    resume_help: Optional[str] = None,
    required: bool = True,
    default: Optional[str] = None,
    metavar: Optional[str] = None,
) -> argparse._ArgumentGroup:
    """An "output" group: ``--out`` (required unless a ``default`` is given), ``--overwrite``
    and, with ``resume_help``, ``--resume``, which excludes ``--overwrite``."""
    group = parser.add_argument_group("output")
    group.add_argument(
        "--out", required=required and default is None, default=default, metavar=metavar,
        help=out_help,
    )  # fmt: skip
    start = group.add_mutually_exclusive_group() if resume_help else group
    if resume_help:
        start.add_argument("--resume", action="store_true", help=resume_help)
    start.add_argument("--overwrite", action="store_true", help=overwrite_help)
    return group


def add_training_data_arguments(
    parser: argparse.ArgumentParser, *, num_train: int, cache_help: str, scales: bool
) -> argparse._ArgumentGroup:
    """A "data" group for the training commands: ``--data``, ``--task``, ``--num-train``
    (default ``num_train``), ``--cache``, ``--data-seed``, ``--image-size``, ``--crop`` and,
    with ``scales``, the jitter's ``--min-scale`` and ``--max-scale``."""
    from ..config import TASKS

    data = parser.add_argument_group("data")
    data.add_argument("--data", default="shapes", help="dataset folder or 'shapes' (generated)")
    data.add_argument(
        "--task",
        default="panoptic",
        choices=list(TASKS),
        help="what the model is for: chooses the annotations and the default inference task",
    )
    data.add_argument(
        "--num-train", type=positive_int, default=num_train, help="generated training images"
    )
    data.add_argument("--cache", action="store_true", help=cache_help)
    data.add_argument("--data-seed", type=int, default=0, help="seed of the generated images")
    data.add_argument(
        "--image-size", type=positive_int, default=256, help="side of generated images"
    )
    data.add_argument("--crop", type=positive_int, default=256, help="training crop size (256)")
    if scales:
        data.add_argument(
            "--min-scale", type=positive_float, default=0.1, help="jitter scale range (0.1)"
        )
        data.add_argument("--max-scale", type=positive_float, default=2.0, help="(2.0)")
    return data


def add_loading_arguments(
    group: Group,
    *,
    batch_size: int,
    batch_help: Optional[str] = None,
    metavar: Optional[str] = None,
    workers: bool = False,
) -> None:
    """``--batch-size`` (default ``batch_size``) and, with ``workers``, ``--workers``
    (data-loading processes, default 0)."""
    group.add_argument(
        "--batch-size", type=positive_int, default=batch_size, metavar=metavar, help=batch_help
    )
    if workers:
        group.add_argument(
            "--workers", type=nonnegative_int, default=0, help="data-loading processes"
        )


def add_progress_argument(group: Group, help: Optional[str] = None) -> None:
    """``--no-progress``: no progress bar."""
    group.add_argument("--no-progress", action="store_true", help=help)
