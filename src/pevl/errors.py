"""User-facing errors: one line, naming the file and the problem."""

from __future__ import annotations

from pathlib import Path


class PevlError(Exception):
    """An error caused by user input (a file, a config value, a name), reported as one line.

    The CLI prints ``pevl: error: <message>`` and exits with status 2 instead of a traceback.
    """


class PevlWarning(UserWarning):
    """A warning about user input (a file, a setting); the CLI prints it as one ``warning: <message>`` line."""


def file_error(path: str | Path, problem: str) -> PevlError:
    """Build a :class:`PevlError` that names ``path`` and what is wrong with it.

    Args:
        path: The offending file.
        problem: A short description, e.g. ``"not a video file (no video stream)"``.

    Returns:
        The error, ready to raise.
    """
    return PevlError(f"{path}: {problem}")


_BOILERPLATE = ("weights only load failed", "please file an issue", "check the documentation", "re-running")


def first_line(err: BaseException) -> str:
    """The informative line of an error message (``torch.load`` wraps the cause in paragraphs of advice)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    useful = [line for line in lines if not line.lower().startswith(_BOILERPLATE)]
    return (useful or lines or [type(err).__name__])[0]
