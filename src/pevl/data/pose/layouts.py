"""Joint layouts and their mapping to the canonical COCO-17 order.

PeVL works on COCO-17 keypoints ``[T, 17, 3]`` (x, y, score). Other layouts are converted with a table of
source-joint indices; joints a layout does not have get score 0 (and coordinates 0).

The table (:data:`LAYOUTS`) holds:

- ``coco17``: COCO keypoints (HRNet, RTMPose, ViTPose, the PYSKL pickles).
- ``jhmdb15``: the JHMDB "puppet" joints (neck, belly, face, shoulders, hips, elbows, knees, wrists, ankles).
  JHMDB has no eyes or ears: its ``face`` joint becomes COCO's ``nose`` and the eyes and ears stay at score 0.
  ``neck`` and ``belly`` have no COCO counterpart and are dropped.
- ``penn13``: Penn Action (head, then left/right shoulders, elbows, wrists, hips, knees, ankles, in the order of
  the dataset's readme). ``head`` becomes ``nose``; eyes and ears stay at score 0.
- ``openpose18``: OpenPose's COCO-18 body model (COCO-17 plus a neck, in a different order).
- ``mediapipe33``: MediaPipe / BlazePose landmarks (the 17 COCO joints are a subset).
- ``ntu25``: Kinect v2 joints of NTU RGB+D (2D colour coordinates); ``head`` becomes ``nose``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pevl.errors import PevlError

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

COCO17_PARENT: tuple[int, ...] = (0, 0, 0, 1, 2, 0, 0, 5, 6, 7, 8, 5, 6, 11, 12, 13, 14)
"""A tree over COCO-17 rooted at the nose (eyes, then ears; shoulders, elbows, wrists; shoulder -> hip, knees, ankles):
joint ``i``'s bone runs from ``COCO17_PARENT[i]`` to ``i``."""

_LIMBS = tuple(
    f"{side}_{part}" for part in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle") for side in ("left", "right")
)


@dataclass(frozen=True)
class Layout:
    """A joint layout and how it maps onto COCO-17.

    Attributes:
        name: Key in :data:`LAYOUTS`.
        joints: Joint names in the layout's own order.
        coco_names: For joints whose name differs from COCO's, the COCO joint they stand for
            (e.g. ``{"face": "nose"}``).
        description: Where the layout comes from.
        coco_index: For each COCO-17 joint, the index of the source joint, or -1 when the layout lacks it.
    """

    name: str
    joints: tuple[str, ...]
    coco_names: dict[str, str] = field(default_factory=dict)
    description: str = ""
    coco_index: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        renamed = {self.coco_names.get(joint, joint): i for i, joint in enumerate(self.joints)}
        unknown = set(self.coco_names.values()) - set(COCO17_JOINTS)
        if unknown:
            raise ValueError(f"layout {self.name}: {sorted(unknown)} are not COCO-17 joints")
        object.__setattr__(self, "coco_index", tuple(renamed.get(joint, -1) for joint in COCO17_JOINTS))

    @property
    def num_joints(self) -> int:
        """Number of joints in the layout."""
        return len(self.joints)

    @property
    def missing(self) -> tuple[str, ...]:
        """COCO-17 joints this layout does not have (they get score 0)."""
        return tuple(joint for joint, src in zip(COCO17_JOINTS, self.coco_index, strict=True) if src < 0)


LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (
        Layout("coco17", COCO17_JOINTS, description="COCO keypoints"),
        Layout(
            "jhmdb15",
            (
                "neck",
                "belly",
                "face",
                "right_shoulder",
                "left_shoulder",
                "right_hip",
                "left_hip",
                "right_elbow",
                "left_elbow",
                "right_knee",
                "left_knee",
                "right_wrist",
                "left_wrist",
                "right_ankle",
                "left_ankle",
            ),  # fmt: skip
            {"face": "nose"},
            "JHMDB puppet joints; face -> nose, no eyes/ears (score 0), neck and belly dropped",
        ),
        Layout(
            "penn13",
            ("head",) + _LIMBS,
            {"head": "nose"},
            "Penn Action joints (readme order); head -> nose, no eyes/ears (score 0)",
        ),
        Layout(
            "openpose18",
            (
                "nose",
                "neck",
                "right_shoulder",
                "right_elbow",
                "right_wrist",
                "left_shoulder",
                "left_elbow",
                "left_wrist",
                "right_hip",
                "right_knee",
                "right_ankle",
                "left_hip",
                "left_knee",
                "left_ankle",
                "right_eye",
                "left_eye",
                "right_ear",
                "left_ear",
            ),  # fmt: skip
            description="OpenPose COCO-18 body model; neck dropped",
        ),
        Layout(
            "mediapipe33",
            (
                "nose",
                "left_eye_inner",
                "left_eye",
                "left_eye_outer",
                "right_eye_inner",
                "right_eye",
                "right_eye_outer",
                "left_ear",
                "right_ear",
                "mouth_left",
                "mouth_right",
                "left_shoulder",
                "right_shoulder",
                "left_elbow",
                "right_elbow",
                "left_wrist",
                "right_wrist",
                "left_pinky",
                "right_pinky",
                "left_index",
                "right_index",
                "left_thumb",
                "right_thumb",
                "left_hip",
                "right_hip",
                "left_knee",
                "right_knee",
                "left_ankle",
                "right_ankle",
                "left_heel",
                "right_heel",
                "left_foot_index",
                "right_foot_index",
            ),  # fmt: skip
            description="MediaPipe Pose (BlazePose) landmarks",
        ),
        Layout(
            "ntu25",
            (
                "spine_base",
                "spine_mid",
                "neck",
                "head",
                "left_shoulder",
                "left_elbow",
                "left_wrist",
                "left_hand",
                "right_shoulder",
                "right_elbow",
                "right_wrist",
                "right_hand",
                "left_hip",
                "left_knee",
                "left_ankle",
                "left_foot",
                "right_hip",
                "right_knee",
                "right_ankle",
                "right_foot",
                "spine_shoulder",
                "left_hand_tip",
                "left_thumb",
                "right_hand_tip",
                "right_thumb",
            ),  # fmt: skip
            {"head": "nose"},
            "Kinect v2 joints of NTU RGB+D; head -> nose, no eyes/ears (score 0)",
        ),
    )
}
"""Known joint layouts by name."""


def get_layout(name: str) -> Layout:
    """Look up a layout by name.

    Args:
        name: A key of :data:`LAYOUTS`, e.g. ``"jhmdb15"``.

    Returns:
        The layout.

    Raises:
        PevlError: For an unknown name (the message lists the known ones).
    """
    try:
        return LAYOUTS[name]
    except KeyError:
        raise PevlError(f"unknown joint layout {name!r} (known: {', '.join(LAYOUTS)})") from None


def to_coco17(keypoint: np.ndarray, score: np.ndarray | None, layout: str) -> tuple[np.ndarray, np.ndarray]:
    """Convert keypoints of any known layout to the COCO-17 order.

    Args:
        keypoint: ``[..., J, C]`` coordinates in the layout's joint order (``C`` is usually 2).
        score: ``[..., J]`` confidences, or ``None`` when every given joint counts as seen (score 1).
        layout: Name of the source layout in :data:`LAYOUTS`.

    Returns:
        ``(keypoint [..., 17, C], score [..., 17])`` as float32; joints the layout lacks have coordinates 0 and
        score 0.

    Raises:
        PevlError: For an unknown layout or a joint count that does not match it.
    """
    spec = get_layout(layout)
    keypoint = np.asarray(keypoint)
    if keypoint.ndim < 2 or keypoint.shape[-2] != spec.num_joints:
        raise PevlError(
            f"keypoints of shape {tuple(keypoint.shape)} do not match layout {layout!r} "
            f"({spec.num_joints} joints, expected [..., {spec.num_joints}, C])"
        )
    if score is None:
        score = np.ones(keypoint.shape[:-1], dtype=np.float32)
    score = np.asarray(score)
    if score.shape != keypoint.shape[:-1]:
        raise PevlError(f"scores of shape {tuple(score.shape)} do not match keypoints {tuple(keypoint.shape)}")
    index = np.asarray(spec.coco_index)
    present = index >= 0
    safe = np.where(present, index, 0)
    out_kp = np.take(keypoint, safe, axis=-2).astype(np.float32)
    out_score = np.take(score, safe, axis=-1).astype(np.float32)
    out_kp[..., ~present, :] = 0.0
    out_score[..., ~present] = 0.0
    return out_kp, out_score
