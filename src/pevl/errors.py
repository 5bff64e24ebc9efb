"""User-facing errors: one line, naming the file and the problem."""

from __future__ import annotations

from pathlib import Path


class PevlError(Exception):
    """An error caused by user input (a file, a config value, a name), reported as one line.

    The CLI prints ``pevl: error: <message>`` and exits with status 2 instead of a traceback.
    """


def file_error(path: str | Path, problem: str) -> PevlError:
    """Build a :class:`PevlError` that names ``path`` and what is wrong with it.

    Args:
        path: The offending file.
        problem: A short description, e.g. ``"not a video file (no video stream)"``.

    Returns:
        The error, ready to raise.
    """
    return PevlError(f"{path}: {problem}")
