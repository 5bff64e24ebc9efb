"""BlazePose (MediaPipe) pose extraction: the offline default backend.

MediaPipe 0.10.21 ships BlazePose's detector and its "full" landmark model (``model_complexity=1``) inside
the wheel, so this backend runs without any download. (The "lite" and "heavy" models, complexity 0 and 2, are
downloaded on first use, which fails offline: they are never used here.) Later MediaPipe releases no longer
bundle the models. Install: ``pip install --no-deps mediapipe==0.10.21`` plus ``pip install pevl[pose]``.

BlazePose tracks one person: it detects the most prominent person, then follows that person's region of
interest from frame to frame and re-detects when the track is lost, which is what "track the main actor"
needs for single-person action videos. Its 33 landmarks are mapped to COCO-17 by name ("left" is the
person's left, as in COCO).

Scores: a joint scores its landmark's ``visibility`` times its ``presence`` (when the graph reports presence;
MediaPipe's legacy pose graph leaves it unset, and then visibility alone counts). BlazePose also places the
joints it cannot see *outside the image* (a foot below the frame edge), often with a high visibility; those
joints get score 0 (and so coordinates 0): the pose is not in the picture there.

Several people: BlazePose follows one person. When more are asked for (``max_persons > 1``), a few frames are
checked for a second person (the tracked person masked out, BlazePose run again on the rest), and the result
carries a warning when one is found; the ``rtmlib`` backend tracks several persons.
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
    single_person = True

    def __init__(
        self,
        min_detection_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
        smooth_landmarks: bool = True,
    ) -> None:
        _, mp_pose = _import_mediapipe()
        self._coco = np.asarray(blazepose_to_coco17_indices([lm.name for lm in mp_pose.PoseLandmark]))
        self._fresh = True  # the graph's first frame prints start-up notices
        self._probe: Any = None  # a still-image graph, made when a second person is looked for
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
        return _landmarks_to_coco(result.pose_landmarks.landmark, self._coco, width, height)

    def other_person_visible(self, frames: list[np.ndarray], keypoints: list[np.ndarray]) -> bool:
        """Whether a second person shows in any of ``frames`` once the tracked person is masked out.

        Args:
            frames: A few RGB frames of the video.
            keypoints: Per frame, the tracked person's ``[17, 2]`` pixels with ``[17]`` scores stacked as
                ``[17, 3]`` (all-zero scores when nobody was tracked there).

        Returns:
            True when, in at least two of the frames (one when only one could be checked), BlazePose finds a
            person with at least 6 joints seen (score above 0.5), nearly all of them off the mask, whose box
            barely overlaps the tracked person's (a single hit is most often a pose made up from an object).
        """
        from pevl.data.pose.tracking import box_iou, keypoint_box

        if self._probe is None:
            _, mp_pose = _import_mediapipe()
            with _native_stderr_silenced():
                self._probe = mp_pose.Pose(static_image_mode=True, model_complexity=1, enable_segmentation=False)
        hits = probed = 0
        for frame, tracked in zip(frames, keypoints, strict=True):
            box = keypoint_box(tracked[:, :2], tracked[:, 2])
            if box is None:
                continue  # nobody tracked here: a person found would be the tracked one
            probed += 1
            masked = frame.copy()
            height, width = frame.shape[:2]
            pad_x, pad_y = 0.25 * (box[2] - box[0]) + 8, 0.15 * (box[3] - box[1]) + 8
            x0, x1 = int(max(box[0] - pad_x, 0)), int(min(box[2] + pad_x, width))
            y0, y1 = int(max(box[1] - pad_y, 0)), int(min(box[3] + pad_y, height))
            masked[y0:y1, x0:x1] = 127
            with _native_stderr_silenced():
                result = self._probe.process(np.ascontiguousarray(masked))
            if result.pose_landmarks is None:
                continue
            found, score = _landmarks_to_coco(result.pose_landmarks.landmark, self._coco, width, height)
            seen = score[0] > 0.5
            if seen.sum() < 6:
                continue
            x, y = found[0, :, 0], found[0, :, 1]
            in_mask = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
            other = keypoint_box(found[0], score[0])
            # A pose made up from what is left of the masked person (a barbell, a shadow) sits on the mask.
            if (seen & ~in_mask).sum() >= 0.8 * seen.sum() and other is not None and box_iou(box, other) < 0.2:
                hits += 1
        return hits >= min(2, probed) and hits > 0

    def reset(self) -> None:
        """Drop the tracked person and the landmark filters: the next frame starts a new video."""
        with _native_stderr_silenced():
            self._pose.reset()
            self._wait_for_graph()
        self._fresh = True

    def close(self) -> None:
        """Release the MediaPipe graphs."""
        for graph in (self._pose, self._probe):
            if graph is not None:
                graph.close()
        self._pose = self._probe = None


def _has(message: Any, name: str) -> bool:
    has_field = getattr(message, "HasField", None)
    try:
        return bool(has_field(name)) if has_field is not None else hasattr(message, name)
    except ValueError:
        return False


def _landmarks_to_coco(landmarks: Any, coco: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """BlazePose landmarks -> ``([1, 17, 2] pixels, [1, 17] scores)``; joints outside the image score 0."""
    values = np.array(
        [
            (lm.x, lm.y, lm.visibility, lm.presence if _has(lm, "presence") else 1.0)
            for lm in (landmarks[int(i)] for i in coco)
        ],
        dtype=np.float32,
    )
    inside = (values[:, 0] >= 0.0) & (values[:, 0] <= 1.0) & (values[:, 1] >= 0.0) & (values[:, 1] <= 1.0)
    keypoint = values[None, :, :2] * np.array([width, height], dtype=np.float32)
    score = np.where(inside, values[:, 2] * values[:, 3], 0.0)[None].astype(np.float32)
    return keypoint, score
