"""Person tracking across frames and selection of the main actor(s).

Multi-person backends return an unordered list of persons per frame. Persons are linked into tracks by the
overlap (IoU) of their keypoint boxes with each track's last box, greedily, best overlap first; a track that
has not been matched for ``max_gap`` frames is closed.

The main actor is chosen in one place, :func:`person_presence` / :func:`main_person`, for every source of
poses (tracks of an extractor, persons of a PYSKL pickle, the cache): the person with the largest *presence*,
the sum over frames of mean joint score x keypoint-box size, so a large, confidently detected person seen for
most of the video beats a small bystander or a brief false detection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

# A joint counts towards a person's box only above this score.
_BOX_SCORE_THRESHOLD = 0.05


@dataclass
class _Track:
    frames: dict[int, int] = field(default_factory=dict)  # frame index -> detection index in that frame
    last_box: np.ndarray | None = None
    last_frame: int = -1


def keypoint_box(keypoint: np.ndarray, score: np.ndarray) -> np.ndarray | None:
    """Bounding box ``(x0, y0, x1, y1)`` of the joints with a usable score, or ``None`` if there are none.

    Args:
        keypoint: ``[J, 2]`` pixels.
        score: ``[J]``.
    """
    valid = score > _BOX_SCORE_THRESHOLD
    if not valid.any():
        return None
    points = keypoint[valid]
    return np.concatenate([points.min(axis=0), points.max(axis=0)]).astype(np.float64)


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two ``(x0, y0, x1, y1)`` boxes (0 for degenerate boxes)."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def track_persons(
    detections: Sequence[tuple[np.ndarray, np.ndarray]], iou_threshold: float = 0.1, max_gap: int = 15
) -> list[dict[int, int]]:
    """Link per-frame detections into tracks.

    Args:
        detections: Per frame, ``(keypoint [N, J, 2], score [N, J])``.
        iou_threshold: Smallest box IoU that continues a track.
        max_gap: Frames a track may go unmatched before it is closed.

    Returns:
        Tracks in the order they started, each a dict frame index -> detection index.
    """
    tracks: list[_Track] = []
    for t, (keypoint, score) in enumerate(detections):
        boxes = [keypoint_box(keypoint[i], score[i]) for i in range(len(score))]
        candidates = [i for i, box in enumerate(boxes) if box is not None]
        active = [k for k, tr in enumerate(tracks) if t - tr.last_frame <= max_gap]
        pairs = sorted(
            ((box_iou(tracks[k].last_box, boxes[i]), k, i) for k in active for i in candidates),  # type: ignore[arg-type]
            reverse=True,
        )
        used_tracks: set[int] = set()
        used_dets: set[int] = set()
        assignment: list[tuple[int, int]] = []
        for iou, k, i in pairs:
            if iou < iou_threshold:
                break
            if k in used_tracks or i in used_dets:
                continue
            used_tracks.add(k)
            used_dets.add(i)
            assignment.append((k, i))
        for i in candidates:
            if i not in used_dets:
                tracks.append(_Track())
                assignment.append((len(tracks) - 1, i))
        for k, i in assignment:
            box = boxes[i]
            assert box is not None
            track = tracks[k]
            track.frames[t] = i
            track.last_box = box
            track.last_frame = t
    return [tr.frames for tr in tracks]


def person_presence(keypoint: np.ndarray, score: np.ndarray) -> np.ndarray:
    """How much each person is "there" in a video: the main-actor criterion.

    Per person, the sum over frames of the mean joint score times the size (square root of the area, at least
    1 pixel a side) of the box around the joints scored above 0.05.

    Args:
        keypoint: ``[M, T, J, 2]`` pixels.
        score: ``[M, T, J]``.

    Returns:
        ``[M]`` float64, larger for the main actor.
    """
    keypoint = np.asarray(keypoint, dtype=np.float64)
    score = np.asarray(score, dtype=np.float64)
    if keypoint.shape[0] == 0:
        return np.zeros(0)
    valid = score > _BOX_SCORE_THRESHOLD
    x, y = keypoint[..., 0], keypoint[..., 1]
    big, small = np.inf, -np.inf
    width = np.where(valid, x, small).max(axis=-1) - np.where(valid, x, big).min(axis=-1)
    height = np.where(valid, y, small).max(axis=-1) - np.where(valid, y, big).min(axis=-1)
    seen = valid.any(axis=-1)
    size = np.where(seen, np.sqrt(np.maximum(np.nan_to_num(width), 1.0) * np.maximum(np.nan_to_num(height), 1.0)), 0)
    return (score.mean(axis=-1) * size).sum(axis=-1)


def rank_persons(keypoint: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Person indices, main actor first (by :func:`person_presence`; ties keep the original order)."""
    return np.argsort(-person_presence(keypoint, score), kind="stable")


