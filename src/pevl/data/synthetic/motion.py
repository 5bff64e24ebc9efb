"""Compositional dives: the class factors, the class list and the motion of one clip.

A class is a combination of four factors, as in Diving48's labels: take-off (forward, back, reverse, inward),
number of somersaults, number of twists and flight position (tucked, piked, straight). :func:`class_factors`
walks the factor grid so that consecutive classes differ in exactly one factor, every factor gets varied, and
appearance alone cannot tell classes apart: counting rotations, their direction and the body shape during the
flight is needed. :func:`simulate` produces one clip's joint trajectories (world units, y up): standing on the
board, the hurdle and take-off, the flight along a parabola with the somersault, twist and position, the entry.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass

import numpy as np

from pevl.data.synthetic.figure import BODY_JOINTS, BodyShape, JointAngles, body_joints, head_centre, orient

TAKEOFFS: tuple[str, ...] = ("forward", "back", "reverse", "inward")
"""Take-off groups: facing the water (forward, reverse) or the board (back, inward); forward and inward rotate
chest-first, back and reverse back-first."""
SOMERSAULTS: tuple[float, ...] = (1.0, 1.5, 2.0, 2.5)
"""Somersault counts (x.5 ends head-down, whole numbers feet-down)."""
TWISTS: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5)
"""Twist counts (turns about the body's long axis)."""
POSITIONS: tuple[str, ...] = ("tucked", "piked", "straight")
"""Flight positions."""

_FACES_WATER = {"forward": True, "reverse": True, "back": False, "inward": False}
_CHEST_FIRST = {"forward": True, "inward": True, "back": False, "reverse": False}


@dataclass(frozen=True)
class Factors:
    """The four factors of a synthetic class."""

    takeoff: str
    somersaults: float
    twists: float
    position: str

    @property
    def text(self) -> str:
        """Label text, e.g. ``"forward takeoff, 1.5 somersaults, 0.5 twist, piked"``."""
        som = f"{self.somersaults:g} somersault{'s' if self.somersaults > 1 else ''}"
        twist = "no twist" if self.twists == 0 else f"{self.twists:g} twist{'s' if self.twists > 1 else ''}"
        return f"{self.takeoff} takeoff, {som}, {twist}, {self.position}"

    def as_dict(self) -> dict:
        """Plain dict (for ``meta.json``)."""
        return asdict(self)


_LEVELS = (TAKEOFFS, SOMERSAULTS, TWISTS, POSITIONS)
MAX_CLASSES = math.prod(len(levels) for levels in _LEVELS)
"""Number of distinct factor combinations."""


def _replace(values: tuple, factor: int, level: object) -> tuple:
    return values[:factor] + (level,) + values[factor + 1 :]


def class_factors(num_classes: int) -> list[Factors]:
    """Choose ``num_classes`` factor combinations, each differing from the previous one in a single factor.

    The walk starts at (forward, 1, 0, tucked) and changes factor ``k mod 4`` at step ``k`` to its next unused
    level, so every factor varies early on; when a step would only revisit classes it tries the other factors,
    then continues from an earlier class. Deterministic.

    Args:
        num_classes: 2 to :data:`MAX_CLASSES`.

    Returns:
        The factors of each class, in label order.
    """
    if not 2 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"num_classes must be between 2 and {MAX_CLASSES}, got {num_classes}")
    start = tuple(levels[0] for levels in _LEVELS)
    chosen: list[tuple] = [start]
    seen = {start}
    step = 0
    while len(chosen) < num_classes:
        found = None
        for base in reversed(chosen):
            for offset in range(len(_LEVELS)):
                factor = (step + offset) % len(_LEVELS)
                levels = _LEVELS[factor]
                current = levels.index(base[factor])
                for shift in range(1, len(levels)):
                    candidate = _replace(base, factor, levels[(current + shift) % len(levels)])
                    if candidate not in seen:
                        found = candidate
                        break
                if found:
                    break
            if found:
                break
        assert found is not None  # the grid is connected, so some class always has an unused neighbour
        chosen.append(found)
        seen.add(found)
        step += 1
    return [Factors(*values) for values in chosen]


def all_factors() -> list[Factors]:
    """Every combination of the grid (grid order)."""
    return [Factors(*values) for values in itertools.product(*_LEVELS)]


@dataclass(frozen=True)
class ClipStyle:
    """Per-clip variation that does not change the class.

    Attributes:
        start: Clip time where the first frame falls (the clip may start a little early or late).
        span: Clip time covered by the whole clip (speed of the action).
        takeoff: Fraction of the clip time spent standing and taking off.
        flight: Fraction spent in the air before the entry.
        apex: Flight fraction at which the figure is highest.
        height: Height of the apex above the take-off, in body heights.
        travel: Horizontal distance covered in the flight, in body heights.
        direction: +1 when the dive travels to the right of the image, -1 to the left.
        twist_sign: Direction of the twist (+1 or -1).
        shape: Body proportions.
        asymmetry: Small per-clip offsets of the arm and leg angles (degrees).
    """

    start: float
    span: float
    takeoff: float
    flight: float
    apex: float
    height: float
    travel: float
    direction: int
    twist_sign: int
    shape: BodyShape
    asymmetry: tuple[float, float]

    @classmethod
    def sample(cls, rng: np.random.Generator) -> ClipStyle:
        """Draw a random style."""
        return cls(
            start=float(rng.uniform(-0.04, 0.04)),
            span=float(rng.uniform(0.92, 1.08)),
            takeoff=float(rng.uniform(0.16, 0.26)),
            flight=float(rng.uniform(0.56, 0.68)),
            apex=float(rng.uniform(0.27, 0.36)),
            height=float(rng.uniform(0.28, 0.42)),
            travel=float(rng.uniform(0.35, 0.65)),
            direction=int(rng.choice([-1, 1])),
            twist_sign=int(rng.choice([-1, 1])),
            shape=BodyShape.sample(rng),
            asymmetry=(float(rng.uniform(-8, 8)), float(rng.uniform(-6, 6))),
        )


