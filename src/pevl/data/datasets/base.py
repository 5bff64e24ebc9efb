"""The common dataset: records (video + label), a pose source, and the sampling/decoding/transform pipeline.

Every dataset of the paper becomes a list of :class:`VideoRecord` plus the class texts; :class:`ActionDataset`
does the rest. An item is ``{"video": [V, T_v, 3, S, S], "pose": [V, T_p, 17, 3], "label", "index"}`` with
``V`` views: 1 when training, ``num_clips x num_crops`` at test time (pose-only: ``num_clips``).

Poses come from a PYSKL pickle (:class:`PicklePoses`, looked up by ``frame_dir``, falling back to the file
stem) or from the cache ``pevl extract-poses`` fills (:class:`CachePoses`). With several persons the dataset
keeps the *main person* (:func:`pevl.data.pose.tracking.main_person`: the largest confidently seen person).

Randomness is reproducible: item ``i`` of epoch ``e`` draws from a generator seeded with ``(seed, e, i)``, so a
resumed training run sees exactly the samples an uninterrupted one would (call :meth:`ActionDataset.set_epoch`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pevl.data.pose.gaps import fill_gaps
from pevl.data.pose.pyskl import SkeletonFile, main_person, pose_frames_fit
from pevl.errors import PevlError, PevlWarning, file_error


@dataclass
class VideoRecord:
    """One sample of a dataset.

    Attributes:
        name: Identifier of the sample (e.g. the video's path relative to the root, without extension).
        label: Class index (-1 when unknown).
        video: The video file, if any.
        frames_dir: A folder of extracted frames (MMAction2 "rawframes"), used instead of ``video``.
        num_frames: Frame count when the list file gives it (rawframes).
        window: ``(start, end)`` frame range inside ``video`` (end exclusive), e.g. a FineGym element inside
            its event clip.
        window_sec: Like ``window`` but in seconds; turned into frames with the video's frame rate.
        keys: Names to look the poses up by, in order (``frame_dir`` of a pickle).
    """

    name: str
    label: int
    video: Path | None = None
    frames_dir: Path | None = None
    num_frames: int | None = None
    window: tuple[int, int] | None = None
    window_sec: tuple[float, float] | None = None
    keys: tuple[str, ...] = field(default_factory=tuple)

    @property
    def lookup_keys(self) -> tuple[str, ...]:
        """Pose lookup keys: the explicit ones, then the name and its stem."""
        extra = (self.name, Path(self.name).name, Path(self.name).stem)
        return tuple(dict.fromkeys(k for k in (*self.keys, *extra) if k))


@dataclass
class PoseClip:
    """A record's poses: the main person in pixels of ``img_shape``."""

    keypoint: np.ndarray  # [T, 17, 2]
    score: np.ndarray  # [T, 17]
    img_shape: tuple[int, int]


class PoseSource(ABC):
    """Where a dataset's poses come from."""

    description: str = ""

    @abstractmethod
    def has(self, record: VideoRecord) -> bool:
        """Whether poses exist for ``record`` (cheap)."""

    @abstractmethod
    def get(self, record: VideoRecord) -> PoseClip:
        """The poses of ``record`` (raises :class:`PevlError` when absent)."""

    def check(self, records: Sequence[VideoRecord]) -> None:
        """Raise one error naming the first record without poses, if any."""
        missing = [r for r in records if not self.has(r)]
        if missing:
            raise PevlError(
                f"{self.description} lacks poses for {len(missing)} of {len(records)} videos "
                f"(first: {missing[0].name}); run `pevl extract-poses` or pass the right pose file"
            )


class PicklePoses(PoseSource):
    """Poses from a PYSKL skeleton pickle, looked up by ``frame_dir`` and then by the file stem.

    Args:
        path: The pickle.
        layout: Joint layout of the pickle when it is not COCO-17 (see :mod:`pevl.data.pose.layouts`).
    """

    def __init__(self, path: str | Path, layout: str | None = None) -> None:
        self.file = SkeletonFile(path, layout)
        self.path = self.file.path
        self.layout = layout
        self.description = f"pose file {self.path}"
        self.split = self.file.split

    @property
    def annotations(self) -> list[dict]:
        """Every annotation of the file."""
        return self.file.annotations

    def has(self, record: VideoRecord) -> bool:  # noqa: D102
        return self.file.find(record.lookup_keys) is not None

    def get(self, record: VideoRecord) -> PoseClip:  # noqa: D102
        ann = self.file.find(record.lookup_keys)
        if ann is None:
            raise file_error(self.path, f"no poses for {record.name}")
        person = self.file.person(ann)
        return PoseClip(person.keypoint, person.score, person.img_shape)


class CachePoses(PoseSource):
    """Poses from the ``pevl extract-poses`` cache, per video file (sliced to the record's window).

    Args:
        cache_dir: The cache root (the default cache when ``None``).
        backend: Backend tag the poses were extracted with.
    """

    def __init__(self, cache_dir: str | Path | None = None, backend: str = "mediapipe") -> None:
        from pevl.data.pose.cache import PoseCache

        self.cache = PoseCache(cache_dir, backend=backend)
        self.description = f"the pose cache {self.cache.root} ({backend})"

    def has(self, record: VideoRecord) -> bool:  # noqa: D102
        source = record.video or record.frames_dir  # a rawframe folder is cached like a video
        if source is None:
            return False
        path = self.cache.path_for(source)
        return path is not None and path.is_file()

    def get(self, record: VideoRecord) -> PoseClip:  # noqa: D102
        source = record.video or record.frames_dir
        seq = self.cache.get(source) if source is not None else None
        if seq is None:
            raise PevlError(f"{source}: no cached poses in {self.cache.root}; run `pevl extract-poses` first")
        keypoint, score = main_person(*fill_gaps(seq.keypoint, seq.keypoint_score))
        return PoseClip(keypoint, score, seq.img_shape)


def read_rawframes(
    folder: Path, indices: Sequence[int], template: str = "img_{:05d}.jpg", start: int = 1
) -> np.ndarray:
    """Read extracted frames (MMAction2 rawframes) named by ``template``: ``[len(indices), H, W, 3]`` RGB uint8.

    See :func:`pevl.data.rawframes.read_template_frames`.
    """
    from pevl.data.rawframes import read_template_frames

    return read_template_frames(folder, indices, template, start)


class ActionDataset(Dataset):
    """Records + pose source + the video/pose pipeline (the common base of every dataset).

    Attributes:
        classes: Label texts (human-readable) that become the text prompts.
        coarse: Coarse action type per class (e.g. ``"vault"``, ``"diving"``) for the Table-4 prompt, or ``None``.
        records: The samples.
        name: Dataset name.
    """

    def __init__(
        self,
        records: list[VideoRecord],
        classes: list[str],
        coarse: list[str] | None = None,
        *,
        name: str = "dataset",
        train: bool = False,
        num_video_frames: int = 8,
        num_pose_frames: int = 32,
        image_size: int = 224,
        num_clips: int = 1,
        num_crops: int = 1,
        use_video: bool = True,
        use_pose: bool = True,
        poses: PoseSource | None = None,
        seed: int = 0,
        rawframe_template: str = "img_{:05d}.jpg",
        rawframe_start: int = 1,
        flip_prob: float = 0.0,
    ) -> None:
        from pevl.data.transforms import ClipTransform, PoseTransform

        if not use_video and not use_pose:
            raise PevlError("a dataset needs use_video, use_pose or both")
        if use_pose and poses is None:
            raise PevlError(f"dataset {name}: use_pose is set but there is no pose source")
        if use_video and any(r.video is None and r.frames_dir is None for r in records):
            raise PevlError(f"dataset {name} has no videos: set use_video=False for a pose-only model")
        if coarse is not None and len(coarse) != len(classes):
            raise PevlError(f"dataset {name}: {len(coarse)} coarse types for {len(classes)} classes")
        self.records = records
        self.classes = list(classes)
        self.coarse = list(coarse) if coarse is not None else None
        self.name = name
        self.train = train
        self.num_video_frames = num_video_frames
        self.num_pose_frames = num_pose_frames
        self.num_clips = num_clips
        self.num_crops = 1 if train else num_crops
        self.use_video = use_video
        self.use_pose = use_pose
        self.poses = poses
        self.seed = seed
        self.epoch = 0
        self.rawframe_template = rawframe_template
        self.rawframe_start = rawframe_start
        self.split_note: str | None = None  # how the split was made when the data had none (see datasets.holdout)
        if not 0.0 <= flip_prob <= 1.0:
            raise PevlError(f"dataset {name}: flip_prob must be in [0, 1], got {flip_prob}")
        self.clip_transform = ClipTransform(
            image_size=image_size, train=train, crops=self.num_crops, flip_prob=flip_prob
        )
        self.pose_transform = PoseTransform(train=train, flip_prob=flip_prob)
        self._video_info: dict[int, tuple[int, float]] = {}

    def __len__(self) -> int:
        return len(self.records)

    @property
    def labels(self) -> list[int]:
        """Class index of every record."""
        return [r.label for r in self.records]

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random draws the next items use."""
        self.epoch = int(epoch)

    def rng(self, index: int, epoch: int | None = None) -> np.random.Generator:
        """The random generator of item ``index`` in ``epoch`` (default: the current one)."""
        epoch = self.epoch if epoch is None else epoch
        return np.random.default_rng([int(self.seed), int(epoch), int(index)])

    def _video_frames(self, index: int, record: VideoRecord) -> tuple[int, int, int]:
        """``(first frame, frame count, frames in the whole file)`` of the record in its video or frame folder."""
        if record.frames_dir is not None and record.num_frames is not None:
            if record.window is None:
                return 0, record.num_frames, record.num_frames
            if index not in self._video_info:  # a clip of a longer folder (MMAction2's with_offset lists)
                from pevl.data.rawframes import probe_rawframes

                self._video_info[index] = (probe_rawframes(record.frames_dir).num_frames, 0.0)
            offset = record.window[0]
            return offset, record.num_frames, max(self._video_info[index][0], offset + record.num_frames)
        if record.frames_dir is not None:
            from pevl.data.rawframes import probe_rawframes

            count = probe_rawframes(record.frames_dir).num_frames
            return 0, count, count
        if index not in self._video_info:
            from pevl.data.video import probe_video

            info = probe_video(record.video)  # type: ignore[arg-type]
            self._video_info[index] = (info.num_frames, info.fps)
        total, fps = self._video_info[index]
        start, end = 0, total
        if record.window is not None:
            start, end = record.window
        elif record.window_sec is not None:
            if fps <= 0:
                raise file_error(record.video, "has no frame rate to locate the annotated time window")  # type: ignore[arg-type]
            start, end = int(np.floor(record.window_sec[0] * fps)), int(np.ceil(record.window_sec[1] * fps))
        start = max(0, min(start, total - 1))
        end = max(start + 1, min(end, total))
        return start, end - start, total

    def check_pose_frames(self, resample: bool = False) -> None:
        """Compare every pose-file annotation's frame count with its video's, once, where the dataset is built.

        Poses follow the video's time axis: an annotation whose frame count differs from its video's (clip's)
        is resampled by time to it. Within :func:`pevl.data.pose.pyskl.pose_frames_fit` that happens with one
        warning for the dataset (both counts of the first); beyond it the annotation is likely another video's
        or another frame rate's and is refused unless ``resample`` (``data.options.resample_poses``) says so.
        Frame counts probed here stay with the dataset, so loader workers do not probe the videos again.

        Raises:
            PevlError: An annotation beyond the tolerance without ``resample``, naming the pose file, the
                ``frame_dir`` and the video.
        """
        import warnings

        if not isinstance(self.poses, PicklePoses) or not self.use_video:
            return
        differ: list[str] = []
        for index, record in enumerate(self.records):
            ann = self.poses.file.find(record.lookup_keys)
            if ann is None or (record.video is None and record.frames_dir is None):
                continue
            frames = int(np.asarray(ann["keypoint"]).shape[-3])
            count = self._video_frames(index, record)[1]
            if frames == count:
                continue
            counts = (
                f"annotation {ann['frame_dir']!r} has {frames} pose frames, the "
                f"{'video' if record.frames_dir is None else 'frame folder'} {record.video or record.frames_dir} "
                f"{count}"
            )
            if not pose_frames_fit(frames, count) and not resample:
                raise file_error(
                    self.poses.path,
                    f"{counts}: another video or another frame rate? Set data.options.resample_poses=true to "
                    "resample them by time",
                )
            differ.append(counts)
        if differ:
            more = f" ({len(differ)} of {len(self.records)} annotations differ; first shown)" if len(differ) > 1 else ""
            warnings.warn(
                f"{self.poses.path}: {differ[0]}; poses resampled by time to the video's frames{more}",
                PevlWarning,
                stacklevel=3,
            )

    def _read(self, record: VideoRecord, indices: np.ndarray) -> np.ndarray:
        if record.frames_dir is not None and record.num_frames is None:  # a folder named without a frame count
            from pevl.data.rawframes import read_rawframes as read_numbered

            return read_numbered(record.frames_dir, indices.tolist())
        if record.frames_dir is not None:
            return read_rawframes(record.frames_dir, indices, self.rawframe_template, self.rawframe_start)
        from pevl.data.video import read_frames

        return read_frames(record.video, indices.tolist())  # type: ignore[arg-type]

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, Any]:
        """Item ``index``, or ``(epoch, index)``: the epoch travels with the index to persistent loader workers."""
        from pevl.data.sampling import sample_clip_indices

        epoch = None
        if isinstance(index, tuple):
            epoch, index = index
        record = self.records[index]
        rng = self.rng(index, epoch)
        pose = self.poses.get(record) if self.use_pose else None  # type: ignore[union-attr]
        per_file = isinstance(self.poses, CachePoses)  # cached poses cover the whole video file
        windowed = record.window is not None or record.window_sec is not None
        if self.use_video or (pose is not None and per_file and windowed):
            start, count, total = self._video_frames(index, record)
        else:
            start, count = 0, pose.keypoint.shape[0]  # type: ignore[union-attr]
            total = count
        clips = sample_clip_indices(count, self.num_pose_frames, self.num_video_frames, self.train, self.num_clips, rng)
        if pose is not None:
            # Pose frames follow the video's time axis even when their counts differ slightly.
            pose_total = pose.keypoint.shape[0]
            frame = clips.pose + start if per_file else clips.pose
            pose_index = np.minimum(frame * pose_total // (total if per_file else count), pose_total - 1)
        videos, poses = [], []
        for c in range(self.num_clips):
            kp = sc = None
            if pose is not None:
                kp, sc = pose.keypoint[pose_index[c]], pose.score[pose_index[c]]
            if self.use_video:
                frames = self._read(record, clips.video[c] + start)
                img_shape = pose.img_shape if pose is not None else frames.shape[1:3]
                out = self.clip_transform(frames, kp, sc, img_shape, rng)
                videos.append(out["video"])
                if pose is not None:
                    poses.append(out["pose"])
            else:
                poses.append(self.pose_transform(kp, sc, pose.img_shape, rng))  # type: ignore[arg-type, union-attr]
        item: dict[str, Any] = {"label": int(record.label), "index": int(index)}
        if videos:
            item["video"] = torch.cat(videos)
        if poses:
            item["pose"] = torch.cat(poses)
        return item
