"""Which checkpoint a command reads when it is given a work dir: one rule for eval, predict, explain and export.

Given a run's work dir (``-k work_dirs/run``), every command reads

- the **best** checkpoint (highest validation top-1) when the run validated, i.e. when it has a ``best`` pointer;
- the **latest** checkpoint otherwise (a run with ``train.eval_interval=0`` or no validation split).

``WORKDIR:latest`` or ``WORKDIR:best`` asks for the other one (``best`` fails when the run never validated).
A checkpoint directory, its ``model.safetensors`` or a ``latest`` / ``best`` pointer file is read as given.
The command prints the checkpoint it chose and why. ``pevl train --resume WORKDIR`` is the exception: resuming
always continues from the latest checkpoint.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pevl.engine.checkpoint import CHECKPOINTS_DIR, find_best, find_latest
from pevl.engine.distributed import is_main_process
from pevl.errors import PevlError, file_error

CHOICES = ("auto", "best", "latest")
"""``auto``: best when the run validated, else latest."""


def split_choice(spec: str | Path) -> tuple[Path, str | None]:
    """Split ``WORKDIR:best`` / ``WORKDIR:latest`` into the path and the choice (``None`` when not given).

    A path whose name really ends in ``:best`` / ``:latest`` is kept whole when it exists.
    """
    text = str(spec)
    for choice in ("best", "latest"):
        suffix = f":{choice}"
        if text.endswith(suffix) and not Path(text).expanduser().exists():
            return Path(text[: -len(suffix)]).expanduser(), choice
    return Path(text).expanduser(), None


def is_work_dir(path: Path) -> bool:
    """Whether ``path`` is a run's work dir (it holds a ``checkpoints`` folder)."""
    return path.is_dir() and (path / CHECKPOINTS_DIR).is_dir()


def choose_checkpoint(spec: str | Path, announce: bool = True) -> Path:
    """Resolve what a user passed as ``--checkpoint`` to the checkpoint to read (the rule of this module).

    Args:
        spec: A work dir (optionally ``:best`` / ``:latest``), a checkpoint dir, its model file or a pointer file.
        announce: Print ``checkpoint: <path> (<why>)`` to stderr when a work dir was resolved.

    Returns:
        The checkpoint directory (for a work dir) or ``spec`` itself, unchanged, for anything else.

    Raises:
        PevlError: ``:best`` / ``:latest`` on something that is not a work dir, or the asked-for checkpoint is missing.
    """
    path, choice = split_choice(spec)
    if not is_work_dir(path):
        if choice is not None:
            raise file_error(path, f"':{choice}' needs a work dir (a folder with a '{CHECKPOINTS_DIR}' folder)")
        return Path(spec)
    best, latest = find_best(path), find_latest(path)
    if choice == "best":
        if best is None:
            raise file_error(path, "has no best checkpoint (the run never validated); use it without ':best'")
        chosen, why = best, "best validation top-1, as asked"
    elif choice == "latest":
        if latest is None:
            raise file_error(path, f"no checkpoint found in {path / CHECKPOINTS_DIR}")
        chosen, why = latest, "latest, as asked"
    elif best is not None:
        chosen, why = best, f"best validation top-1; '{path}:latest' reads the latest"
    elif latest is not None:
        chosen, why = latest, "latest: the run has no validation"
    else:
        raise PevlError(f"{path}: no checkpoint found in {path / CHECKPOINTS_DIR}")
    if announce and is_main_process():
        print(f"checkpoint: {chosen} ({why})", file=sys.stderr)
    return chosen
