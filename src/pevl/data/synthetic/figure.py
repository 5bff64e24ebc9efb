"""An articulated human figure: body proportions, joint angles and forward kinematics to COCO-17 joints.

The figure lives in a *body frame* with axes (front, up, left): ``up`` runs from the hips to the head, ``front``
is where the chest faces and ``left`` the person's left (``left = up x front``). The hip centre is the origin and
one unit is roughly the body height. Limbs move in the sagittal (front-up) plane, arms may also spread sideways.
:func:`orient` turns body-frame joints into the world (x right, y up, z towards the camera) after a twist about
the body's long axis and a somersault about the camera axis, which is all the synthetic dives need.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pevl.data.pose.layouts import COCO17_JOINTS

J = {name: i for i, name in enumerate(COCO17_JOINTS)}
"""COCO-17 joint name -> index."""

BODY_JOINTS = np.arange(5, 17)
"""Shoulders to ankles: the joints whose mean serves as the centre of mass (the somersault pivot)."""


@dataclass(frozen=True)
class BodyShape:
    """Proportions of one figure, in body heights.

    Attributes:
        hip_half: Half the distance between the hips.
        shoulder_half: Half the distance between the shoulders.
        torso: Hip centre to shoulder centre.
        head_up: Hip centre to the centre of the head.
        upper_arm: Shoulder to elbow.
        forearm: Elbow to wrist.
        thigh: Hip to knee.
        shank: Knee to ankle.
        head_radius: Radius of the drawn head (covers the eyes, ears and nose).
        limb_radius: Half the thickness of arms and legs.
        torso_radius: Half the thickness of the trunk.
    """

    hip_half: float = 0.085
    shoulder_half: float = 0.115
    torso: float = 0.29
    head_up: float = 0.39
    upper_arm: float = 0.17
    forearm: float = 0.16
    thigh: float = 0.245
    shank: float = 0.245
    head_radius: float = 0.085
    limb_radius: float = 0.035
    torso_radius: float = 0.06

    @classmethod
    def sample(cls, rng: np.random.Generator) -> BodyShape:
        """A figure with every proportion jittered by up to about 10 percent."""
        base = cls()

        def jitter(value: float, amount: float = 0.08) -> float:
            return float(value * rng.uniform(1.0 - amount, 1.0 + amount))

        return cls(
            hip_half=jitter(base.hip_half),
            shoulder_half=jitter(base.shoulder_half),
            torso=jitter(base.torso, 0.05),
            head_up=base.head_up,
            upper_arm=jitter(base.upper_arm),
            forearm=jitter(base.forearm),
            thigh=jitter(base.thigh),
            shank=jitter(base.shank),
            head_radius=base.head_radius,
            limb_radius=jitter(base.limb_radius, 0.15),
            torso_radius=jitter(base.torso_radius, 0.15),
        )


@dataclass
class JointAngles:
    """Per-frame joint angles in degrees, each an array ``[T]`` (both sides share them).

    Attributes:
        shoulder: Arm elevation in the sagittal plane: 0 hangs down, 90 points forward, 180 overhead,
            negative swings back.
        elbow: Elbow flexion (the forearm turns further forward).
        hip: Hip flexion: 0 straight, 90 thigh horizontal forward, 130 a pike.
        knee: Knee flexion (the shank turns back relative to the thigh).
        abduction: Sideways spread of the arms away from the body.
    """

    shoulder: np.ndarray
    elbow: np.ndarray
    hip: np.ndarray
    knee: np.ndarray
    abduction: np.ndarray

    @classmethod
    def constant(cls, frames: int, **values: float) -> JointAngles:
        """Angles held for ``frames`` frames (missing ones are 0)."""
        return cls(**{name: np.full(frames, float(values.get(name, 0.0))) for name in _ANGLE_NAMES})

    @staticmethod
    def blend(a: JointAngles, b: JointAngles, weight: np.ndarray) -> JointAngles:
        """``a * (1 - weight) + b * weight`` per frame."""
        w = np.asarray(weight, dtype=np.float64)
        return JointAngles(**{n: getattr(a, n) * (1.0 - w) + getattr(b, n) * w for n in _ANGLE_NAMES})


_ANGLE_NAMES = ("shoulder", "elbow", "hip", "knee", "abduction")


def _sagittal(angle_deg: np.ndarray) -> np.ndarray:
    """Unit vectors ``[T, 3]`` (front, up, left) for a limb at ``angle`` (0 = hanging down)."""
    a = np.radians(angle_deg)
    return np.stack([np.sin(a), -np.cos(a), np.zeros_like(a)], axis=-1)


def body_joints(shape: BodyShape, angles: JointAngles) -> np.ndarray:
    """Forward kinematics in the body frame.

    Args:
        shape: Proportions.
        angles: Joint angles ``[T]`` each.

    Returns:
        ``[T, 17, 3]`` joints in COCO-17 order, body frame (front, up, left), hip centre at the origin.
    """
    frames = angles.shoulder.shape[0]
    out = np.zeros((frames, 17, 3))

    def point(front: float, up: float, left: float) -> np.ndarray:
        return np.array([front, up, left], dtype=np.float64)

    head = point(0.0, shape.head_up, 0.0)
    out[:, J["nose"]] = head + point(0.055, -0.01, 0.0)
    out[:, J["left_eye"]] = head + point(0.035, 0.015, 0.03)
    out[:, J["right_eye"]] = head + point(0.035, 0.015, -0.03)
    out[:, J["left_ear"]] = head + point(-0.005, 0.0, 0.055)
    out[:, J["right_ear"]] = head + point(-0.005, 0.0, -0.055)
    abduction = np.radians(angles.abduction)[:, None]
    upper_dir = _sagittal(angles.shoulder)
    lower_dir = _sagittal(angles.shoulder + angles.elbow)
    thigh_dir = _sagittal(angles.hip)
    shank_dir = _sagittal(angles.hip - angles.knee)
    for side, sign in (("left", 1.0), ("right", -1.0)):
        outward = np.array([0.0, 0.0, sign])
        spread_upper = upper_dir * np.cos(abduction) + outward * np.sin(abduction)
        spread_lower = lower_dir * np.cos(abduction) + outward * np.sin(abduction)
        shoulder = point(0.0, shape.torso, sign * shape.shoulder_half)
        elbow = shoulder + shape.upper_arm * spread_upper
        out[:, J[f"{side}_shoulder"]] = shoulder
        out[:, J[f"{side}_elbow"]] = elbow
        out[:, J[f"{side}_wrist"]] = elbow + shape.forearm * spread_lower
        hip = point(0.0, 0.0, sign * shape.hip_half)
        knee = hip + shape.thigh * thigh_dir
        out[:, J[f"{side}_hip"]] = hip
        out[:, J[f"{side}_knee"]] = knee
        out[:, J[f"{side}_ankle"]] = knee + shape.shank * shank_dir
    return out


def head_centre(shape: BodyShape, frames: int) -> np.ndarray:
    """``[T, 3]`` body-frame centre of the head (the drawn disc)."""
    return np.tile(np.array([0.0, shape.head_up, 0.0]), (frames, 1))


def orient(points: np.ndarray, facing: int, twist: np.ndarray, somersault: np.ndarray) -> np.ndarray:
    """Body frame -> world directions: twist about the long axis, then somersault about the camera axis.

    Args:
        points: ``[T, N, 3]`` body-frame vectors (front, up, left).
        facing: +1 when the chest faces world +x before any rotation, -1 when it faces -x.
        twist: ``[T]`` radians about the body's long axis.
        somersault: ``[T]`` radians, counter-clockwise in the image (world z towards the camera).

    Returns:
        ``[T, N, 3]`` world vectors (x right, y up, z towards the camera).
    """
    front = np.array([float(facing), 0.0, 0.0])
    up = np.array([0.0, 1.0, 0.0])
    left = np.cross(up, front)
    cos_t, sin_t = np.cos(twist)[:, None], np.sin(twist)[:, None]
    front_t = front * cos_t + left * sin_t  # [T, 3]
    left_t = left * cos_t - front * sin_t
    world = (
        points[..., 0:1] * front_t[:, None, :]
        + points[..., 1:2] * up[None, None, :]
        + points[..., 2:3] * left_t[:, None, :]
    )
    cos_s, sin_s = np.cos(somersault)[:, None], np.sin(somersault)[:, None]
    x, y = world[..., 0].copy(), world[..., 1].copy()
    world[..., 0] = x * cos_s - y * sin_s
    world[..., 1] = x * sin_s + y * cos_s
    return world
