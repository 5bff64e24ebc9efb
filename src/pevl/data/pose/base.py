"""The pose extractor interface and the per-video result, :class:`PoseSequence`.

An extractor turns a stream of RGB frames into COCO-17 keypoints in pixels: ``[M, T, 17, 2]`` coordinates and
``[M, T, 17]`` scores, with score 0 (and coordinates 0) wherever no person was found, never NaN. Normalising
the coordinates is the model transform's job (:mod:`pevl.data.transforms`), so a cached sequence serves any
crop or resolution.

Backends (:func:`create_extractor`): ``mediapipe`` (BlazePose "full", offline, one person, the default) and
``rtmlib`` (RTMPose + YOLOX, several persons, optional extra ``pevl[rtmpose]``).
"""

from __future__ import annotations

import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from pevl.errors import PevlError, file_error

FAR_OUTSIDE = 4.0
"""A pose coordinate further than this many frame widths (heights) from the frame's centre is refused."""
DECODE_TIMEOUT_S = 300.0
"""Seconds the pose extractor waits for the next decoded frame before it reports the decoder stuck."""
NUM_JOINTS = 17
"""COCO-17: every extractor maps its own landmarks to this layout (:mod:`pevl.data.pose.layouts`)."""


def far_outside(keypoint: np.ndarray, img_shape: tuple[int, int]) -> tuple[int, float] | None:
    """The first frame with a coordinate far outside the frame, and that coordinate; ``None`` when all are near it.

    Estimators place occluded joints a little outside the image; a coordinate more than :data:`FAR_OUTSIDE` frame
    sizes from the frame's centre is not a pose of this video (a corrupt file, coordinates of another frame size)
    and would only reach the model as huge or inf/NaN features.

    Args:
        keypoint: ``[..., T, J, 2]`` (x, y) pixel coordinates.
        img_shape: ``(height, width)`` of the frames they refer to (no check when unknown, i.e. 0).
    """
    height, width = int(img_shape[0]), int(img_shape[1])
    if height <= 0 or width <= 0 or keypoint.size == 0:
        return None
    x, y = keypoint[..., 0], keypoint[..., 1]
    near_x = np.abs(x - width / 2) <= FAR_OUTSIDE * width  # False for NaN too
    near_y = np.abs(y - height / 2) <= FAR_OUTSIDE * height
    bad = ~(near_x & near_y)
    if not bad.any():
        return None
    where = tuple(np.argwhere(bad)[0])
    return int(where[-2]), float(x[where] if not near_x[where] else y[where])


@dataclass
class PoseSequence:
    """The poses of one video in COCO-17 pixel coordinates.

    Attributes:
        keypoint: ``[M, T, 17, 2]`` float32 (x, y) in pixels of ``img_shape``; 0 where missing.
        keypoint_score: ``[M, T, 17]`` float32 in [0, 1]; 0 where no person was found.
        img_shape: ``(height, width)`` of the frames in display orientation.
        fps: Frame rate of the video (0.0 when unknown).
        warnings: Things the user should know about this video's poses (e.g. a second person the backend could
            not track); not cached.
    """

    keypoint: np.ndarray
    keypoint_score: np.ndarray
    img_shape: tuple[int, int]
    fps: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.keypoint = np.asarray(self.keypoint, dtype=np.float32)
        self.keypoint_score = np.asarray(self.keypoint_score, dtype=np.float32)
        if self.keypoint.ndim != 4 or self.keypoint.shape[-1] != 2:
            raise ValueError(f"keypoint must be [M, T, J, 2], got {self.keypoint.shape}")
        if self.keypoint_score.shape != self.keypoint.shape[:3]:
            raise ValueError(f"keypoint_score {self.keypoint_score.shape} does not match {self.keypoint.shape[:3]}")
        self.img_shape = (int(self.img_shape[0]), int(self.img_shape[1]))
        self.fps = float(self.fps)

    @property
    def num_frames(self) -> int:
        """``T``, the number of frames."""
        return int(self.keypoint.shape[1])

    @property
    def num_persons(self) -> int:
        """``M``, the number of person tracks."""
        return int(self.keypoint.shape[0])

    def detected(self) -> np.ndarray:
        """``[T]`` bool: frames where at least one person has a joint with a positive score."""
        return (self.keypoint_score > 0).any(axis=(0, 2))

    def to_annotation(self, frame_dir: str, label: int | None = None) -> dict:
        """The PYSKL / MMAction2 annotation dict of this video.

        Args:
            frame_dir: The video's identifier (its path relative to the dataset root, without extension).
            label: Class index; ``None`` or negative when unlabelled.

        Returns:
            A dict with exactly ``frame_dir``, ``total_frames``, ``img_shape``, ``original_shape``, ``keypoint``
            and ``keypoint_score``, plus ``label`` when the video has one (PYSKL leaves it out otherwise).
        """
        ann: dict[str, Any] = {
            "frame_dir": str(frame_dir),
            "total_frames": self.num_frames,
            "img_shape": self.img_shape,
            "original_shape": self.img_shape,
        }
        if label is not None and int(label) >= 0:
            ann["label"] = int(label)
        ann["keypoint"] = self.keypoint
        ann["keypoint_score"] = self.keypoint_score
        return ann


