"""Pose-only datasets: any PYSKL skeleton pickle, no video needed (``pyskl``).

The split names are those of the pickle's ``split`` dict (e.g. ``train``/``val``, or PYSKL's ``xsub_train``).
A pickle without splits never validates on its training clips: a seeded, per-class share of its annotations
(``val_fraction``, default 0.2; ``split_seed``, default 0) is held out as ``val``/``test`` and the rest is ``train``,
and a warning says so. Class texts come from ``label_map`` (one name
per line), else ``"class <i>"``. With ``video_dir`` set, videos ``<video_dir>/<frame_dir>.<ext>`` are used too.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from pevl.data.datasets.base import PicklePoses, VideoRecord
from pevl.data.datasets.generic import VIDEO_SUFFIXES
from pevl.data.datasets.lists import read_class_names
from pevl.data.datasets.registry import DatasetSpec, register
from pevl.data.labels import clean_class_name
from pevl.errors import PevlError, file_error

_ANNOUNCED: set[tuple[str, float, int]] = set()  # hold-outs already reported (train and val build the same one)


def held_out_split(pose_file: Path, annotations: list[dict], split: str, options: dict[str, Any]) -> list[dict]:
    """The ``split`` of a pickle without splits: a seeded per-class hold-out for val/test, the rest for train.

    Args:
        pose_file: The pickle (named in messages).
        annotations: All its annotations.
        split: ``train``, ``val`` or ``test`` (``test`` is ``val``).
        options: Dataset options: ``val_fraction`` (default 0.2) and ``split_seed`` (default 0).

    Returns:
        The annotations of the split, in file order (all of them, with a warning, when no class has two).

    Raises:
        PevlError: Another split name, or a fraction outside (0, 1).
    """
    fraction = float(options.get("val_fraction", 0.2))
    seed = int(options.get("split_seed", 0))
    if split not in ("train", "val", "test"):
        raise file_error(pose_file, f"has no splits, so no split {split!r}: use train, val or test (held out)")
    if not 0.0 < fraction < 1.0:
        raise file_error(pose_file, f"has no splits: val_fraction must be in (0, 1) to hold some out, got {fraction}")
    by_label: dict[int, list[str]] = {}
    for ann in annotations:
        by_label.setdefault(int(ann["label"]), []).append(str(ann["frame_dir"]))
    rng = np.random.default_rng(seed)
    held: set[str] = set()
    for label in sorted(by_label):
        names = sorted(by_label[label])
        count = min(len(names) - 1, max(1, round(fraction * len(names)))) if len(names) > 1 else 0
        held.update(names[i] for i in rng.permutation(len(names))[:count])
    key = (str(pose_file.resolve()), fraction, seed)
    if key not in _ANNOUNCED:
        _ANNOUNCED.add(key)
        if held:
            message = (
                f"{len(held)} of its {len(annotations)} annotations ({100 * fraction:.0f}% per class, seed {seed}) "
                "are held out as val/test, the rest is train (data.options.val_fraction / split_seed change this)"
            )
        else:
            message = (
                f"too few annotations ({len(annotations)}) to hold any out: every split is the whole file, so a "
                "validation on it would be on the training clips"
            )
        print(f"warning: {pose_file}: no splits in the file; {message}", file=sys.stderr)
    if not held:
        return annotations
    wanted_held = split != "train"
    return [ann for ann in annotations if (str(ann["frame_dir"]) in held) == wanted_held]


@register("pyskl", options={"pose_file", "label_map", "video_dir", "coarse", "val_fraction", "split_seed"})
def build_pyskl(name: str, split: str, root: Path | None, options: dict[str, Any]) -> DatasetSpec:
    """Build a pose-only dataset from a skeleton pickle (``pose_file``, or ``root`` pointing at the pickle)."""
    pose_file = options.get("pose_file") or (root if root is not None and Path(root).is_file() else None)
    if pose_file is None:
        raise PevlError("dataset pyskl needs pose_file= (a PYSKL skeleton pickle)")
    poses = PicklePoses(pose_file, layout=options.get("pose_layout"))
    annotations = poses.annotations
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
        annotations = held_out_split(Path(pose_file), annotations, split, options)
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
    return DatasetSpec(records=records, classes=classes, coarse=coarse, poses=poses)
