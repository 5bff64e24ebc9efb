"""Joint layouts and their mapping to the canonical COCO-17 order.

PeVL works on COCO-17 keypoints ``[T, 17, 3]`` (x, y, score). Other layouts are converted with a table of
source-joint indices; joints a layout does not have get score 0.
"""

from __future__ import annotations

COCO17_JOINTS: tuple[str, ...] = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
"""COCO-17 joint names in order; "left" is the person's left."""

COCO17_FLIP_INDEX: tuple[int, ...] = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)
"""For a horizontally mirrored image, joint ``i`` becomes joint ``COCO17_FLIP_INDEX[i]``."""

COCO17_BONES: tuple[tuple[int, int], ...] = (
    (0, 1), (0, 2), (1, 3), (2, 4), (5, 6), (5, 7), (7, 9), (6, 8), (8, 10),
    (5, 11), (6, 12), (11, 12), (11, 13), (13, 15), (12, 14), (14, 16),
)  # fmt: skip
"""Pairs of joint indices drawn as limbs."""
