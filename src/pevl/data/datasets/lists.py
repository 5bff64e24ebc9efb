"""Reading annotation files: plain lines, class-name maps, MMAction2 video / rawframe lists.

Every reader raises :class:`~pevl.errors.PevlError` naming the file (and the line) on bad input.
"""

from __future__ import annotations

import dataclasses
import json
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

from pevl.data.labels import class_text_key, first_duplicate, python_label_map
from pevl.errors import PevlError, PevlWarning, file_error


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
_ID_COLON_NAME = re.compile(r"^(\d+)\s*:\s*(\S.*)$")  # AVA / MultiSports "12: stand"
_ID_SPACE_NAME = re.compile(r"^(\d+)\s+([^\d\s].*)$")  # UCF101 classInd.txt "1 ApplyEyeMakeup"
_PBTXT_ITEM = re.compile(r"item\s*\{(.*?)\}", re.S)


@dataclass(frozen=True)
class LabelMap:
    """Class names with the ids a dataset's annotations use for them.

    Attributes:
        ids: The class id of each class, in class-index order (``0..N-1`` for plain name-per-line maps; the
            file's own ids, possibly sparse, for ``id: name`` maps such as AVA's).
        names: The class name of each class, in the same order.
        lines: The line of the file each class is on, in the same order (empty when the format has no lines
            per class, e.g. JSON).
    """

    ids: tuple[int, ...]
    names: tuple[str, ...]
    lines: tuple[int, ...] = dataclasses.field(default=(), compare=False)

    @property
    def contiguous(self) -> bool:
        """Whether the ids are exactly ``0..N-1`` (class index == class id)."""
        return self.ids == tuple(range(len(self.ids)))

    def index(self, class_id: int) -> int:
        """The class index of a class id.

        Raises:
            KeyError: The id is not in the map.
        """
        return self._positions[class_id]

    @cached_property
    def _positions(self) -> dict[int, int]:
        return {class_id: i for i, class_id in enumerate(self.ids)}

    def name_of(self, class_id: int) -> str:
        """The name of a class id (``KeyError`` when unknown)."""
        return self.names[self.index(class_id)]


DUPLICATE_NAMES = ("error", "warn", "allow")
"""What a label map naming one class twice does: refuse, warn (a dataset whose official map has such names, e.g.
FineGym's Gym99 ``(BB) salto backward tucked`` on lines 59 and 71: a beam element and a dismount) or pass (files
that are not class names, such as one coarse type per class)."""


def read_label_map(path: str | Path, duplicates: str = "error") -> LabelMap:
    """Read a label map in any of the formats MMAction2 and its datasets use.

    - one name per line (MMAction2 ``label_map_k400.txt``, NTU, Diving48, FineGym names): ids ``0..N-1``;
    - ``id: name`` lines (AVA, MultiSports) or ``id name`` lines (UCF101 ``classInd.txt``): the file's ids,
      kept as written even when sparse (AVA's 60 evaluated classes out of 80), in increasing id order;
    - AVA's ``.pbtxt`` (``item { name: "..." id: N }``);
    - JSON: a list of names, ``{"id": "name"}`` or ``{"name": id}``;
    - FineGym category files (``Clabel: 0; set: 1; Glabel: 1; (VT) ...``);
    - a Python dict literal ``{'name': id, ...}`` (or ``{id: 'name'}``), bare or as one assignment
      (:func:`pevl.data.labels.python_label_map`); other Python-like files (e.g. Toyota-Smarthome's
      ``official_2sAGCN_class_maps_and_subjects.txt``) are an error, never names.

    Two classes with the same text (:func:`pevl.data.labels.class_text_key`) would split one probability:
    ``duplicates`` says whether that is an error naming both lines (the default), a warning, or allowed.

    Raises:
        PevlError: Missing, binary or non-UTF-8 file, malformed JSON, a file mixing ``id: name`` lines with
            other lines, duplicate ids, a class named twice (``duplicates="error"``), or a file holding fewer than
            one name per line (e.g. a whole JSON map on one line that is not valid JSON); the message names the
            file and the line.
    """
    if duplicates not in DUPLICATE_NAMES:
        raise PevlError(f"duplicates={duplicates!r}: choose from {', '.join(DUPLICATE_NAMES)}")
    label_map = _read_label_map(Path(path))
    _check_unique_names(Path(path), label_map, duplicates)
    return label_map


