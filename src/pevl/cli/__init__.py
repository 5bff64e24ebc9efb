"""The ``pevl`` command line: a thin layer that parses arguments and calls the library.

Each sub-command lives in its own module of this package and defines ``register(subparsers)``, which adds
its parser and sets ``func`` to a callable taking the parsed arguments and returning an exit code.
Modules are discovered automatically, so adding a command never touches this file.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from typing import TextIO

from pevl.errors import PevlError


def add_set_option(parser: argparse.ArgumentParser, description: str) -> None:
    """Add the repeatable ``--set KEY=VALUE ...`` option (collected into ``args.overrides``) with its help text.

    ``--cfg-options`` is the same option under MMAction2's name.
    """
    parser.add_argument(
        "--set",
        "--cfg-options",
        dest="overrides",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help=f"{description}; --cfg-options is the same option",
    )


def show_warnings_as_lines() -> None:
    """Print the package's warnings (:class:`~pevl.errors.PevlWarning`) as one ``warning: <message>`` line.

    Other warnings keep Python's usual format (their source location helps there).
    """
    import warnings

    from pevl.errors import PevlWarning

    original = warnings.showwarning
    if getattr(original, "pevl_lines", False):
        return

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        if not issubclass(category, PevlWarning):
            original(message, category, filename, lineno, file, line)
            return
        print(f"warning: {message}", file=file or sys.stderr)

    show.pevl_lines = True  # type: ignore[attr-defined]
    warnings.showwarning = show


def checkpoint_inputs(path: str | None) -> list[str]:
    """What a ``--checkpoint`` argument reads: the path and, for a checkpoint folder, its model and state files.

    For the output-vs-input check (:func:`pevl.utils.io.check_not_inputs`) of the commands that load a checkpoint.
    """
    if not path:
        return []
    from pathlib import Path

    from pevl.engine.checkpoint import MODEL_FILE, STATE_FILE

    return [path, str(Path(path) / MODEL_FILE), str(Path(path) / STATE_FILE)]


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every sub-command of this package."""
    from pevl import __version__

    parser = argparse.ArgumentParser(
        prog="pevl",
        description="PeVL: pose-enhanced vision-language model for fine-grained human action recognition.",
    )
    parser.add_argument("--version", action="version", version=f"pevl {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``pevl`` command line.

    Args:
        argv: Arguments without the program name; ``sys.argv[1:]`` when ``None``.

    Returns:
        The process exit code: 0 on success, 2 for bad input, 130 when interrupted.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    show_warnings_as_lines()
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except PevlError as err:
        print(f"pevl: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pevl: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
