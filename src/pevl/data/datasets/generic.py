"""Generic layouts: a ``path label`` list (``video_list``) and a folder per class (``video_folder``).

``video_list``: ``root/<split>.txt`` (or ``list_file``) with MMAction2 lines ``<video> <label>`` (or rawframes
``<frame folder> <num frames> <label>``), paths relative to ``video_dir`` (default ``root``); class names from
``label_map`` (default ``root/classes.txt``, one per line), else ``"class <i>"``. A ``coarse`` option sets the
coarse action type of every class; ``root/coarse.txt`` gives one per class.

``video_folder``: ``root/<split>/<class>/<video>`` when split folders exist, else ``root/<class>/<video>``;
a sample is a video file or a rawframe folder (``img_00001.jpg`` ...); classes are the sorted folder names with
underscores turned into spaces.

Without split folders (``video_folder``) or with one list for every split (``video_list`` with ``list_file``), a
seeded share of each class is held out as ``val`` / ``test`` (:mod:`pevl.data.datasets.holdout`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pevl.data.datasets.base import VideoRecord
from pevl.data.datasets.holdout import HOLDOUT_OPTIONS, hold_out
from pevl.data.datasets.lists import (
    ListEntry,
    check_labels,
    parse_video_list,
    read_class_names,
    read_label_map,
    relabel,
)
from pevl.data.datasets.registry import DatasetSpec, missing_videos_error, register
from pevl.data.labels import clean_class_name, first_duplicate
from pevl.data.rawframes import is_rawframe_folder
from pevl.errors import PevlError, file_error

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp"})


def _root(root: Path | None, name: str) -> Path:
    if root is None:
        raise PevlError(f"dataset {name} needs root= (the folder holding the videos)")
    if not Path(root).is_dir():
        raise PevlError(f"{root}: no such dataset folder")
    return Path(root)


def coarse_types(root: Path, options: dict[str, Any], num_classes: int) -> list[str] | None:
    """Coarse types from the ``coarse`` option (one for all) or ``root/coarse.txt`` (one per class)."""
    if options.get("coarse"):
        return [str(options["coarse"])] * num_classes
    path = root / "coarse.txt"
    if path.is_file():
        coarse = read_class_names(path, duplicates="allow")  # one coarse type serves many classes
        if len(coarse) != num_classes:
            raise file_error(path, f"has {len(coarse)} lines for {num_classes} classes")
        return coarse
    return None


def records_from_list(
    entries: list[ListEntry], video_dir: Path, list_file: Path | str, skip_missing: bool
) -> list[VideoRecord]:
    """Resolve list entries to video files or rawframe folders under ``video_dir``."""
    records, missing = [], []
    for entry in entries:
        path = video_dir / entry.name
        key = str(Path(entry.name).with_suffix("")) if Path(entry.name).suffix else entry.name
        if entry.num_frames is not None and path.is_dir():
            window = (entry.offset, entry.offset + entry.num_frames) if entry.offset else None
            records.append(
                VideoRecord(key, entry.label, frames_dir=path, num_frames=entry.num_frames, window=window)
            )
        elif path.is_dir() and entry.num_frames is None:
            records.append(VideoRecord(key, entry.label, frames_dir=path))
        elif path.is_file():
            records.append(VideoRecord(key, entry.label, video=path))
        else:
            missing.append(entry.name)
    if missing and not skip_missing:
        raise missing_videos_error(list_file, missing, len(entries), video_dir, "paths relative to video_dir")
    return records


@register(
    "video_list",
    options={
        "list_file", "label_map", "video_dir", "coarse", "filename_tmpl", "skip_missing", "list_kind", "with_offset",
        "start_index", *HOLDOUT_OPTIONS,
    },
)  # fmt: skip
def build_video_list(name: str, split: str, root: Path | None, options: dict[str, Any]) -> DatasetSpec:
    """Build a dataset from a ``<video> <label>`` list (see the module docstring)."""
    if root is None and options.get("list_file"):
        root = Path(options["list_file"]).parent
    root = _root(root, name)
    list_file = Path(options["list_file"]) if options.get("list_file") else root / f"{split}.txt"
    video_dir = Path(options["video_dir"]) if options.get("video_dir") else root
    entries = parse_video_list(
        list_file, kind=options.get("list_kind", "auto"), with_offset=bool(options.get("with_offset")), root=video_dir
    )
    label_map = options.get("label_map") or (root / "classes.txt" if (root / "classes.txt").is_file() else None)
    if label_map is not None:
        names = read_label_map(label_map)
        entries = relabel(list_file, entries, names)
        classes = [clean_class_name(c) for c in names.names]
    else:
        classes = [f"class {i}" for i in range(max((e.label for e in entries), default=-1) + 1)]
    check_labels(list_file, entries, len(classes))
    records = records_from_list(entries, video_dir, list_file, bool(options.get("skip_missing")))
    split_note = None
    if options.get("list_file"):  # one list for every split: hold a share out rather than validate on train
        labels = [r.label for r in records]
        records, split_note = hold_out(list_file, records, [r.name for r in records], labels, split, options)
    return DatasetSpec(
        records=records,
        split_note=split_note,
        classes=classes,
        coarse=coarse_types(root, options, len(classes)),
        rawframe_template=options.get("filename_tmpl", "img_{:05d}.jpg"),
        rawframe_start=int(options.get("start_index", 1)),
    )


SPLIT_FOLDERS = ("train", "val", "test")
"""Folder names that make a ``video_folder`` root a split layout (``root/<split>/<class>/<video>``)."""


def scan_class_folders(folder: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """Sorted class folder names and ``(sample, label)`` of every video file and rawframe folder inside them.

    Raises:
        PevlError: Two class folders whose names are one class text (``Air_drumming`` and ``air drumming``).
    """
    class_dirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    pair = first_duplicate([d.name for d in class_dirs])
    if pair is not None:
        first, again = (class_dirs[i].name for i in pair)
        raise PevlError(
            f"{folder}: class folders {first!r} and {again!r} name one class (two identical texts would split one "
            "class's probability); merge them"
        )
    videos = []
    for label, class_dir in enumerate(class_dirs):
        for path in sorted(class_dir.rglob("*")):
            if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
                videos.append((path, label))
            elif path.is_dir() and is_rawframe_folder(path):
                videos.append((path, label))
    return [d.name for d in class_dirs], videos


@register("video_folder", options={"coarse", *HOLDOUT_OPTIONS})
def build_video_folder(name: str, split: str, root: Path | None, options: dict[str, Any]) -> DatasetSpec:
    """Build a dataset from a folder per class (see the module docstring)."""
    root = _root(root, name)
    split_dirs = [s for s in SPLIT_FOLDERS if (root / s).is_dir()]
    if split_dirs and not (root / split).is_dir():
        raise PevlError(f"{root}: no {split}/ folder (it has {', '.join(d + '/' for d in split_dirs)})")
    folder = root / split if split_dirs else root
    names, videos = scan_class_folders(folder)
    if not videos:
        raise PevlError(f"{folder}: no videos in class folders (expected <class>/<video>.mp4)")
    records = [
        VideoRecord(str(p.relative_to(folder).with_suffix("")) if p.is_file() else str(p.relative_to(folder)), label,
                    video=p if p.is_file() else None, frames_dir=None if p.is_file() else p)
        for p, label in videos
    ]  # fmt: skip
    split_note = None
    if not split_dirs:  # one folder for every split: hold a share out rather than validate on train
        keys, labels = [r.name for r in records], [r.label for r in records]
        records, split_note = hold_out(folder, records, keys, labels, split, options, what="videos")
    classes = [clean_class_name(n) for n in names]
    return DatasetSpec(
        records=records, classes=classes, coarse=coarse_types(root, options, len(classes)), split_note=split_note
    )
