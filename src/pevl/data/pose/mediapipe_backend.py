"""BlazePose (MediaPipe) pose extraction: the offline default backend.

MediaPipe 0.10.21 ships BlazePose's detector and its "full" landmark model (``model_complexity=1``) inside
the wheel, so this backend runs without any download. (The "lite" and "heavy" models, complexity 0 and 2, are
downloaded on first use, which fails offline: they are never used here.) Later MediaPipe releases no longer
bundle the models. Install: ``pip install --no-deps mediapipe==0.10.21`` plus ``pip install pevl[pose]``.

BlazePose tracks one person: it detects the most prominent person, then follows that person's region of
interest from frame to frame and re-detects when the track is lost, which is what "track the main actor"
needs for single-person action videos. Its 33 landmarks are mapped to COCO-17 by name ("left" is the
person's left, as in COCO); the per-landmark ``visibility`` is the score.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from pevl.data.pose.base import PoseExtractor
from pevl.data.pose.layouts import COCO17_JOINTS
from pevl.errors import PevlError

INSTALL_HINT = "pip install --no-deps mediapipe==0.10.21 && pip install 'pevl[pose]'"


def _import_mediapipe() -> Any:
    # MediaPipe's C++ core logs through glog/absl to stderr; keep the CLI output readable.
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import mediapipe as mp
        from mediapipe.python.solutions import pose as mp_pose
    except ImportError as err:
        raise PevlError(
            f"the 'mediapipe' pose backend needs mediapipe 0.10.21 ({err}); install it with: {INSTALL_HINT}"
        ) from None
    return mp, mp_pose


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Send the process's stderr (file descriptor 2) to /dev/null for the duration of the block.

    MediaPipe's C++ core writes start-up notices (TensorFlow Lite delegate, "feedback manager") straight to
    file descriptor 2 every time a graph starts, which Python's logging cannot filter.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, AttributeError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def blazepose_to_coco17_indices(landmark_names: list[str]) -> list[int]:
    """Indices of the COCO-17 joints among BlazePose's landmarks, matched by name.

    Args:
        landmark_names: BlazePose landmark names in model order (``PoseLandmark`` member names).

    Returns:
        17 indices into the 33 landmarks, in COCO-17 order.
    """
    position = {name.lower(): i for i, name in enumerate(landmark_names)}
    missing = [joint for joint in COCO17_JOINTS if joint not in position]
    if missing:
        raise RuntimeError(f"BlazePose has no landmark for {missing}")
    return [position[joint] for joint in COCO17_JOINTS]


class MediaPipeExtractor(PoseExtractor):
    """BlazePose "full" (MediaPipe 0.10.21), one person per frame, mapped to COCO-17.

    Args:
        min_detection_confidence: Person detector threshold.
        min_tracking_confidence: Below this landmark-model confidence the person is re-detected.
        smooth_landmarks: Temporal filtering of the landmarks (video mode).
    """

    name = "mediapipe"

    def __init__(
        self,
        min_detection_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
        smooth_landmarks: bool = True,
    ) -> None:
        _, mp_pose = _import_mediapipe()
        self._coco = np.asarray(blazepose_to_coco17_indices([lm.name for lm in mp_pose.PoseLandmark]))
        self._fresh = True  # the graph's first frame prints start-up notices
        with _native_stderr_silenced():
            self._pose = mp_pose.Pose(
                static_image_mode=False,
                model_complexity=1,  # the bundled "full" model; 0 and 2 would try to download
                smooth_landmarks=smooth_landmarks,
                enable_segmentation=False,
                min_detection_confidence=min_detection_confidence,
                min_tracking_confidence=min_tracking_confidence,
            )
            self._wait_for_graph()

    def _wait_for_graph(self) -> None:
        # A (re)started graph opens its models on worker threads, which print notices when they get there;
        # one blank frame (no person: leaves no tracking state) waits for that while stderr is silenced.
        self._pose.process(np.zeros((64, 64, 3), dtype=np.uint8))

    def detect(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Estimate the tracked person's pose in one RGB frame (``N`` is 0 or 1)."""
        height, width = frame.shape[:2]
        if self._fresh:
            with _native_stderr_silenced():
                result = self._pose.process(np.ascontiguousarray(frame))
            self._fresh = False
        else:
            result = self._pose.process(np.ascontiguousarray(frame))
        if result.pose_landmarks is None:
            return np.zeros((0, 17, 2), np.float32), np.zeros((0, 17), np.float32)
        landmarks = result.pose_landmarks.landmark
        values = np.array([(lm.x, lm.y, lm.visibility) for lm in landmarks], dtype=np.float32)[self._coco]
        keypoint = values[None, :, :2] * np.array([width, height], dtype=np.float32)
        score = values[None, :, 2]
        return keypoint, score

    def reset(self) -> None:
        """Drop the tracked person and the landmark filters: the next frame starts a new video."""
        with _native_stderr_silenced():
            self._pose.reset()
            self._wait_for_graph()
        self._fresh = True

    def close(self) -> None:
        """Release the MediaPipe graph."""
        if self._pose is not None:
            self._pose.close()
            self._pose = None
