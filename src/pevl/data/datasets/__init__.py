"""Datasets of the paper (FineGym, Diving48, HAA500, Toyota-Smarthome, Kinetics-400) and generic formats.

``build_dataset(name, split, root=..., ...)`` returns an :class:`ActionDataset` whose items hold the video clip,
the pose clip, the label and the index, and whose ``classes`` / ``coarse`` become the text prompts.

Names: ``gym99``, ``gym288``, ``diving48``, ``haa500``, ``toyota_cs``, ``toyota_cv1``, ``toyota_cv2``,
``kinetics400``, ``video_list``, ``video_folder``, ``pyskl`` (pose only) and ``synthetic``. The files each one
expects are described in its module and in ``docs/datasets.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pevl.data.datasets import diving48, finegym, generic, haa500, kinetics, skeleton, synthetic, toyota  # noqa: F401
from pevl.data.datasets.base import ActionDataset, CachePoses, PicklePoses, PoseSource, VideoRecord
from pevl.data.datasets.registry import COMMON_OPTIONS, DATASETS, DatasetSpec, dataset_options, register
from pevl.errors import PevlError

__all__ = [
    "COMMON_OPTIONS",
    "DATASETS",
    "ActionDataset",
    "CachePoses",
    "DatasetSpec",
    "PicklePoses",
    "PoseSource",
    "VideoRecord",
    "build_dataset",
    "dataset_options",
    "register",
]


def build_dataset(
    name: str,
    split: str,
    *,
    root: str | Path | None = None,
    train: bool | None = None,
    num_video_frames: int = 8,
    num_pose_frames: int = 32,
    image_size: int = 224,
    num_clips: int = 1,
    num_crops: int = 1,
    use_video: bool = True,
    use_pose: bool = True,
    pose_file: str | Path | None = None,
    pose_cache_dir: str | Path | None = None,
    seed: int = 0,
    **options: Any,
) -> ActionDataset:
    """Build a dataset split with its video/pose pipeline.

    Args:
        name: A key of :data:`DATASETS`.
        split: ``"train"``, ``"val"`` or ``"test"`` (or a split of the pickle for ``pyskl``).
        root: The dataset folder (default ``data/<dataset>`` as in MMAction2; required for the generic ones).
        train: Training-time sampling and augmentation; ``split == "train"`` when ``None``.
        num_video_frames: ``T_v``, RGB frames per clip (Video (L)).
        num_pose_frames: ``T_p``, pose frames per clip (Video (H)).
        image_size: Side of the RGB crops.
        num_clips: Clips per video (multi-clip testing).
        num_crops: Spatial crops per clip at test time (1 or 3).
        use_video: Load RGB clips.
        use_pose: Load pose clips.
        pose_file: A PYSKL skeleton pickle with the poses (looked up by ``frame_dir``, then by file stem).
        pose_cache_dir: The ``pevl extract-poses`` cache to read poses from when there is no pose file.
        seed: Seed of the per-item random draws (with the epoch and the index).
        **options: Dataset-specific options (:func:`dataset_options`), e.g. ``list_file``, ``label_map``.

    Returns:
        The :class:`ActionDataset`.

    Raises:
        PevlError: Unknown dataset or option, missing or malformed files, videos without poses.
    """
    accepted = dataset_options(name)
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise PevlError(
            f"unknown option(s) {', '.join(unknown)} for dataset {name} (accepted: {', '.join(sorted(accepted))})"
        )
    builder_options = dict(options)
    if "pose_file" in accepted and pose_file is not None:
        builder_options.setdefault("pose_file", pose_file)
    spec = DATASETS[name](name, split, Path(root) if root is not None else None, builder_options)
    if not spec.records:
        raise PevlError(f"dataset {name}: split {split!r} has no samples")
    poses: PoseSource | None = None
    if use_pose:
        layout = options.get("pose_layout")
        if spec.poses is not None and (pose_file is None or "pose_file" in accepted):
            poses = spec.poses
        elif pose_file is not None:
            poses = PicklePoses(pose_file, layout=layout)
        else:
            poses = CachePoses(pose_cache_dir, backend=options.get("pose_backend", "mediapipe"))
        poses.check(spec.records)
    dataset = ActionDataset(
        spec.records,
        spec.classes,
        spec.coarse,
        name=name,
        train=(split == "train") if train is None else bool(train),
        num_video_frames=num_video_frames,
        num_pose_frames=num_pose_frames,
        image_size=image_size,
        num_clips=num_clips,
        num_crops=num_crops,
        use_video=use_video,
        use_pose=use_pose,
        poses=poses,
        seed=seed,
        rawframe_template=spec.rawframe_template,
        rawframe_start=spec.rawframe_start,
        flip_prob=float(options.get("flip_prob", 0.0)),
    )
    dataset.split_note = spec.split_note
    if use_video and isinstance(poses, PicklePoses):
        dataset.check_pose_frames(resample=_flag(options.get("resample_poses", False)))
    return dataset


def _flag(value: Any) -> bool:
    """A yes/no dataset option (``true`` / ``false`` from the command line as well as booleans)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "false", "no", "0"):
        return value.strip().lower() in ("true", "yes", "1")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise PevlError(f"data.options.resample_poses: expected true or false, got {value!r}")