def main_person(keypoint: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The main actor of a multi-person skeleton (see :func:`person_presence`).

    Args:
        keypoint: ``[M, T, J, 2]``.
        score: ``[M, T, J]``.

    Returns:
        ``(keypoint [T, J, 2], score [T, J])`` float32 of that person (zeros with score 0 when ``M == 0``).
    """
    keypoint = np.asarray(keypoint, dtype=np.float32)
    score = np.asarray(score, dtype=np.float32)
    if keypoint.shape[0] == 0:
        return np.zeros(keypoint.shape[1:], np.float32), np.zeros(score.shape[1:], np.float32)
    best = int(rank_persons(keypoint, score)[0]) if keypoint.shape[0] > 1 else 0
    return keypoint[best], score[best]


def select_main_tracks(
    detections: Sequence[tuple[np.ndarray, np.ndarray]], max_persons: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Stack the ``max_persons`` main person tracks of a video into fixed arrays.

    When no frame holds more than one person (single-person backends such as BlazePose, which track the
    person themselves), all detections form one track. Otherwise :func:`track_persons` links them and the
    tracks with the largest :func:`person_presence` are kept, main actor first.

    Args:
        detections: Per frame, ``(keypoint [N, J, 2], score [N, J])`` with scores in [0, 1].
        max_persons: Most tracks to keep.

    Returns:
        ``(keypoint [M, T, J, 2], score [M, T, J])`` float32, ``1 <= M <= max_persons``; frames where a
        track has no detection have score 0 and coordinates 0.
    """
    num_frames = len(detections)
    num_joints = next((kp.shape[1] for kp, _ in detections if kp.ndim == 3 and kp.shape[1]), 17)
    if all(len(score) <= 1 for _, score in detections):
        tracks = [{t: 0 for t, (_, score) in enumerate(detections) if len(score) == 1}]
    else:
        tracks = track_persons(detections) or [{}]
        # Rank each track on its own detections (frames without one add nothing), so that many short tracks
        # never need full-length arrays.
        presence = [_track_presence(detections, frames) for frames in tracks]
        tracks = [tracks[k] for k in np.argsort(-np.asarray(presence), kind="stable")[:max_persons]]
    keypoint = np.zeros((len(tracks), num_frames, num_joints, 2), dtype=np.float32)
    score = np.zeros((len(tracks), num_frames, num_joints), dtype=np.float32)
    for m, frames in enumerate(tracks):
        for t, i in frames.items():
            keypoint[m, t] = detections[t][0][i]
            score[m, t] = detections[t][1][i]
    return keypoint, score


def _track_presence(detections: Sequence[tuple[np.ndarray, np.ndarray]], frames: dict[int, int]) -> float:
    if not frames:
        return 0.0
    keypoint = np.stack([detections[t][0][i] for t, i in frames.items()])[None]
    score = np.stack([detections[t][1][i] for t, i in frames.items()])[None]
    return float(person_presence(keypoint, score)[0])
