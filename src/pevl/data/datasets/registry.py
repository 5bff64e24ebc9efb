"""The dataset registry: name -> builder, and what a builder returns.

A builder turns ``(name, split, root, options)`` into a :class:`DatasetSpec` (records, class texts, coarse types
and, when the dataset ships one, its pose source); :func:`pevl.data.datasets.build_dataset` adds the pipeline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pevl.data.datasets.base import PoseSource, VideoRecord
from pevl.errors import PevlError


@dataclass
class DatasetSpec:
    """What a builder found.

    Attributes:
        records: The samples of the split.
        classes: Label text of every class.
        coarse: Coarse action type of every class, or ``None``.
        poses: The dataset's own pose source (e.g. the synthetic set's pickle), or ``None`` to use the cache.
        rawframe_template: File name pattern of extracted frames (rawframe datasets).
        rawframe_start: Number of the first frame file (MMAction2's ``start_index``).
        split_note: How the split was made when the data had none (a held-out share), else ``None``.
    """

    records: list[VideoRecord]
    classes: list[str]
    coarse: list[str] | None = None
    poses: PoseSource | None = None
    rawframe_template: str = "img_{:05d}.jpg"
    rawframe_start: int = 1
    split_note: str | None = None


Builder = Callable[[str, str, Path | None, dict[str, Any]], DatasetSpec]

DATASETS: dict[str, Builder] = {}
"""Dataset name -> builder ``(name, split, root, options) -> DatasetSpec``."""

_OPTIONS: dict[str, frozenset[str]] = {}

COMMON_OPTIONS = frozenset({"pose_layout", "pose_backend", "flip_prob", "resample_poses"})
"""Options every dataset accepts: ``pose_layout`` (joint layout of a non-COCO pose pickle), ``pose_backend`` (the
extractor whose cached poses to use, ``"mediapipe"`` by default), ``flip_prob`` (probability of a horizontal flip
of a training clip, video and pose together; 0 by default since fine-grained labels can depend on direction) and
``resample_poses`` (resample a pose-file annotation by time to its video even when their frame counts differ by
more than :data:`pevl.data.pose.pyskl.POSE_FRAME_TOLERANCE`; like ``pevl predict --resample-poses``)."""


def register(*names: str, options: set[str] | frozenset[str] = frozenset()) -> Callable[[Builder], Builder]:
    """Register a builder under one or more dataset names, with the extra options it accepts."""

    def wrap(builder: Builder) -> Builder:
        for name in names:
            DATASETS[name] = builder
            _OPTIONS[name] = frozenset(options) | COMMON_OPTIONS
        return builder

    return wrap


def dataset_options(name: str) -> set[str]:
    """The extra option names a dataset accepts (besides the arguments of ``build_dataset``).

    Raises:
        PevlError: For an unknown dataset.
    """
    if name not in _OPTIONS:
        raise PevlError(f"unknown dataset {name!r} (choose from {', '.join(sorted(DATASETS))})")
    return set(_OPTIONS[name])


def default_root(root: str | Path | None, folder: str, dataset: str) -> Path:
    """``root`` or MMAction2's habit ``data/<folder>``; must be an existing folder.

    Raises:
        PevlError: The folder does not exist.
    """
    path = Path(root) if root is not None else Path("data") / folder
    if not path.is_dir():
        hint = "" if root is not None else " (pass root=... to say where the dataset is)"
        raise PevlError(f"{path}: dataset folder of {dataset} not found{hint}")
    return path


def find_in(root: Path, names: list[str], subdirs: tuple[str, ...] = ("", "annotations")) -> Path | None:
    """The first of ``names`` that exists in ``root`` or one of its ``subdirs``."""
    for name in names:
        for sub in subdirs:
            candidate = root / sub / name if sub else root / name
            if candidate.is_file():
                return candidate
    return None


def missing_videos_error(list_file: Path | str, missing: list[str], total: int, root: Path, expected: str) -> PevlError:
    """One-line error for videos a list names but the disk lacks."""
    return PevlError(
        f"{list_file}: {len(missing)} of {total} listed videos were not found under {root} (first: {missing[0]}; "
        f"expected {expected}); pass skip_missing=True to use the others"
    )