def _check_unique_names(path: Path, label_map: LabelMap, duplicates: str) -> None:
    """Refuse or warn about the first class name a label map gives twice, naming both lines."""
    pair = first_duplicate(label_map.names) if duplicates != "allow" else None
    if pair is None:
        return
    first, again = pair
    where = (
        f"lines {label_map.lines[first]} and {label_map.lines[again]}"
        if label_map.lines
        else f"classes {first + 1} and {again + 1}"
    )
    names = repr(label_map.names[again])
    if label_map.names[first] != label_map.names[again]:
        names = f"{label_map.names[first]!r} and {names}"
    message = f"{where} both name {names}: two identical texts split one class's probability"
    if duplicates == "error":
        raise file_error(path, f"{message}; give each class once")
    count = len(label_map.names) - len({class_text_key(n) for n in label_map.names})
    more = f" ({count} such repeats)" if count > 1 else ""
    warnings.warn(f"{path}: {message}, and the model cannot tell them apart{more}", PevlWarning, stacklevel=3)


def _read_label_map(path: Path) -> LabelMap:
    """:func:`read_label_map` without the check of repeated names."""
    if not path.is_file():
        raise file_error(path, "no such file" if not path.exists() else "not a file")
    raw = path.read_bytes()
    if b"\0" in raw[:4096]:
        raise file_error(path, "is a binary file, not a label map")
    lines = read_lines(path)
    if not lines:
        raise file_error(path, "holds no class names")
    text = "\n".join(line for _, line in lines)
    python_pairs = python_label_map(str(path), text)  # a dict literal, or a Python-like file that is no label map
    if python_pairs is not None:
        return LabelMap(tuple(i for i, _ in python_pairs), tuple(n for _, n in python_pairs))
    if path.suffix.lower() == ".json" or text[0] in "[{":
        if path.suffix.lower() == ".pbtxt" or _PBTXT_ITEM.search(text):
            return _pbtxt_map(path, text)
        return _json_map(path, text)
    if path.suffix.lower() == ".pbtxt" or text.startswith("item"):
        return _pbtxt_map(path, text)
    finegym = [_FINEGYM_CATEGORY.match(line) for _, line in lines]
    if all(finegym):
        pairs = [(int(m.group(1)), m.group(2).strip()) for m in finegym]  # type: ignore[union-attr]
        result = _id_map(path, pairs, [n for n, _ in lines])
        if not result.contiguous:
            raise file_error(path, "Clabel values are not 0..N-1")
        return result
    for pattern in (_ID_COLON_NAME, _ID_SPACE_NAME):
        matches = [pattern.match(line) for _, line in lines]
        hits = sum(m is not None for m in matches)
        if hits == len(lines):
            pairs = [(int(m.group(1)), m.group(2).strip()) for m in matches]  # type: ignore[union-attr]
            return _id_map(path, pairs, [n for n, _ in lines])
        if pattern is _ID_COLON_NAME and hits * 2 > len(lines):
            number = next(n for (n, _), m in zip(lines, matches, strict=True) if m is None)
            raise file_error(path, f"line {number}: not an 'id: name' line like the others")
    names = [line for _, line in lines]
    if len(names) == 1 and any(sep in names[0] for sep in (",", ";", "\t")):
        raise file_error(path, "holds a single line of several names; a label map has one class name per line")
    return LabelMap(tuple(range(len(names))), tuple(names), tuple(n for n, _ in lines))


