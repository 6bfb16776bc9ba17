"""The ``mask2former`` command: ``segment``, ``shapes``, ``pretrain-backbone``, ``train``,
``evaluate``, ``export``, ``plot`` and ``serve``.

Each subcommand lives in :mod:`mask2former.commands` with ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when needed so ``--help`` is instant. Errors a
user can cause end the command with a one-line message and a non-zero exit, never a traceback
(set ``MASK2FORMER_DEBUG=1`` to see one).
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib import import_module
from typing import List, Optional

__all__ = ["main", "console_main"]

COMMANDS = {
    "segment": ("segment images, folders or globs; write overlays, id maps and JSON", "segment"),
    "shapes": ("write the synthetic shapes dataset in COCO and semantic formats", "shapes"),
    "pretrain-backbone": (
        "pretrain a from-scratch backbone to classify masks, for train --init",
        "pretrain",
    ),
    "train": ("train or fine-tune a model", "train"),
    "evaluate": ("evaluate a model: PQ, mask AP, mIoU", "evaluate"),
    "export": ("export a model to ONNX for onnxruntime (needs the onnx extra)", "export"),
    "plot": ("draw the training curves of runs in a PNG (needs the plot extra)", "plot"),
    "serve": ("serve a model over HTTP: API and web page (needs the serve extra)", "serve"),
}


def _user_errors() -> tuple:
    from .checkpoint import CheckpointError
    from .config import ConfigError

    errors = [CheckpointError, ConfigError, ValueError, OSError, ImportError]
    try:
        from .data.errors import DatasetError

        errors.append(DatasetError)
    except ImportError:
        pass
    try:
        from .training.divergence import TrainingDiverged

        errors.append(TrainingDiverged)
    except ImportError:
        pass
    return tuple(errors)


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad option is one line naming it (no usage block); ``--help`` has it."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser(command: Optional[str] = None) -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(
        prog="mask2former",
        description="Mask2Former universal image segmentation (panoptic, instance, semantic).",
    )
    parser.add_argument("--version", action="version", version=f"mask2former {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (help_text, module) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        # Only the chosen command's module is imported (torch and friends load lazily).
        if command in (None, name):
            import_module(f"mask2former.commands.{module}").add_arguments(p)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if a in COMMANDS), None)
    parser = build_parser(command)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a bad option already reported
        return e.code if isinstance(e.code, int) else 2
    if args.command is None:
        parser.print_help()
        return 2
    module = import_module(f"mask2former.commands.{COMMANDS[args.command][1]}")
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("mask2former: interrupted", file=sys.stderr)
        return 130
    except _user_errors() as e:
        if os.environ.get("MASK2FORMER_DEBUG"):
            raise
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"mask2former {args.command}: error: {message}", file=sys.stderr)
        return 1


def console_main() -> int:
    """The installed ``mask2former`` program: :func:`main` in a process of its own, which may
    therefore keep freed memory for reuse (see :mod:`mask2former.memory_reuse`)."""
    from .memory_reuse import enable_memory_reuse, memory_reuse_wanted

    if memory_reuse_wanted():
        enable_memory_reuse()
    return main()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(console_main())
