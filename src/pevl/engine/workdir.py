"""Work-dir safety: one live run per work dir, and no run that silently replaces or appends to another.

* A work dir that holds a run (its ``config.yaml``, ``metrics.jsonl``, ``train.log`` or checkpoints) is continued
  with ``--resume``, or left alone: ``--new-run`` starts a timestamped sub-run inside it (MMEngine's habit) and
  ``--overwrite`` deletes the earlier run's files first. Without one of them, training refuses in one line.
* A lock file (``.pevl-lock``: the holder's pid, host and start time) stops two live runs sharing a work dir. A
  lock left by a process that no longer runs on this host is stale: it is taken over with a warning. A lock held by
  a live process (or by another host, which cannot be checked) is waited for at most ``timeout`` seconds.
* Under torchrun, rank 0 alone checks the work dir and takes the lock, then tells every rank its answer through the
  process group (:func:`share_outcome`): a refusal ends every rank at once with rank 0's one-line message, rather
  than leaving the others waiting for the process group's timeout.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from pevl.errors import PevlError

LOCK_FILE = ".pevl-lock"
LOCK_WAIT_S = 10.0
"""Seconds a run waits for another live run's lock before it refuses (covers a run that is just finishing)."""
RUN_FILES = ("config.yaml", "metrics.jsonl", "train.log", "checkpoints", "tensorboard")
"""What a training run writes in its work dir (the pose cache ``poses/`` is shared, not a run's)."""


def run_files(work_dir: str | Path) -> list[str]:
    """The names of :data:`RUN_FILES` present in ``work_dir`` (empty: it holds no run)."""
    work_dir = Path(work_dir)
    return [name for name in RUN_FILES if (work_dir / name).exists()]


def new_run_dir(work_dir: str | Path) -> Path:
    """A fresh timestamped sub-run folder name inside ``work_dir`` (``20261206_041502``, ``..._1`` if taken)."""
    base = Path(work_dir) / datetime.datetime.now().strftime("%Y%m%d_%H%M%S")
    path, n = base, 0
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}_{n}")
    return path


def remove_run(work_dir: str | Path) -> list[str]:
    """Delete the earlier run's files (:data:`RUN_FILES` only) from ``work_dir``; returns what was removed."""
    removed = run_files(work_dir)
    for name in removed:
        path = Path(work_dir) / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    return removed


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    now = _process_start(pid)
    return start is None or now is None or now == start


class WorkDirLock:
    """An exclusive lock on a work dir, held for the length of a run (a context manager).

    Args:
        work_dir: The folder to lock; it (and missing parents) is created, and removed again on release when
            the run left nothing in it.
        timeout: Seconds to wait for a live holder before refusing (default :data:`LOCK_WAIT_S`).
    """

    def __init__(self, work_dir: str | Path, timeout: float | None = None) -> None:
        self.work_dir = Path(work_dir)
        self.path = self.work_dir / LOCK_FILE
        self.timeout = LOCK_WAIT_S if timeout is None else timeout
        self._created: list[Path] = []
        self._held = False

    def _record(self) -> dict:
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "start": _process_start(os.getpid()),
            "since": datetime.datetime.now().isoformat(timespec="seconds"),
        }

    def _holder(self) -> dict | None:
        """The lock file's content; ``{}`` when unreadable (being written), ``None`` when there is none."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _stale(self, holder: dict) -> bool:
        if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
            return False
        return not _alive(holder["pid"], holder.get("start"))

    def _try_create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self._record(), f)
        return True

    def acquire(self) -> None:
        """Take the lock, taking over a stale one and waiting at most ``timeout`` s for a live holder.

        Raises:
            PevlError: Another live run (or a run on another host) holds the work dir, naming it.
        """
        missing = []
        for folder in [self.work_dir, *self.work_dir.parents]:
            if folder.exists():
                break
            missing.append(folder)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._created = missing
        deadline = time.monotonic() + self.timeout
        holder: dict | None = None
        while True:
            if self._try_create():
                self._held = True
                return
            holder = self._holder()
            if holder and self._stale(holder):
                print(
                    f"warning: {self.path}: taking over the lock of process {holder['pid']}, which no longer runs",
                    file=sys.stderr,
                )
                stale = self.path.with_name(f"{LOCK_FILE}.stale-{os.getpid()}")
                with contextlib.suppress(OSError):  # rename first: of two runs taking it over, one wins
                    os.replace(self.path, stale)
                    stale.unlink()
                continue
            if time.monotonic() >= deadline:
                break
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        self._remove_created()
        who = (
            f"process {holder.get('pid')} on {holder.get('host')} (since {holder.get('since')})"
            if holder
            else "another process"
        )
        raise PevlError(
            f"{self.work_dir}: another training run uses this work dir: {who}; waited {self.timeout:g} s. "
            f"Use another --work-dir, or delete {self.path} if that run is over"
        )

    def release(self) -> None:
        """Give the lock back (only our own) and remove the folders :meth:`acquire` created if nothing is in them."""
        if self._held:
            holder = self._holder()
            if holder is not None and holder.get("pid") == os.getpid():
                with contextlib.suppress(OSError):
                    self.path.unlink()
            self._held = False
        self._remove_created()

    def _remove_created(self) -> None:
        for folder in self._created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty: a bad input leaves no work dir behind
        self._created = []

    def __enter__(self) -> WorkDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _refuse_deleting_inputs(run_dir: Path, names: list[str], inputs: Iterable[str | Path | None]) -> None:
    """Refuse ``--overwrite`` when an input of the new run is one of the earlier run's files (or inside them)."""
    doomed = [(run_dir / name).resolve() for name in names]
    for source in inputs:
        if source is None or not Path(source).exists():
            continue
        resolved = Path(source).resolve()
        for path in doomed:
            if resolved == path or resolved.is_relative_to(path):
                raise PevlError(
                    f"{source}: an input of this run is the earlier run's {path.name}, which --overwrite would "
                    "delete; copy it elsewhere first or use --new-run"
                )


