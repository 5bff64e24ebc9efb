"""The synthetic dive set written by ``pevl make-synthetic`` (:func:`pevl.data.synthetic.make_synthetic`).

``root`` is the generator's output folder: ``classes.txt``, ``coarse.txt``, ``train.txt`` / ``val.txt`` and the
ground-truth poses ``poses.pkl`` (used unless another pose source is given). ``test`` is ``val``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pevl.data.datasets.base import PicklePoses
from pevl.data.datasets.generic import coarse_types, records_from_list
from pevl.data.datasets.lists import check_labels, parse_video_list, read_class_names
from pevl.data.datasets.registry import DatasetSpec, default_root, register
from pevl.errors import PevlError


@register("synthetic", options=set())
def build_synthetic(name: str, split: str, root: Path | None, options: dict[str, Any]) -> DatasetSpec:
    """Build the synthetic dataset from ``root`` (see the module docstring)."""
    root = default_root(root, "synthetic", name)
    subset = "val" if split == "test" else split
    list_file = root / f"{subset}.txt"
    if not list_file.is_file():
        raise PevlError(f"{list_file}: no such split file (is {root} a `pevl make-synthetic` folder?)")
    classes = read_class_names(root / "classes.txt")
    entries = parse_video_list(list_file)
    check_labels(list_file, entries, len(classes))
    records = records_from_list(entries, root, list_file, skip_missing=False)
    for record in records:
        record.keys = (Path(record.name).name,)
    poses = PicklePoses(root / "poses.pkl") if (root / "poses.pkl").is_file() else None
    return DatasetSpec(records=records, classes=classes, coarse=coarse_types(root, options, len(classes)), poses=poses)
