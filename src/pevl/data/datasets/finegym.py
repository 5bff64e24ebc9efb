"""FineGym Gym99 / Gym288: element-level fine-grained gymnastics.

Split files, either form (MMAction2 layout: ``data/gym``, files in it or in ``annotations/``):

- official: ``gym99_train_element_v1.0.txt`` / ``gym99_val_element.txt`` (Gym288: ``gym288_...``), lines
  ``<youtube id>_E_<event start>_<event end>_A_<element start>_<element end> <label>``;
- the common rawframe list: ``vba_gym99_gym_train_list_rawframes.txt``, lines
  ``<youtube id>_<event start>_<event end>_<element start>_<element end> <num frames> <label>``;
- MMAction2's video list ``gym99_train.txt`` (``<id>.mp4 <label>``).

Class names: ``gym99_categories.txt`` (``Clabel: 0; set: 1; Glabel: 1; (VT) ...``) or ``label_map_gym99.txt``.
The event prefix gives the coarse type (``(VT)`` -> "vault") and is dropped from the label text.

Videos are looked up per element: ``subactions/<id>.mp4`` (MMAction2's ``trim_subaction.py``), a rawframe folder
``subaction_frames/<id>/img_00001.jpg``, or, when only the event clips ``events/<youtube id>_E_<s>_<e>.mp4`` exist,
the element's time window from the official annotation json ``finegym_annotation_info_v1.0.json``
(``{youtube id: {"E_<s>_<e>": {"segments": {"A_<s>_<e>": {"timestamps": [[start, end], ...]}}}}}``, seconds
relative to the event clip).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pevl.data.datasets.base import VideoRecord
from pevl.data.datasets.lists import ListEntry, check_labels, parse_video_list, read_class_names
from pevl.data.datasets.registry import DatasetSpec, default_root, find_in, missing_videos_error, register
from pevl.data.labels import COARSE_TYPES, parse_finegym_name
from pevl.errors import PevlError, file_error

_OFFICIAL = re.compile(r"^(?P<yt>.+)_E_(?P<es>\d+)_(?P<ee>\d+)_A_(?P<as>\d+)_(?P<ae>\d+)$")
_RAWFRAME = re.compile(r"^(?P<yt>.+)_(?P<es>\d{6})_(?P<ee>\d{6})_(?P<as>\d{4})_(?P<ae>\d{4})$")
_VIDEO_EXTS = (".mp4", ".mkv", ".webm", ".avi")


def finegym_element_ids(name: str) -> dict[str, str] | None:
    """The names of an element in every form, or ``None`` if ``name`` is neither form.

    Args:
        name: An official id (``<yt>_E_002407_002435_A_0003_0005``) or a rawframe id
            (``<yt>_002407_002435_0003_0005``), optionally with a folder and extension.

    Returns:
        ``{"official", "rawframe", "video", "event", "action"}`` (``event`` = ``E_002407_002435``).
    """
    stem = Path(name).name
    stem = stem[: -len(Path(stem).suffix)] if Path(stem).suffix.lower() in _VIDEO_EXTS else stem
    match = _OFFICIAL.match(stem) or _RAWFRAME.match(stem)
    if not match:
        return None
    yt, es, ee, a_s, a_e = (match.group(k) for k in ("yt", "es", "ee", "as", "ae"))
    return {
        "official": f"{yt}_E_{es}_{ee}_A_{a_s}_{a_e}",
        "rawframe": f"{yt}_{es}_{ee}_{a_s}_{a_e}",
        "video": yt,
        "event": f"E_{es}_{ee}",
        "action": f"A_{a_s}_{a_e}",
    }


def parse_finegym_split(path: str | Path) -> list[ListEntry]:
    """Parse a FineGym split file (official element list, rawframe list or MMAction2 video list).

    Raises:
        PevlError: Missing file, a malformed line, or an element id in neither FineGym form.
    """
    entries = parse_video_list(path)
    for entry in entries:
        if finegym_element_ids(entry.name) is None:
            raise file_error(path, f"line {entry.line}: {entry.name!r} is not a FineGym element id")
    return entries


def finegym_classes(path: str | Path) -> tuple[list[str], list[str]]:
    """Label texts and coarse event types of a FineGym class-name file.

    The official Gym99 names give two elements one name (``(BB) salto backward tucked``, lines 59 and 71: a beam
    element and a dismount): that is warned about, not refused, so the published splits stay usable.
    """
    texts, coarse = [], []
    for name in read_class_names(path, duplicates="warn"):
        event, text = parse_finegym_name(name)
        texts.append(text)
        coarse.append(event or COARSE_TYPES["finegym"])
    return texts, coarse


def _split_candidates(name: str, split: str) -> list[str]:
    s = "val" if split in ("val", "test") else split
    return [
        f"{name}_{s}_element_v1.1.txt",
        f"{name}_{s}_element_v1.0.txt",
        f"{name}_{s}_element.txt",
        f"{name}_{s}_org.txt",
        f"{name}_{s}.txt",
        f"vba_{name}_gym_{s}_list_rawframes.txt",
        f"{name}_{s}_list_rawframes.txt",
        f"{name}_{s}_frame.txt",
        f"{name}_{s}_list_videos.txt",
    ]


@register(
    "gym99",
    "gym288",
    options={"list_file", "label_map", "annotation_file", "video_dir", "event_dir", "frames_dir", "filename_tmpl",
             "skip_missing"},
)  # fmt: skip
def build_finegym(name: str, split: str, root: Path | None, options: dict[str, Any]) -> DatasetSpec:
    """Build Gym99 or Gym288 (see the module docstring for the files)."""
    root = default_root(root, "gym", name)
    list_file = (
        Path(options["list_file"]) if options.get("list_file") else find_in(root, _split_candidates(name, split))
    )
    if list_file is None:
        raise PevlError(f"{root}: no {name} {split} split file (e.g. {_split_candidates(name, split)[1]})")
    label_map = options.get("label_map") or find_in(
        root, [f"{name}_categories.txt", f"label_map_{name}.txt", f"{name}_label_map.txt"]
    )
    if label_map is None:
        raise PevlError(f"{root}: no {name} class names ({name}_categories.txt or label_map_{name}.txt)")
    classes, coarse = finegym_classes(label_map)
    entries = parse_finegym_split(list_file)
    check_labels(list_file, entries, len(classes))

    video_dirs = [Path(options["video_dir"])] if options.get("video_dir") else [root / "subactions", root / "videos"]
    frame_dirs = (
        [Path(options["frames_dir"])]
        if options.get("frames_dir")
        else [root / "subaction_frames", root / "rawframes", root / "frames"]
    )
    event_dir = Path(options["event_dir"]) if options.get("event_dir") else root / "events"
    annotation_file = options.get("annotation_file") or find_in(
        root, ["finegym_annotation_info_v1.1.json", "finegym_annotation_info_v1.0.json", "annotation.json"]
    )
    annotation: dict | None = None

    records, missing = [], []
    for entry in entries:
        ids = finegym_element_ids(entry.name)
        assert ids is not None
        keys = (ids["official"], ids["rawframe"])
        record = None
        if entry.num_frames is not None:
            folder = next((d / n for d in frame_dirs for n in (entry.name, ids["official"]) if (d / n).is_dir()), None)
            if folder is not None:
                record = VideoRecord(entry.name, entry.label, frames_dir=folder, num_frames=entry.num_frames, keys=keys)
        if record is None:
            names = [entry.name] if Path(entry.name).suffix else []
            names += [ids[k] + ext for k in ("official", "rawframe") for ext in _VIDEO_EXTS]
            video = next((d / n for d in video_dirs for n in names if (d / n).is_file()), None)
            if video is not None:
                record = VideoRecord(ids["official"], entry.label, video=video, keys=keys)
        if record is None and annotation_file is not None:
            event_video = next(
                (p for ext in _VIDEO_EXTS if (p := event_dir / f"{ids['video']}_{ids['event']}{ext}").is_file()), None
            )
            if event_video is not None:
                if annotation is None:
                    annotation = _load_annotation(annotation_file)
                window = _element_window(annotation, ids, annotation_file)
                record = VideoRecord(ids["official"], entry.label, video=event_video, window_sec=window, keys=keys)
        if record is None:
            missing.append(entry.name)
        else:
            records.append(record)
    if missing and not options.get("skip_missing"):
        raise missing_videos_error(
            list_file, missing, len(entries), root, "subactions/<id>.mp4, subaction_frames/<id>/ or events/ + json"
        )
    return DatasetSpec(
        records=records,
        classes=classes,
        coarse=coarse,
        rawframe_template=options.get("filename_tmpl", "img_{:05d}.jpg"),
    )


def _load_annotation(path: str | Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise file_error(path, "no such file") from None
    except (OSError, ValueError) as err:
        raise file_error(path, f"not a valid JSON file ({err.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise file_error(path, "is not a FineGym annotation (expected a dict keyed by YouTube id)")
    return data


def _element_window(annotation: dict, ids: dict[str, str], path: str | Path) -> tuple[float, float]:
    """``(start, end)`` seconds of an element inside its event clip."""
    try:
        segment = annotation[ids["video"]][ids["event"]]["segments"][ids["action"]]
        stamps = segment["timestamps"]
        return float(stamps[0][0]), float(stamps[-1][1])
    except (KeyError, IndexError, TypeError, ValueError):
        raise file_error(path, f"no timestamps for element {ids['official']}") from None