def relabel(path: str | Path, entries: list[ListEntry], label_map: LabelMap) -> list[ListEntry]:
    """Turn the class ids of list entries into class indices of ``label_map`` (a no-op for ``0..N-1`` maps).

    Raises:
        PevlError: Naming the first line whose id the map does not have.
    """
    if label_map.contiguous:
        return entries
    out = []
    for entry in entries:
        try:
            labels = tuple(label_map.index(label) for label in entry.labels)
        except KeyError:
            bad = next(label for label in entry.labels if label not in label_map.ids)
            raise file_error(path, f"line {entry.line}: class id {bad} is not in the label map") from None
        out.append(replace(entry, label=labels[0] if labels else -1, labels=labels))
    return out


def _id_map(path: Path, pairs: list[tuple[int, str]], numbers: list[int], lines: bool = True) -> LabelMap:
    """A map of ``(id, name)`` pairs found on lines ``numbers`` (``lines=False``: item numbers, not lines)."""
    seen: dict[int, int] = {}
    for (class_id, _), number in zip(pairs, numbers, strict=True):
        if class_id in seen:
            raise file_error(path, f"line {number}: id {class_id} already named on line {seen[class_id]}")
        seen[class_id] = number
    rows = sorted((class_id, name, number) for (class_id, name), number in zip(pairs, numbers, strict=True))
    return LabelMap(
        tuple(i for i, _, _ in rows), tuple(n for _, n, _ in rows), tuple(k for _, _, k in rows) if lines else ()
    )


def _json_map(path: Path, text: str) -> LabelMap:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise file_error(path, f"not valid JSON (line {err.lineno}: {err.msg})") from None
    if isinstance(data, list) and data and all(isinstance(x, str) for x in data):
        return LabelMap(tuple(range(len(data))), tuple(data))
    if isinstance(data, dict) and data:
        keys, values = list(data), list(data.values())
        if all(_is_int(k) for k in keys) and all(isinstance(v, str) for v in values):
            return _id_map(path, [(int(k), v) for k, v in data.items()], [0] * len(data), lines=False)
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            by_id: dict[int, str] = {}
            for name, class_id in data.items():
                if class_id in by_id:
                    raise file_error(path, f"id {class_id} names both {by_id[class_id]!r} and {name!r}")
                by_id[class_id] = name
            return _id_map(path, sorted(by_id.items()), [0] * len(by_id), lines=False)
    raise file_error(path, 'JSON label map must be a list of names, {"id": "name"} or {"name": id}')


def _pbtxt_map(path: Path, text: str) -> LabelMap:
    pairs = []
    for number, match in enumerate(_PBTXT_ITEM.finditer(text), 1):
        body = match.group(1)
        name = re.search(r'\bname:\s*"([^"]*)"', body) or re.search(r'\bdisplay_name:\s*"([^"]*)"', body)
        class_id = re.search(r"\b(?:label_)?id:\s*(\d+)", body)
        if name is None or class_id is None:
            raise file_error(path, f"item {number} has no name or no id")
        pairs.append((int(class_id.group(1)), name.group(1)))
    if not pairs:
        raise file_error(path, "no 'item { name: ... id: ... }' entries")
    return _id_map(path, pairs, list(range(1, len(pairs) + 1)), lines=False)


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def read_class_names(path: str | Path, duplicates: str = "error") -> list[str]:
    """Class names in class-index order, from any label map :func:`read_label_map` reads.

    For maps with their own ids the names come in increasing id order; use :func:`read_label_map` to turn
    those ids into class indices.

    Raises:
        PevlError: As :func:`read_label_map`.
    """
    return list(read_label_map(path, duplicates).names)


