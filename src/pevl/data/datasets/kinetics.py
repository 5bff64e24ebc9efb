"""Kinetics-400 from the official csv files (or MMAction2 video lists).

Layout ``data/kinetics400``:

- ``annotations/{train,val,test}.csv`` with the header ``label,youtube_id,time_start,time_end,split[,is_cc]``;
  a clip is the file ``<youtube_id>_<time_start:06d>_<time_end:06d>.mp4``;
- videos in ``videos_<split>/`` (MMAction2), ``<split>/<label>/`` (the official downloader) or ``videos/``;
- class names: ``label_map_k400.txt`` (one per line) if present, else the sorted labels of ``train.csv``;
- or, instead of the csv, ``kinetics400_<split>_list_videos.txt`` (``<video> <label>`` lines).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from pevl.data.datasets.base import VideoRecord
from pevl.data.datasets.generic import records_from_list
from pevl.data.datasets.lists import check_labels, parse_video_list, read_class_names
from pevl.data.datasets.registry import DatasetSpec, default_root, find_in, missing_videos_error, register
from pevl.data.labels import COARSE_TYPES, clean_class_name
from pevl.errors import PevlError, file_error

_CSV_COLUMNS = ("label", "youtube_id", "time_start", "time_end")


def parse_kinetics_csv(path: str | Path) -> list[tuple[str, str, int]]:
    """``(clip name, label name, line)`` of every row of an official Kinetics csv.

    Raises:
        PevlError: Missing file, missing columns or a malformed row (naming the line).
    """
    path = Path(path)
    if not path.is_file():
        raise file_error(path, "no such file")
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in _CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise file_error(path, f"missing csv column(s) {', '.join(missing)} (expected {','.join(_CSV_COLUMNS)})")
        for row in reader:
            try:
                start, end = int(float(row["time_start"])), int(float(row["time_end"]))
            except (TypeError, ValueError):
                raise file_error(path, f"line {reader.line_num}: bad time_start/time_end") from None
            rows.append((f"{row['youtube_id']}_{start:06d}_{end:06d}", row["label"].strip(), reader.line_num))
    return rows


@register("kinetics400", options={"list_file", "label_map", "video_dir", "skip_missing"})
def build_kinetics400(name: str, split: str, root: Path | None, options: dict[str, Any]) -> DatasetSpec:
    """Build Kinetics-400 (see the module docstring)."""
    root = default_root(root, "kinetics400", name)
    list_file = Path(options["list_file"]) if options.get("list_file") else find_in(
        root, [f"{split}.csv", f"kinetics400_{split}_list_videos.txt", f"kinetics_{split}.csv"]
    )  # fmt: skip
    if list_file is None:
        raise PevlError(f"{root}: no Kinetics-400 {split} list (annotations/{split}.csv)")
    label_map = options.get("label_map") or find_in(root, ["label_map_k400.txt", "kinetics400_label_map.txt"])
    if label_map is not None:
        names = read_class_names(label_map)
    else:
        train_csv = find_in(root, ["train.csv"])
        if train_csv is None and list_file.suffix != ".csv":
            raise PevlError(f"{root}: no class names (label_map_k400.txt or annotations/train.csv)")
        names = sorted({label for _, label, _ in parse_kinetics_csv(train_csv or list_file)})
    video_dirs = (
        [Path(options["video_dir"])]
        if options.get("video_dir")
        else [root / f"videos_{split}", root / split, root / "videos", root]
    )
    if list_file.suffix.lower() != ".csv":
        entries = parse_video_list(list_file)
        check_labels(list_file, entries, len(names))
        video_dir = next((d for d in video_dirs if d.is_dir()), root)
        records = records_from_list(entries, video_dir, list_file, bool(options.get("skip_missing")))
    else:
        index = {n: i for i, n in enumerate(names)}
        records, missing = [], []
        rows = parse_kinetics_csv(list_file)
        for clip, label_name, line in rows:
            if label_name not in index:
                raise file_error(list_file, f"line {line}: unknown class {label_name!r}")
            candidates = [f"{clip}{ext}" for ext in (".mp4", ".mkv", ".webm")]
            candidates += [f"{label_name}/{c}" for c in candidates] + [f"{label_name.replace(' ', '_')}/{clip}.mp4"]
            video = next((d / c for d in video_dirs for c in candidates if (d / c).is_file()), None)
            if video is None:
                missing.append(clip)
            else:
                records.append(VideoRecord(clip, index[label_name], video=video, keys=(clip,)))
        if missing and not options.get("skip_missing"):
            raise missing_videos_error(list_file, missing, len(rows), root, f"videos_{split}/<id>_<start>_<end>.mp4")
    classes = [clean_class_name(n) for n in names]
    return DatasetSpec(records=records, classes=classes, coarse=[COARSE_TYPES["kinetics400"]] * len(classes))