@dataclass
class Motion:
    """World-space motion of one clip (x right, y up, z towards the camera; one unit = one body height).

    Attributes:
        joints: ``[T, 17, 3]`` COCO-17 joints.
        head: ``[T, 3]`` centre of the drawn head.
        board: ``(x_tip, y_top)`` of the springboard.
        water: Height of the water surface.
    """

    joints: np.ndarray
    head: np.ndarray
    board: tuple[float, float]
    water: float


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _ramp(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return _smoothstep((x - lo) / (hi - lo))


_SHAPES = {
    "tucked": dict(shoulder=40.0, elbow=100.0, hip=125.0, knee=140.0, abduction=8.0),
    "piked": dict(shoulder=115.0, elbow=5.0, hip=130.0, knee=0.0, abduction=5.0),
    "straight": dict(shoulder=8.0, elbow=10.0, hip=-6.0, knee=0.0, abduction=4.0),
}


def simulate(factors: Factors, style: ClipStyle, frames: int) -> Motion:
    """The joint trajectories of one dive.

    Args:
        factors: The class.
        style: Per-clip variation.
        frames: Number of frames ``T``.

    Returns:
        The :class:`Motion` (world units; the board tip is at x = 0 and its top at y = 0).
    """
    s = style.start + np.linspace(0.0, 1.0, frames) * style.span  # clip time of every frame
    t_off, t_flight = style.takeoff, style.flight
    p = np.clip(s / t_off, 0.0, 1.0)  # take-off progress
    q = (s - t_off) / t_flight  # flight progress (may exceed 1 after the entry)
    in_air = s > t_off

    chest_first = _CHEST_FIRST[factors.takeoff]
    facing = style.direction * (1 if _FACES_WATER[factors.takeoff] else -1)
    # Chest-first rotation of a figure facing +x is clockwise (negative angles, y up).
    spin = -facing if chest_first else facing
    lean = math.radians(15.0)
    total = 2.0 * math.pi * factors.somersaults
    rot_flight = spin * (lean + (total - lean) * (0.5 * np.clip(q, 0, 1) + 0.5 * _smoothstep(q)))
    somersault = np.where(in_air, rot_flight, spin * lean * p**2)
    twist = style.twist_sign * 2.0 * math.pi * factors.twists * _ramp(q, 0.18, 0.72)

    # Joint angles: stand -> crouch (arms back) -> extend with arms overhead; flight: open -> position -> entry.
    knee_bend = 70.0 * np.sin(np.pi * p)
    arm = np.where(p < 0.4, -45.0 * (p / 0.4), -45.0 + 220.0 * _smoothstep((p - 0.4) / 0.6))
    ground = JointAngles(
        shoulder=arm, elbow=10.0 * (1 - p), hip=0.5 * knee_bend, knee=knee_bend, abduction=np.full(frames, 5.0)
    )
    head_first = (factors.somersaults % 1.0) > 0.25
    opened = JointAngles.constant(frames, shoulder=175.0, abduction=5.0)
    entry = JointAngles.constant(frames, shoulder=180.0 if head_first else 5.0, abduction=3.0)
    shaped = JointAngles.constant(frames, **_SHAPES[factors.position])
    fold = _ramp(q, 0.06, 0.22) * (1.0 - _ramp(q, 0.74, 0.9))
    flight = JointAngles.blend(JointAngles.blend(opened, entry, _ramp(q, 0.7, 0.92)), shaped, fold)
    angles = JointAngles.blend(ground, flight, in_air.astype(np.float64))
    angles.shoulder = angles.shoulder + style.asymmetry[0]
    angles.hip = angles.hip + 0.3 * style.asymmetry[1]

    shape = style.shape
    body = body_joints(shape, angles)
    head = head_centre(shape, frames)[:, None, :]
    com_body = body[:, BODY_JOINTS].mean(axis=1, keepdims=True)
    rel = orient(np.concatenate([body, head], axis=1) - com_body, facing, twist, somersault)

    # Ground phase: feet on the board, standing a little back from its tip.
    feet_y = rel[:, [15, 16], 1].min(axis=1)
    stand_x = -style.direction * 0.12
    ground_com = np.stack([np.full(frames, stand_x), -feet_y, np.zeros(frames)], axis=-1)
    # Flight: the centre of mass leaves from where the take-off ended, along a parabola.
    end = int(np.searchsorted(s, t_off, side="right")) - 1
    start_com = ground_com[max(end, 0)].copy()
    if end < 0:  # the clip starts in the air: take-off position of a figure at the end of the hurdle
        start_com[1] = -feet_y[0]
    a = 2.0 * style.height / style.apex
    b = style.height / style.apex**2
    qc = np.clip(q, 0.0, 1.2)  # the entry: the fall slows down in the water
    flight_com = np.stack(
        [start_com[0] + style.direction * style.travel * qc, start_com[1] + a * qc - b * qc**2, np.zeros(frames)],
        axis=-1,
    )
    com = np.where(in_air[:, None], flight_com, ground_com)
    world = rel + com[:, None, :]
    water = float(start_com[1] + style.height * (2 * style.apex - 1) / style.apex**2 - 0.45)
    return Motion(joints=world[:, :17], head=world[:, 17], board=(0.0, 0.0), water=water)
