"""HAA500: 500 atomic human actions, a folder of clips per class.

Layout ``data/haa500``: ``video/<class_name>/<class_name>_<nnn>.mp4`` (or ``videos/`` or the root itself).
Splits follow the dataset paper's per-class 16/1/3 division: sorting each class's clips by name, the last 3 are
``test``, the one before them ``val`` and the rest ``train``. A ``list_file`` (MMAction2 ``<video> <label>``
lines relative to the video folder) overrides this. Class texts are the folder names with underscores as
spaces (``"add_new_car_tire"`` -> ``"add new car tire"``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pevl.data.datasets.base import VideoRecord
from pevl.data.datasets.generic import records_from_list, scan_class_folders
from pevl.data.datasets.lists import check_labels, parse_video_list
from pevl.data.datasets.registry import DatasetSpec, default_root, register
from pevl.data.labels import COARSE_TYPES, clean_class_name
from pevl.errors import PevlError

HAA500_TEST_PER_CLASS = 3
HAA500_VAL_PER_CLASS = 1


def haa500_split_of(position: int, count: int) -> str:
    """Split of the clip at ``position`` (0-based, name order) among ``count`` clips of its class."""
    if position >= count - HAA500_TEST_PER_CLASS:
        return "test"
    if position >= count - HAA500_TEST_PER_CLASS - HAA500_VAL_PER_CLASS:
        return "val"
    return "train"


@register("haa500", options={"list_file", "video_dir", "skip_missing"})
def build_haa500(name: str, split: str, root: Path | None, options: dict[str, Any]) -> DatasetSpec:
    """Build HAA500 (see the module docstring)."""
    root = default_root(root, "haa500", name)
    if options.get("video_dir"):
        folder = Path(options["video_dir"])
    else:
        folder = next((d for d in (root / "video", root / "videos") if d.is_dir()), root)
    if not folder.is_dir():
        raise PevlError(f"{folder}: no such video folder")
    names, videos = scan_class_folders(folder)
    if not videos:
        raise PevlError(f"{folder}: no videos in class folders (expected <class_name>/<class_name>_000.mp4)")
    classes = [clean_class_name(n) for n in names]
    if options.get("list_file"):
        entries = parse_video_list(options["list_file"])
        check_labels(options["list_file"], entries, len(classes))
        records = records_from_list(entries, folder, options["list_file"], bool(options.get("skip_missing")))
    else:
        if split not in ("train", "val", "test"):
            raise PevlError(f"haa500 has splits train, val and test, not {split!r}")
        per_class: dict[int, list[Path]] = {}
        for path, label in videos:
            per_class.setdefault(label, []).append(path)
        records = []
        for label, paths in per_class.items():
            for position, path in enumerate(paths):
                if haa500_split_of(position, len(paths)) == split:
                    key = str(path.relative_to(folder).with_suffix(""))
                    records.append(VideoRecord(key, label, video=path, keys=(key, path.stem)))
    return DatasetSpec(records=records, classes=classes, coarse=[COARSE_TYPES["haa500"]] * len(classes))