@dataclass(frozen=True)
class ListEntry:
    """One line of a video or rawframe list.

    Attributes:
        name: The video path or frame folder as written (relative to the data folder).
        label: Class index: the first label of the line, -1 when the line has none (a test-time list).
        num_frames: Frame count (rawframe lists only).
        line: Line number in the file.
        labels: Every label of the line (several on multi-label lines; empty when unlabelled).
        offset: Rawframe lists written ``with_offset``: frames of the folder before the clip's first one.
    """

    name: str
    label: int
    num_frames: int | None
    line: int
    labels: tuple[int, ...] = ()
    offset: int = 0

    def __post_init__(self) -> None:
        if not self.labels and self.label >= 0:
            object.__setattr__(self, "labels", (int(self.label),))


LIST_KINDS = ("auto", "videos", "rawframes")
"""What a list file holds: ``videos`` (``VideoDataset``), ``rawframes`` (``RawframeDataset``) or ``auto``."""


def parse_video_list(
    path: str | Path,
    kind: str = "auto",
    with_offset: bool = False,
    root: str | Path | None = None,
    multi_class: bool = False,
    dedupe: bool = True,
) -> list[ListEntry]:
    """Parse an MMAction2 annotation list the way MMAction2's ``load_data_list`` does.

    Video lists (``VideoDataset``): ``<video> [<label> ...]``: no label is an unlabelled test-time line (label
    -1), several labels a multi-label line. Rawframe lists (``RawframeDataset``): ``<folder> <total_frames>
    [<label> ...]``, or with ``with_offset`` ``<folder> <offset> <total_frames> [<label> ...]``. Fields are
    separated by whitespace; ``<video>,<label>`` lines are accepted too. Blank lines and ``#`` lines are skipped.

    With ``kind="auto"`` a line whose first field has a video extension is a video line; the other lines are
    rawframe lines when any of them has three or more fields, or when the first one is a folder under
    ``root``; otherwise (``<name> <number>`` everywhere) they are read as videos with a label.

    A rawframe line with several numbers after the frame count is ambiguous (``imgs 2 5 127``: an offset
    list, or labels 5 and 127?): like MMAction2, it is refused unless ``with_offset`` or ``multi_class`` says
    which. A line repeating an earlier one (same video, offset and frame count) is dropped with one warning
    per file (each video counted once, as PYSKL's split lookup does); a repeat with other labels is an error.

    Args:
        path: The list file.
        kind: ``"auto"``, ``"videos"`` or ``"rawframes"``.
        with_offset: Rawframe lines carry an offset before the frame count (MMAction2's ``with_offset``).
        root: Folder the names are relative to, used by ``auto`` to recognise frame folders.
        multi_class: Several labels on a line are a multi-label line (MMAction2's ``multi_class``).
        dedupe: Drop repeated lines (with a warning); ``False`` keeps them.

    Returns:
        The entries in file order.

    Raises:
        PevlError: Missing file, an unknown ``kind``, a malformed or ambiguous line, or a repeated video with
            other labels (naming the line and the field).
    """
    if kind not in LIST_KINDS:
        raise PevlError(f"unknown list kind {kind!r} (choose from {', '.join(LIST_KINDS)})")
    rows = []
    for number, line in read_lines(path):
        if line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) == 1 and "," in line:
            fields = [f.strip() for f in line.split(",")]
        rows.append((number, fields))
    rawframes = kind == "rawframes"
    if kind == "auto":
        others = [fields for _, fields in rows if not _looks_like_video(fields[0])]
        base = Path(root) if root is not None else None
        rawframes = with_offset or any(len(f) >= 3 for f in others) or (
            base is not None and any((base / f[0]).is_dir() for f in others)
        )
    entries = []
    for number, fields in rows:
        if rawframes and not (kind == "auto" and _looks_like_video(fields[0])):
            entry = _rawframe_entry(path, number, fields, with_offset)
            if len(entry.labels) > 1 and not (with_offset or multi_class):
                raise file_error(
                    path,
                    f"line {number}: {' '.join(fields[1:])!r} after the folder: an offset, frame count and label "
                    "(pass with_offset / --with-offset) or a frame count and several labels (multi_class / "
                    "--multi-class)? MMAction2 refuses it too",
                )
            entries.append(entry)
        else:
            labels = _integers(path, number, fields[1:], "label")
            entries.append(ListEntry(fields[0], labels[0] if labels else -1, None, number, tuple(labels)))
    return dedupe_entries(path, entries) if dedupe else entries