def share_outcome(failure: BaseException | None) -> None:
    """Give every rank of a running process group rank 0's verdict on the work dir; raise it on every rank.

    Without a process group (or with one process) ``failure`` is raised as it is. With one, rank 0 broadcasts
    ``None`` (go on) or the one-line message of ``failure``; rank 0 then raises its own ``failure`` and every other
    rank a :class:`PevlError` with the same message, so that every process exits with the same line, not after
    the process group's timeout.

    Args:
        failure: What stopped rank 0 (``None``: the run may go on); ignored on the other ranks.

    Raises:
        PevlError: Rank 0 refused (on the other ranks), or ``failure`` itself (on rank 0).
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        if failure is not None:
            raise failure
        return
    main = dist.get_rank() == 0
    verdict: list[str | None] = [None]
    if main and failure is not None:
        text = str(failure).strip().splitlines()
        verdict[0] = text[0] if isinstance(failure, PevlError) and text else f"rank 0 failed: {failure!r}"
    dist.broadcast_object_list(verdict, src=0)  # the ranks' own job data, never a file
    if main and failure is not None:
        raise failure
    if verdict[0] is not None:
        raise PevlError(verdict[0])


def _check_run_dir(run_dir: Path, resume: bool, overwrite: bool, inputs: Iterable[str | Path | None]) -> None:
    """Refuse a work dir that holds a run unless told what to do with it; delete it with ``overwrite``."""
    existing = run_files(run_dir)
    if existing and overwrite:
        _refuse_deleting_inputs(run_dir, existing, inputs)
        removed = remove_run(run_dir)
        print(f"warning: {run_dir}: deleted the earlier run's {', '.join(removed)} (--overwrite)", file=sys.stderr)
    elif existing and not resume:
        raise PevlError(
            f"{run_dir}: holds a run ({', '.join(existing)}); continue it with --resume, start a new run in a "
            "timestamped sub-folder with --new-run, or replace it with --overwrite"
        )


@contextlib.contextmanager
def locked_run_dir(
    work_dir: str | Path,
    *,
    resume: bool,
    overwrite: bool = False,
    new_run: bool = False,
    lock: bool = True,
    timeout: float | None = None,
    inputs: Iterable[str | Path | None] = (),
) -> Iterator[Path]:
    """Lock the work dir of a run and make sure the run may write there; yields the run's folder.

    Args:
        work_dir: The ``--work-dir``.
        resume: The run continues the work dir's run.
        overwrite: Delete an earlier run's files (:data:`RUN_FILES`) first.
        new_run: Run in a new timestamped sub-folder of ``work_dir``.
        lock: Take the lock and check the work dir (rank 0 of a distributed run only: when a process group is
            running, every rank waits for rank 0's verdict, :func:`share_outcome`).
        timeout: Seconds to wait for another live run's lock (default :data:`LOCK_WAIT_S`).
        inputs: Files the run reads: ``overwrite`` refuses to delete any of them.

    Raises:
        PevlError: The work dir holds a run and none of ``resume`` / ``overwrite`` / ``new_run`` was given, two of
            them were, ``overwrite`` would delete an input, or another live run holds the lock.
    """
    if sum(map(bool, (resume, overwrite, new_run))) > 1:
        raise PevlError("--resume, --overwrite and --new-run exclude one another: give one")
    run_dir = new_run_dir(work_dir) if new_run else Path(work_dir)
    held = WorkDirLock(run_dir, timeout) if lock else None
    failure: BaseException | None = None
    try:
        if held is not None:
            held.acquire()
            _check_run_dir(run_dir, resume, overwrite, inputs)
    except Exception as err:  # noqa: BLE001 -- every rank must hear of it, then it is raised again
        failure = err
    try:
        share_outcome(failure)
        yield run_dir
    finally:
        if held is not None:
            held.release()