class PoseExtractor(ABC):
    """Estimates COCO-17 poses frame by frame; create once, reuse for many videos, then :meth:`close`.

    Subclasses implement :meth:`detect` (all persons of one frame) and may keep tracking state between frames,
    which :meth:`reset` clears at the start of every video. Use as a context manager to release the model.
    """

    name: str = "base"
    """Backend name, as given to :func:`create_extractor`."""

    single_person: bool = False
    """The backend follows one person only (whatever ``max_persons`` asks for)."""

    @abstractmethod
    def detect(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Estimate the poses of every person in one frame.

        Args:
            frame: ``[H, W, 3]`` RGB uint8.

        Returns:
            ``(keypoint [N, 17, 2] float32 pixels, score [N, 17] float32 in [0, 1])``; ``N = 0`` when nobody is
            found.
        """

    def other_person_visible(self, frames: list[np.ndarray], keypoints: list[np.ndarray]) -> bool:
        """Whether someone besides the tracked person shows in ``frames`` (single-person backends answer).

        Args:
            frames: A few RGB frames of the video.
            keypoints: Per frame, the tracked person's joints ``[17, 3]`` (x, y, score).
        """
        return False

    def reset(self) -> None:  # noqa: B027 - optional hook, stateless extractors need nothing
        """Forget the tracking state: the next frame starts a new video."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the model."""

    def __enter__(self) -> PoseExtractor:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def extract(self, frames: Iterable[np.ndarray], fps: float = 0.0, max_persons: int = 1) -> PoseSequence:
        """Estimate the poses of a whole video.

        With several persons per frame, persons are linked across frames into tracks and the ``max_persons``
        main tracks are kept (see :func:`pevl.data.pose.tracking.select_main_tracks`).

        Args:
            frames: The video's RGB uint8 frames ``[H, W, 3]``, in order.
            fps: The video's frame rate, stored in the result.
            max_persons: Most person tracks to keep (``M <= max_persons``; at least one row even if empty).

        Returns:
            The :class:`PoseSequence`.

        Raises:
            ValueError: ``frames`` is empty or the frames change size.
        """
        from pevl.data.pose.tracking import select_main_tracks

        if max_persons < 1:
            raise PevlError(f"max_persons must be at least 1, got {max_persons}")
        self.reset()
        per_frame: list[tuple[np.ndarray, np.ndarray]] = []
        img_shape: tuple[int, int] | None = None
        probe = _FrameSample() if max_persons > 1 and self.single_person else None
        for frame in frames:
            shape = (int(frame.shape[0]), int(frame.shape[1]))
            if img_shape is None:
                img_shape = shape
            elif shape != img_shape:
                raise ValueError(f"frame {len(per_frame)} is {shape}, the video started at {img_shape}")
            if probe is not None:
                probe.offer(len(per_frame), frame)
            keypoint, score = self.detect(frame)
            per_frame.append(_sanitise(keypoint, score))
        if img_shape is None:
            raise ValueError("no frames to extract poses from")
        keypoint, score = select_main_tracks(per_frame, max_persons=max_persons)
        seq = PoseSequence(keypoint=keypoint, keypoint_score=score, img_shape=img_shape, fps=fps)
        if probe is not None and probe.frames:
            tracked = [np.concatenate([keypoint[0, t], score[0, t, :, None]], axis=-1) for t in probe.indices]
            if self.other_person_visible(probe.frames, tracked):
                seq.warnings.append(
                    f"another person is visible but the {self.name} backend tracks one: only the main person is "
                    f"written (--max-persons {max_persons}); the rtmlib backend tracks several"
                )
        return seq


class _FrameSample:
    """At most ``limit`` frames spread over a stream of unknown length.

    Every ``stride``-th frame is kept; when the sample is full, every other kept frame is dropped and the stride
    doubles.
    """

    def __init__(self, limit: int = 8, stride: int = 15) -> None:
        self.limit, self.stride = limit, stride
        self.indices: list[int] = []
        self.frames: list[np.ndarray] = []

    def offer(self, index: int, frame: np.ndarray) -> None:
        if index % self.stride:
            return
        if len(self.frames) == self.limit:
            self.indices, self.frames = self.indices[::2], self.frames[::2]
            self.stride *= 2
            if index % self.stride:
                return
        self.indices.append(index)
        self.frames.append(np.array(frame, copy=True))


def _sanitise(keypoint: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float32 copies with scores clipped to [0, 1] and non-finite joints zeroed (score 0)."""
    keypoint = np.array(keypoint, dtype=np.float32).reshape(-1, NUM_JOINTS, 2)
    score = np.array(score, dtype=np.float32).reshape(-1, NUM_JOINTS)
    bad = ~np.isfinite(keypoint).all(axis=-1) | ~np.isfinite(score)
    keypoint[bad] = 0.0
    score[bad] = 0.0
    np.clip(score, 0.0, 1.0, out=score)
    keypoint[score <= 0] = 0.0
    return keypoint, score


BACKENDS: dict[str, str] = {
    "mediapipe": "pevl.data.pose.mediapipe_backend:MediaPipeExtractor",
    "rtmlib": "pevl.data.pose.rtmlib_backend:RTMLibExtractor",
}
"""Backend name -> ``module:class`` (imported on use, so a missing optional package costs nothing)."""

BACKEND_ALIASES: dict[str, str] = {"rtmpose": "rtmlib", "blazepose": "mediapipe"}
"""Other accepted backend names."""


def canonical_backend(backend: str) -> str:
    """The registered name of a backend or alias (``"rtmpose"`` -> ``"rtmlib"``).

    Raises:
        PevlError: Unknown backend.
    """
    key = BACKEND_ALIASES.get(backend, backend)
    if key not in BACKENDS:
        raise PevlError(f"unknown pose backend {backend!r} (choose from {', '.join(sorted(BACKENDS))})")
    return key


def cache_tag(backend: str = "mediapipe", max_persons: int = 1, **kwargs: Any) -> str:
    """Name of the pose cache folder for a backend and the settings that change its output.

    Args:
        backend: Backend name or alias.
        max_persons: Person tracks kept per video.
        **kwargs: The backend's constructor arguments.

    Returns:
        E.g. ``"mediapipe"``, ``"rtmlib-m2"`` or ``"rtmlib-m2-mode=performance"``.
    """
    parts = [canonical_backend(backend)]
    if max_persons != 1:
        parts.append(f"m{max_persons}")
    parts.extend(f"{key}={kwargs[key]}" for key in sorted(kwargs))
    return "-".join(parts)


def create_extractor(backend: str = "mediapipe", **kwargs: Any) -> PoseExtractor:
    """Create a pose extractor by backend name.

    Args:
        backend: ``"mediapipe"`` (offline default) or ``"rtmlib"`` (alias ``"rtmpose"``).
        **kwargs: Passed to the backend's constructor.

    Returns:
        The extractor.

    Raises:
        PevlError: Unknown backend, or its package is not installed (with the install command).
    """
    import importlib

    module_name, class_name = BACKENDS[canonical_backend(backend)].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(**kwargs)


def extract_video(
    path: str | Path,
    extractor: PoseExtractor,
    max_persons: int = 1,
    frames: tuple[int | None, int, int] | None = None,
) -> PoseSequence:
    """Decode a video and estimate its poses, streaming (the video is never held whole).

    Args:
        path: A video file or a rawframe folder.
        extractor: The pose extractor.
        max_persons: Most person tracks to keep.
        frames: For a rawframe folder, an MMAction2 list line's ``(start_index, offset, total_frames)``
            (:func:`pevl.data.rawframes.frame_range`; ``None`` as ``start_index``: the folder's first file's
            number); default: every frame.

    Returns:
        The :class:`PoseSequence` (``T`` = decoded frames, ``img_shape`` in display orientation).

    Raises:
        PevlError: The video is missing, not a video, or cannot be decoded.
    """
    from pevl.data.video import iter_frames, probe_video

    info = probe_video(path)
    if frames is not None:
        from pevl.data.rawframes import frame_range, iter_frame_files

        start, offset, count = frames
        decoded = iter_frame_files(frame_range(path, start, count, offset))
    else:
        decoded = iter_frames(path)
    try:
        seq = extractor.extract(_prefetched(decoded, source=path), fps=info.fps, max_persons=max_persons)
    except ValueError as err:
        raise file_error(path, str(err)) from None
    seq.warnings = [f"{path}: {warning}" for warning in seq.warnings]  # each names its video
    return seq


def _prefetched(
    frames: Iterator[np.ndarray], depth: int = 8, source: str | Path = "video", timeout: float = DECODE_TIMEOUT_S
) -> Iterator[np.ndarray]:
    """Decode ``frames`` on a background thread, ``depth`` frames ahead.

    Pose models keep about one core busy; decoding the next frames on the other core meanwhile raises
    throughput on large videos (PyAV releases the GIL while it decodes). Errors reach the consumer in order; a
    decoder that gives no frame for ``timeout`` seconds is an error naming ``source``.
    """
    buffer: queue.Queue = queue.Queue(depth)
    stop = threading.Event()
    end = object()

    def offer(item: object) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for frame in frames:
                if not offer(frame):
                    return
            offer(end)
        except BaseException as err:  # handed to the consumer, which re-raises it
            offer(err)
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=produce, name="pevl-decode", daemon=True)
    worker.start()
    try:
        while True:
            try:
                item = buffer.get(timeout=timeout)
            except queue.Empty:
                raise file_error(source, f"the decoder gave no frame for {timeout:g} s (stuck)") from None
            if item is end:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join(timeout)  # it sees ``stop`` within 0.1 s unless the decoder itself is stuck (a daemon thread)