def dedupe_entries(path: str | Path, entries: list[ListEntry]) -> list[ListEntry]:
    """Drop lines that repeat an earlier line's video, offset and frame count, with one warning for the file.

    Raises:
        PevlError: A repeated video whose labels differ from its first line's (naming both lines).
    """
    first: dict[tuple[str, int, int | None], ListEntry] = {}
    kept: list[ListEntry] = []
    repeats: list[tuple[ListEntry, ListEntry]] = []
    for entry in entries:
        key = (entry.name, entry.offset, entry.num_frames)
        earlier = first.get(key)
        if earlier is None:
            first[key] = entry
            kept.append(entry)
        elif earlier.labels != entry.labels:
            raise file_error(
                path,
                f"line {entry.line}: {entry.name} is listed again with labels {list(entry.labels)} (line "
                f"{earlier.line} gives {list(earlier.labels)})",
            )
        else:
            repeats.append((entry, earlier))
    if repeats:
        again, earlier = repeats[0]
        warnings.warn(
            f"{path}: {len(repeats)} repeated lines dropped, each video counted once (first: line {again.line} "
            f"repeats line {earlier.line})",
            stacklevel=3,
        )
    return kept


def _integers(path: str | Path, number: int, fields: list[str], what: str) -> list[int]:
    values = []
    for field in fields:
        try:
            values.append(int(field))
        except ValueError:
            raise file_error(path, f"line {number}: {what} {field!r} is not an integer") from None
    return values


def _rawframe_entry(path: str | Path, number: int, fields: list[str], with_offset: bool) -> ListEntry:
    needed = 3 if with_offset else 2
    if len(fields) < needed:
        layout = "<folder> <offset> <total_frames>" if with_offset else "<folder> <total_frames>"
        raise file_error(path, f"line {number}: expected '{layout} [<label> ...]'")
    offset = _integers(path, number, fields[1:2], "offset")[0] if with_offset else 0
    total = _integers(path, number, fields[needed - 1 : needed], "total_frames")[0]
    if total < 1 or offset < 0:
        raise file_error(path, f"line {number}: total_frames must be positive and offset not negative")
    labels = _integers(path, number, fields[needed:], "label")
    return ListEntry(fields[0], labels[0] if labels else -1, total, number, tuple(labels), offset)


def _looks_like_video(name: str) -> bool:
    return Path(name).suffix.lower() in {
        ".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ts", ".ogv",
    }  # fmt: skip


def find_existing(candidates: Iterable[Path]) -> Path | None:
    """The first candidate path that exists."""
    for candidate in candidates:
        if candidate.exists():
            return candidate
    return None


def check_labels(path: str | Path, entries: list[ListEntry], num_classes: int) -> None:
    """Every line must have a label and every label must be a valid class index.

    Multi-label lines pass, with one warning for the file (single-label datasets use ``ListEntry.label``, the
    first label).

    Raises:
        PevlError: Naming the first line without a label or with an unknown class.
    """
    for entry in entries:
        if not entry.labels:
            raise file_error(path, f"line {entry.line}: no label (a test-time list cannot be used here)")
        for label in entry.labels:
            if not 0 <= label < num_classes:
                raise file_error(path, f"line {entry.line}: unknown class {label} (there are {num_classes} classes)")
    multi = next((e for e in entries if len(e.labels) > 1), None)
    if multi is not None:
        count = sum(len(e.labels) > 1 for e in entries)
        warnings.warn(
            f"{path}: {count} multi-label lines (first: line {multi.line}); single-label training uses the first "
            "label of each",
            PevlWarning,
            stacklevel=2,
        )
