"""Filling short detection gaps: a person lost for a few frames is interpolated between the frames around.

Pose estimators lose a person for a few frames now and then (motion blur, a limb against the sky, a detector
hiccup), which leaves frames of score 0 in the middle of a skeleton. A gap of at most ``max_gap`` frames that
has a detected frame on both sides is filled joint by joint: coordinates are interpolated linearly between the
two frames, and the score is ``score_scale`` times the smaller of the two scores, so a filled joint always
scores lower than the detections it comes from. A joint missing on either side stays missing (score 0), and
so do gaps at the start or end of a video, or longer than ``max_gap``: nothing is extrapolated.

The per-video cache keeps the raw detections; filling is applied when poses are written to a skeleton pickle
and when cached poses are read for a model, so changing ``max_gap`` never needs a new extraction.
"""

from __future__ import annotations

import numpy as np

DEFAULT_MAX_GAP = 15
"""Longest gap filled by default, in frames (half a second at 30 fps)."""

DEFAULT_SCORE_SCALE = 0.5
"""Score of a filled joint, relative to the smaller score of the two detections it is interpolated from."""


def fill_gaps(
    keypoint: np.ndarray,
    score: np.ndarray,
    max_gap: int = DEFAULT_MAX_GAP,
    score_scale: float = DEFAULT_SCORE_SCALE,
) -> tuple[np.ndarray, np.ndarray]:
    """Interpolate each person over gaps of at most ``max_gap`` frames without a detection.

    Args:
        keypoint: ``[M, T, J, 2]`` pixels (0 where missing).
        score: ``[M, T, J]`` in [0, 1]; a frame where all of a person's joints score 0 is a gap frame.
        max_gap: Longest gap filled, in frames; 0 fills nothing.
        score_scale: Score of a filled joint relative to the smaller of its two end scores, in (0, 1].

    Returns:
        ``(keypoint, score)``: new float32 arrays; the input is not modified. Detected frames are unchanged.

    Raises:
        ValueError: ``max_gap`` is negative or ``score_scale`` is not in (0, 1].
    """
    if max_gap < 0:
        raise ValueError(f"max_gap must be at least 0, got {max_gap}")
    if not 0.0 < score_scale <= 1.0:
        raise ValueError(f"score_scale must be in (0, 1], got {score_scale}")
    keypoint = np.array(keypoint, dtype=np.float32)
    score = np.array(score, dtype=np.float32)
    if max_gap == 0 or keypoint.shape[1] < 3:
        return keypoint, score
    detected = (score > 0).any(axis=-1)  # [M, T]
    for m in range(keypoint.shape[0]):
        frames = np.flatnonzero(detected[m])
        if len(frames) < 2:
            continue
        gap = np.diff(frames) - 1
        for k in np.flatnonzero((gap >= 1) & (gap <= max_gap)):
            a, b = int(frames[k]), int(frames[k + 1])
            both = (score[m, a] > 0) & (score[m, b] > 0)  # [J]
            if not both.any():
                continue
            weight = (np.arange(1, b - a, dtype=np.float32) / (b - a))[:, None, None]  # [gap, 1, 1]
            between = keypoint[m, a] + weight * (keypoint[m, b] - keypoint[m, a])
            keypoint[m, a + 1 : b] = np.where(both[None, :, None], between, 0.0)
            filled = score_scale * np.minimum(score[m, a], score[m, b])
            score[m, a + 1 : b] = np.where(both, filled, 0.0)[None]
    return keypoint, score


def found_rate(score: np.ndarray) -> float:
    """Fraction of frames where at least one person has a joint with a positive score (``score`` ``[M, T, J]``)."""
    if score.shape[1] == 0:
        return 0.0
    return float((score > 0).any(axis=(0, 2)).mean())
