"""File output: writability checks made before the work starts, and atomic writes.

:func:`check_output_file` and :func:`check_output_dir` tell, before a command spends minutes working, whether its
output can be written, as one line naming the path (raised as :class:`~pevl.errors.PevlError`). They create
nothing. The atomic helpers write to a temporary file beside the target, then rename it: a crash or an error
half-way never leaves a partial file under the final name, and the result gets the permissions of any file
created under the current umask.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from pevl.errors import PevlError


def current_umask() -> int:
    """The process's umask (from ``/proc`` where there is one, else by setting it and putting it back)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: str | Path, directory: bool = False) -> None:
    """Give ``path`` the mode a plain ``open`` / ``mkdir`` would have given it under the current umask.

    ``tempfile`` creates files 0600 and folders 0700 whatever the umask; a result renamed from such a temporary
    must not keep that mode.
    """
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


def _first_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists."""
    current = path
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def _probe_write(folder: Path, target: Path, what: str) -> None:
    """Create and delete a temporary file in ``folder``; a failure names ``target`` (what the user gave)."""
    try:
        fd, name = tempfile.mkstemp(prefix=".pevl-write-test-", dir=folder)
    except OSError as err:
        reason = err.strerror or type(err).__name__
        where = "" if folder == target.absolute() else f" {folder} is not writable:"
        raise PevlError(f"{target}: cannot write the {what}:{where} {reason}") from None
    os.close(fd)
    os.unlink(name)


def check_output_dir(path: str | Path, what: str = "output folder") -> Path:
    """Check that ``path`` is, or can be created as, a folder this process can write in; create nothing.

    Args:
        path: The folder.
        what: What the folder is, for the message (``"output folder"``, ``"cache folder"``).

    Returns:
        ``path`` as a :class:`Path`.

    Raises:
        PevlError: One line naming ``path``: it is a file, a file stands where a parent folder is needed, or the
            first existing folder on its way is not writable.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise PevlError(f"{path}: is a file; the {what} must be a folder")
    existing = _first_existing(path.absolute())
    if not existing.is_dir():
        raise PevlError(f"{path}: cannot create the {what}: {existing} is a file, not a folder")
    _probe_write(existing, path, what)
    return path


def check_output_file(path: str | Path, what: str = "output file") -> Path:
    """Check that the file ``path`` can be written (created or replaced); create nothing.

    Args:
        path: The file.
        what: What the file is, for the message.

    Returns:
        ``path`` as a :class:`Path`.

    Raises:
        PevlError: One line naming ``path``: it is a folder, its folder cannot be created, or is not writable.
    """
    path = Path(path)
    if path.is_dir():
        raise PevlError(f"{path}: is a folder; the {what} must be a file")
    parent = path.absolute().parent
    if parent.exists() and not parent.is_dir():
        raise PevlError(f"{path}: cannot write the {what}: {parent} is a file, not a folder")
    existing = _first_existing(parent)
    if not existing.is_dir():
        raise PevlError(f"{path}: cannot write the {what}: {existing} is a file, not a folder")
    _probe_write(existing, path, what)
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's directory; rename it to ``path`` on success.

    Use this when a library writes the file itself (``safetensors.torch.save_file``, ``fig.savefig``).
    On any exception the temporary file is removed and ``path`` is left untouched.

    Args:
        path: Final destination. Its parent directory is created if needed.

    Yields:
        The temporary path to write to.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():
            apply_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary file for writing; rename it to ``path`` when the block ends without error.

    Args:
        path: Final destination.
        mode: ``"w"`` (text) or ``"wb"`` (binary).
        encoding: Text encoding, ignored for binary mode.

    Yields:
        The open file object.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open supports 'w' and 'wb', not {mode!r}")
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def write_json(path: str | Path, obj: Any, indent: int = 2) -> None:
    """Write ``obj`` as JSON, atomically.

    Args:
        path: Destination file.
        obj: A JSON-serialisable object.
        indent: Indentation of the output.
    """
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=indent)
        f.write("\n")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): nothing of the input can be overwritten through it
        return False


def _how_same(output: Path, source: Path) -> str:
    """How ``output`` reaches ``source``: the same name, a symlink or a hard link (for the message)."""
    if output.absolute() == source.absolute():
        return ""
    if output.resolve() == source.resolve():
        return " (through a symbolic link)"
    return " (a hard link to it)"


def check_not_inputs(outputs: dict[str, str | Path | None], inputs: Iterable[str | Path | None]) -> None:
    """Refuse outputs that would overwrite an input or each other: call it before any work.

    Two paths are the same file when they name the same inode, so symbolic links and hard links are seen through.
    An output that does not exist yet overwrites nothing; two such outputs are compared by resolved path.

    Args:
        outputs: What each output is (``"--out-json"``, ``"skeleton pickle"``) -> the file to be written; ``None``
            entries are skipped. For a folder output, pass the files the command writes in it.
        inputs: The files the command reads (``None`` entries are skipped; folders are compared as paths).

    Raises:
        PevlError: One line naming the output, the input it is, and how (symbolic or hard link).
    """
    given = [(name, Path(path)) for name, path in outputs.items() if path is not None and str(path) != "-"]
    sources = [Path(path) for path in inputs if path is not None and str(path) != "-"]
    for name, output in given:
        for source in sources:
            if _same_file(output, source):
                raise PevlError(
                    f"{output}: the {name} is the input {source}{_how_same(output, source)}; writing it would "
                    "destroy the input: choose another path"
                )
    for i, (name, output) in enumerate(given):
        for other_name, other in given[i + 1 :]:
            if _same_file(output, other) or output.resolve() == other.resolve():
                raise PevlError(f"{output}: given as both the {name} and the {other_name}; choose two paths")
