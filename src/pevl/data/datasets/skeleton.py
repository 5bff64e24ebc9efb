"""Pose-only datasets: any PYSKL skeleton pickle, no video needed (``pyskl``).

The split names are those of the pickle's ``split`` dict (e.g. ``train``/``val``, or PYSKL's ``xsub_train``).
A pickle without splits never validates on its training clips: a seeded, per-class share of its annotations
(``val_fraction``, default 0.2; ``split_seed``, default 0) is held out as ``val``/``test`` and the rest is ``train``,
and a warning says so (:mod:`pevl.data.datasets.holdout`). Class texts come from ``label_map`` (one name
per line), else ``"class <i>"``. With ``video_dir`` set, videos ``<video_dir>/<frame_dir>.<ext>`` are used too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pevl.data.datasets.base import PicklePoses, VideoRecord
from pevl.data.datasets.generic import VIDEO_SUFFIXES
from pevl.data.datasets.holdout import HOLDOUT_OPTIONS, hold_out
from pevl.data.datasets.lists import read_class_names
from pevl.data.datasets.registry import DatasetSpec, register
from pevl.data.labels import clean_class_name
from pevl.errors import PevlError, file_error


@register("pyskl", options={"pose_file", "label_map", "video_dir", "coarse", *HOLDOUT_OPTIONS})
def build_pyskl(name: str, split: str, root: Path | None, options: dict[str, Any]) -> DatasetSpec:
    """Build a pose-only dataset from a skeleton pickle (``pose_file``, or ``root`` pointing at the pickle)."""
    pose_file = options.get("pose_file") or (root if root is not None and Path(root).is_file() else None)
    if pose_file is None:
        raise PevlError("dataset pyskl needs pose_file= (a PYSKL skeleton pickle)")
    poses = PicklePoses(pose_file, layout=options.get("pose_layout"))
    annotations = poses.annotations
    split_note = None
    # `pevl extract-poses` writes one catch-all split "all" by default: that is no train/val division.
    catch_all = set(poses.split) == {"all"} and split not in poses.split
    if poses.split and not catch_all:
        wanted = split
        if wanted not in poses.split and wanted == "test" and "val" in poses.split:
            wanted = "val"
        if wanted not in poses.split:
            raise file_error(pose_file, f"has no split {split!r} (it has: {', '.join(sorted(poses.split))})")
        names = poses.split[wanted]
        found = [poses.file.find([n]) for n in names]
        missing = [n for n, ann in zip(names, found, strict=True) if ann is None]
        if missing:
            raise file_error(
                pose_file, f"split {wanted!r} names {len(missing)} unknown frame_dirs (first: {missing[0]})"
            )
        annotations = found  # type: ignore[assignment]
    else:
        keys = [str(ann["frame_dir"]) for ann in annotations]
        labels = [int(ann["label"]) for ann in annotations]
        annotations, split_note = hold_out(pose_file, annotations, keys, labels, split, options, what="annotations")
    unlabelled = next((a["frame_dir"] for a in annotations if a["label"] < 0), None)
    if unlabelled is not None:
        raise file_error(pose_file, f"annotation {unlabelled!r} has no label")
    if options.get("label_map"):
        classes = [clean_class_name(c) for c in read_class_names(options["label_map"])]
    else:
        classes = [f"class {i}" for i in range(max((a["label"] for a in annotations), default=-1) + 1)]
    bad = next((a for a in annotations if a["label"] >= len(classes)), None)
    if bad is not None:
        raise file_error(
            pose_file, f"annotation {bad['frame_dir']!r} has label {bad['label']} beyond {len(classes)} classes"
        )
    video_dir = Path(options["video_dir"]) if options.get("video_dir") else None
    records = []
    for ann in annotations:
        video = None
        if video_dir is not None:
            video = next(
                (p for ext in sorted(VIDEO_SUFFIXES) if (p := video_dir / f"{ann['frame_dir']}{ext}").is_file()), None
            )
            if video is None:
                raise PevlError(f"{video_dir}: no video for {ann['frame_dir']} (expected {ann['frame_dir']}.mp4)")
        records.append(VideoRecord(ann["frame_dir"], ann["label"], video=video, keys=(ann["frame_dir"],)))
    coarse = [str(options["coarse"])] * len(classes) if options.get("coarse") else None
    return DatasetSpec(records=records, classes=classes, coarse=coarse, poses=poses, split_note=split_note)
