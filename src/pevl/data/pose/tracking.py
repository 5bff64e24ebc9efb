"""Person tracking across frames and selection of the main actor(s).

Multi-person backends return an unordered list of persons per frame. Persons are linked into tracks by the
overlap (IoU) of their keypoint boxes with each track's last box, greedily, best overlap first; a track that
has not been matched for ``max_gap`` frames is closed. The main actor is the track with the largest
*presence*: the sum over its frames of mean joint score x box size, so a large, confidently detected person
seen for most of the video beats a small bystander or a brief false detection.
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
    presence: float = 0.0


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
        Tracks sorted by presence (main actor first), each a dict frame index -> detection index.
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
            size = float(np.sqrt(max(box[2] - box[0], 1.0) * max(box[3] - box[1], 1.0)))
            track.presence += float(score[i].mean()) * size
    tracks.sort(key=lambda tr: tr.presence, reverse=True)
    return [tr.frames for tr in tracks]


def select_main_tracks(
    detections: Sequence[tuple[np.ndarray, np.ndarray]], max_persons: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Stack the ``max_persons`` main person tracks of a video into fixed arrays.

    When no frame holds more than one person (single-person backends such as BlazePose, which track the
    person themselves), all detections form one track. Otherwise :func:`track_persons` links them and the
    tracks with the largest presence are kept, main actor first.

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
        tracks = track_persons(detections)[:max_persons] or [{}]
    keypoint = np.zeros((len(tracks), num_frames, num_joints, 2), dtype=np.float32)
    score = np.zeros((len(tracks), num_frames, num_joints), dtype=np.float32)
    for m, frames in enumerate(tracks):
        for t, i in frames.items():
            keypoint[m, t] = detections[t][0][i]
            score[m, t] = detections[t][1][i]
    return keypoint, score
