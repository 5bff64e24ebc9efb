"""Reading annotation files: plain lines, class-name maps, MMAction2 video / rawframe lists.

Every reader raises :class:`~pevl.errors.PevlError` naming the file (and the line) on bad input.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pevl.errors import file_error


def read_lines(path: str | Path) -> list[tuple[int, str]]:
    """Non-empty, stripped lines of a text file with their 1-based line numbers.

    Raises:
        PevlError: The file is missing or not UTF-8 text.
    """
    path = Path(path)
    if not path.is_file():
        raise file_error(path, "no such file" if not path.exists() else "not a file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise file_error(path, "not a UTF-8 text file") from None
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


_FINEGYM_CATEGORY = re.compile(r"^Clabel:\s*(\d+)\s*;.*?;\s*Glabel:\s*\d+\s*;\s*(.*)$")


def read_class_names(path: str | Path) -> list[str]:
    """Class names, one per line, in label order.

    Also reads FineGym's category files (``Clabel: 0; set: 1; Glabel: 1; (VT) round-off, ...``), ordered by
    ``Clabel``.

    Raises:
        PevlError: Missing file, no names, or a FineGym category file with gaps in ``Clabel``.
    """
    lines = read_lines(path)
    if not lines:
        raise file_error(path, "holds no class names")
    matches = [_FINEGYM_CATEGORY.match(line) for _, line in lines]
    if all(matches):
        by_label = {int(m.group(1)): m.group(2).strip() for m in matches}  # type: ignore[union-attr]
        if sorted(by_label) != list(range(len(by_label))):
            raise file_error(path, "Clabel values are not 0..N-1")
        return [by_label[i] for i in range(len(by_label))]
    return [line for _, line in lines]


@dataclass(frozen=True)
class ListEntry:
    """One line of a video or rawframe list.

    Attributes:
        name: The video path or frame folder as written (relative to the data folder).
        label: Class index.
        num_frames: Frame count (rawframe lists only).
        line: Line number in the file.
    """

    name: str
    label: int
    num_frames: int | None
    line: int


def parse_video_list(path: str | Path) -> list[ListEntry]:
    """Parse an MMAction2-style list: ``<video> <label>`` or ``<frame folder> <num frames> <label>`` per line.

    Comma-separated ``<video>,<label>`` lines are accepted too. Multi-label lines keep the first label.

    Raises:
        PevlError: Missing file or a line that is neither form (naming the line).
    """
    entries = []
    for number, line in read_lines(path):
        tokens = line.split(",") if "," in line and line.rsplit(",", 1)[-1].strip().isdigit() else line.split()
        tokens = [t.strip() for t in tokens]
        if len(tokens) >= 3 and tokens[-1].isdigit() and tokens[-2].isdigit():
            name, frames, label = " ".join(tokens[:-2]), int(tokens[-2]), int(tokens[-1])
            if not _looks_like_video(name):
                entries.append(ListEntry(name, label, frames, number))
                continue
        if len(tokens) >= 2 and tokens[1].lstrip("-").isdigit():
            entries.append(ListEntry(tokens[0], int(tokens[1]), None, number))
            continue
        raise file_error(path, f"line {number}: expected '<video> <label>' or '<frames> <num_frames> <label>'")
    return entries


def _looks_like_video(name: str) -> bool:
    return Path(name).suffix.lower() in {".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv"}


def find_existing(candidates: Iterable[Path]) -> Path | None:
    """The first candidate path that exists."""
    for candidate in candidates:
        if candidate.exists():
            return candidate
    return None


def check_labels(path: str | Path, entries: list[ListEntry], num_classes: int) -> None:
    """Every label must be a valid class index.

    Raises:
        PevlError: Naming the first line with an unknown class.
    """
    for entry in entries:
        if not 0 <= entry.label < num_classes:
            raise file_error(path, f"line {entry.line}: unknown class {entry.label} (there are {num_classes} classes)")
