"""Toyota-Smarthome (trimmed): daily-living activities, protocols CS, CV1 and CV2.

Clip names encode everything: ``<Activity>_p<subject>_r<repetition>_v<video>_c<camera>.mp4``. The protocols
(official class maps, training subjects and cameras):

- CS (cross-subject, 31 classes): subjects 3, 4, 6, 7, 9, 12, 13, 15, 17, 19, 25 train, the others test;
- CV1 (cross-view, 19 classes): camera 1 train, camera 5 validation, camera 2 test;
- CV2: cameras 1, 3, 4, 6, 7 train, camera 5 validation, camera 2 test.

Layout ``data/toyota_smarthome``: clips in ``mp4/`` (or ``videos/``). When the split lists of the reference I3D
code exist (``splits/train_CS.txt``, ``validation_CS.txt``, ``test_CS.txt``, same for CV1/CV2), they define the
splits; otherwise the splits follow from the file names (CS then has no separate validation split: ``val`` is
``test``). Clips of activities outside a protocol's class map (e.g. ``Pour.Fromcup`` in CS) are left out.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pevl.data.datasets.base import VideoRecord
from pevl.data.datasets.lists import read_lines
from pevl.data.datasets.registry import DatasetSpec, default_root, find_in, missing_videos_error, register
from pevl.data.labels import COARSE_TYPES, toyota_label_text
from pevl.errors import PevlError, file_error

TOYOTA_CS_CLASSES: tuple[str, ...] = (
    "Cook.Cleandishes", "Cook.Cleanup", "Cook.Cut", "Cook.Stir", "Cook.Usestove", "Cutbread", "Drink.Frombottle",
    "Drink.Fromcan", "Drink.Fromcup", "Drink.Fromglass", "Eat.Attable", "Eat.Snack", "Enter", "Getup", "Laydown",
    "Leave", "Makecoffee.Pourgrains", "Makecoffee.Pourwater", "Maketea.Boilwater", "Maketea.Insertteabag",
    "Pour.Frombottle", "Pour.Fromcan", "Pour.Fromkettle", "Readbook", "Sitdown", "Takepills", "Uselaptop",
    "Usetelephone", "Usetablet", "Walk", "WatchTV",
)  # fmt: skip
"""The 31 cross-subject classes in label order (official class map)."""

TOYOTA_CV_CLASSES: tuple[str, ...] = (
    "Cutbread", "Drink.Frombottle", "Drink.Fromcan", "Drink.Fromcup", "Drink.Fromglass", "Eat.Attable",
    "Eat.Snack", "Enter", "Getup", "Leave", "Pour.Frombottle", "Pour.Fromcan", "Readbook", "Sitdown", "Takepills",
    "Uselaptop", "Usetablet", "Usetelephone", "Walk",
)  # fmt: skip
"""The 19 cross-view classes in label order (official class map)."""

TOYOTA_CS_TRAIN_SUBJECTS: frozenset[int] = frozenset({3, 4, 6, 7, 9, 12, 13, 15, 17, 19, 25})
"""Subjects of the cross-subject training split."""

_CV_CAMERAS = {
    "CV1": {"train": {1}, "val": {5}, "test": {2}},
    "CV2": {"train": {1, 3, 4, 6, 7}, "val": {5}, "test": {2}},
}
_NAME = re.compile(r"^(?P<activity>.+?)_p(?P<subject>\d+)_r(?P<rep>\d+)_v(?P<video>\d+)_c(?P<camera>\d+)$")
_LIST_SPLIT = {"train": "train", "val": "validation", "test": "test"}


def parse_toyota_name(name: str) -> tuple[str, int, int] | None:
    """``(activity, subject, camera)`` of a clip name such as ``Cook.Cut_p03_r00_v10_c02.mp4``, else ``None``."""
    stem = Path(name).name
    stem = stem[:-4] if stem.lower().endswith(".mp4") else stem
    match = _NAME.match(stem)
    if not match:
        return None
    return match.group("activity"), int(match.group("subject")), int(match.group("camera"))


def toyota_classes(protocol: str) -> tuple[str, ...]:
    """Class names of a protocol (``"CS"``, ``"CV1"`` or ``"CV2"``)."""
    return TOYOTA_CS_CLASSES if protocol == "CS" else TOYOTA_CV_CLASSES


def toyota_split_of(name: str, protocol: str) -> str | None:
    """The split a clip belongs to under a protocol, from its name alone (``None`` if it is in none).

    CS has no validation subjects here: its clips are ``train`` or ``test``.
    """
    parsed = parse_toyota_name(name)
    if parsed is None or parsed[0] not in toyota_classes(protocol):
        return None
    _, subject, camera = parsed
    if protocol == "CS":
        return "train" if subject in TOYOTA_CS_TRAIN_SUBJECTS else "test"
    for split, cameras in _CV_CAMERAS[protocol].items():
        if camera in cameras:
            return split
    return None


def parse_toyota_list(path: str | Path, protocol: str) -> list[tuple[str, int]]:
    """``(clip name, label)`` of a split list (one clip file name per line); other activities are left out.

    Raises:
        PevlError: Missing file or a line that is not a Toyota-Smarthome clip name.
    """
    classes = {name: i for i, name in enumerate(toyota_classes(protocol))}
    out = []
    for number, line in read_lines(path):
        parsed = parse_toyota_name(line.split()[0])
        if parsed is None:
            raise file_error(path, f"line {number}: {line!r} is not a clip name like Walk_p03_r00_v01_c01.mp4")
        if parsed[0] in classes:
            out.append((line.split()[0], classes[parsed[0]]))
    return out


@register("toyota_cs", "toyota_cv1", "toyota_cv2", options={"list_file", "video_dir", "skip_missing"})
def build_toyota(name: str, split: str, root: Path | None, options: dict[str, Any]) -> DatasetSpec:
    """Build Toyota-Smarthome under protocol CS, CV1 or CV2 (see the module docstring)."""
    protocol = name.split("_")[1].upper()
    root = default_root(root, "toyota_smarthome", name)
    if split not in _LIST_SPLIT and not options.get("list_file"):
        raise PevlError(f"{name} has splits train, val and test, not {split!r}")
    video_dirs = [Path(options["video_dir"])] if options.get("video_dir") else [root / "mp4", root / "videos", root]
    list_file = options.get("list_file") or find_in(
        root, [f"{_LIST_SPLIT[split]}_{protocol}.txt"], ("splits", "", "i3d_smarthome_splits/splits")
    )
    if list_file is not None:
        clips = parse_toyota_list(list_file, protocol)
        source: Path | str = list_file
    else:
        folder = next((d for d in video_dirs if d.is_dir() and any(d.glob("*.mp4"))), None)
        if folder is None:
            raise PevlError(f"{root}: no Toyota-Smarthome clips (mp4/<Activity>_pXX_rXX_vXX_cXX.mp4) or split lists")
        wanted = "test" if (protocol == "CS" and split == "val") else split
        classes = {n: i for i, n in enumerate(toyota_classes(protocol))}
        clips = [
            (p.name, classes[parse_toyota_name(p.name)[0]])  # type: ignore[index]
            for p in sorted(folder.glob("*.mp4"))
            if toyota_split_of(p.name, protocol) == wanted
        ]
        source = folder
    records, missing = [], []
    for clip, label in clips:
        video = next((d / clip for d in video_dirs if (d / clip).is_file()), None)
        if video is None:
            missing.append(clip)
            continue
        stem = Path(clip).stem
        records.append(VideoRecord(stem, label, video=video, keys=(stem,)))
    if missing and not options.get("skip_missing"):
        raise missing_videos_error(source, missing, len(clips), root, "mp4/<clip>.mp4")
    texts = [toyota_label_text(c) for c in toyota_classes(protocol)]
    return DatasetSpec(records=records, classes=texts, coarse=[COARSE_TYPES["toyota"]] * len(texts))
