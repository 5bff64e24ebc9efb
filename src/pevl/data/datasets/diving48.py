"""Diving48 V2: 48 dives named by take-off, somersaults, twists and flight position.

Files (MMAction2 layout ``data/diving48``; annotation files in it or in ``annotations/``):

- classes: ``Diving48_vocab.json`` (48 lists ``["Back", "15som", "05Twis", "FREE"]``) or a label map with one
  code per line (``Back+15som+05Twis+FREE``); codes become words with
  :func:`pevl.data.labels.diving48_label_text`.
- splits: ``Diving48_V2_train.json`` / ``Diving48_V2_test.json`` (entries ``{"vid_name", "label",
  "start_frame", "end_frame"}``) or the lists ``vba_diving48_{train,val}_list_videos.txt`` /
  ``diving48_{train,val}_list_videos.txt`` (``<label>/<vid>.mp4 <label>`` or ``<vid>.mp4 <label>``).
- videos: ``videos/<vid>.mp4`` (or ``videos/<label>/<vid>.mp4``, as the list says).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pevl.data.datasets.base import VideoRecord
from pevl.data.datasets.lists import ListEntry, check_labels, parse_video_list, read_class_names
from pevl.data.datasets.registry import DatasetSpec, default_root, find_in, missing_videos_error, register
from pevl.data.labels import COARSE_TYPES, diving48_label_text
from pevl.errors import PevlError, file_error


def _load_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise file_error(path, "no such file") from None
    except (OSError, ValueError) as err:
        raise file_error(path, f"not a valid JSON file ({err.__class__.__name__})") from None


def diving48_codes(path: str | Path) -> list[str]:
    """Class codes (``Back+15som+05Twis+FREE``) from ``Diving48_vocab.json`` or a one-per-line label map."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        vocab = _load_json(path)
        if not isinstance(vocab, list) or not all(isinstance(v, list) and v for v in vocab):
            raise file_error(path, "is not a Diving48 vocabulary (expected a list of 4-word lists)")
        return ["+".join(str(word) for word in v) for v in vocab]
    return read_class_names(path)


def parse_diving48_split(path: str | Path) -> list[ListEntry]:
    """Parse a Diving48 split: the official V2 json or an MMAction2 video list.

    Raises:
        PevlError: Missing file or malformed entries (naming the entry).
    """
    path = Path(path)
    if path.suffix.lower() != ".json":
        return parse_video_list(path)
    data = _load_json(path)
    if not isinstance(data, list):
        raise file_error(path, "is not a Diving48 split (expected a list of {vid_name, label} entries)")
    entries = []
    for i, item in enumerate(data):
        try:
            entries.append(ListEntry(str(item["vid_name"]), int(item["label"]), None, i + 1))
        except (KeyError, TypeError, ValueError):
            raise file_error(path, f"entry {i} lacks 'vid_name' or an integer 'label'") from None
    return entries


_SPLIT_FILES = {
    "train": ["Diving48_V2_train.json", "vba_diving48_train_list_videos.txt", "diving48_train_list_videos.txt"],
    "val": ["Diving48_V2_test.json", "vba_diving48_val_list_videos.txt", "diving48_val_list_videos.txt"],
}
_SPLIT_FILES["test"] = _SPLIT_FILES["val"]


@register("diving48", options={"list_file", "label_map", "video_dir", "skip_missing"})
def build_diving48(name: str, split: str, root: Path | None, options: dict[str, Any]) -> DatasetSpec:
    """Build Diving48 V2 (see the module docstring for the files)."""
    root = default_root(root, "diving48", name)
    if split not in _SPLIT_FILES and not options.get("list_file"):
        raise PevlError(f"diving48 has splits train and val (test = val), not {split!r}")
    list_file = Path(options["list_file"]) if options.get("list_file") else find_in(root, _SPLIT_FILES[split])
    if list_file is None:
        raise PevlError(f"{root}: no Diving48 {split} split file ({' or '.join(_SPLIT_FILES[split])})")
    label_map = options.get("label_map") or find_in(
        root, ["Diving48_vocab.json", "label_map_diving48.txt", "diving48_label_map.txt"]
    )
    if label_map is None:
        raise PevlError(f"{root}: no Diving48 class list (Diving48_vocab.json or label_map_diving48.txt)")
    codes = diving48_codes(label_map)
    entries = parse_diving48_split(list_file)
    check_labels(list_file, entries, len(codes))
    video_dirs = [Path(options["video_dir"])] if options.get("video_dir") else [root / "videos", root / "rgb", root]
    records, missing = [], []
    for entry in entries:
        rel = Path(entry.name)
        names = [rel] if rel.suffix else []
        stem = rel.stem if rel.suffix else rel.name
        names += [Path(f"{stem}.mp4"), Path(str(entry.label)) / f"{stem}.mp4"]
        video = next((d / n for d in video_dirs for n in names if (d / n).is_file()), None)
        if video is None:
            missing.append(entry.name)
            continue
        key = str(rel.with_suffix("")) if rel.suffix else str(rel)
        records.append(VideoRecord(key, entry.label, video=video, keys=(key, stem)))
    if missing and not options.get("skip_missing"):
        raise missing_videos_error(list_file, missing, len(entries), root, "videos/<vid>.mp4")
    texts = [diving48_label_text(code) for code in codes]
    return DatasetSpec(records=records, classes=texts, coarse=[COARSE_TYPES["diving48"]] * len(texts))
