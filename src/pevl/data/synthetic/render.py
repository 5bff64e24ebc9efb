"""Rasterise a synthetic dive: camera, background and an anti-aliased articulated figure, numpy only.

Pixel convention (as for the keypoints): the centre of pixel ``(row i, column j)`` is at ``(x=j, y=i)``. Limbs are
capsules (thick line segments with round ends), the head a disc; every joint is a capsule end, so the pixel
nearest to a joint is always covered by the figure (limb radius >= 1 px). The camera follows the diver part of
the way, as broadcast footage does, and shakes a little; the background (wall gradient, clutter, springboard,
water) lives in world coordinates so it moves with the camera.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

from pevl.data.synthetic.figure import BodyShape, J
from pevl.data.synthetic.motion import Motion

_LIMBS = (
    # (joint a, joint b, radius key, colour key)
    ("left_shoulder", "left_elbow", "arm", "left"),
    ("left_elbow", "left_wrist", "arm", "left"),
    ("right_shoulder", "right_elbow", "arm", "right"),
    ("right_elbow", "right_wrist", "arm", "right"),
    ("left_hip", "left_knee", "leg", "left"),
    ("left_knee", "left_ankle", "leg", "left"),
    ("right_hip", "right_knee", "leg", "right"),
    ("right_knee", "right_ankle", "leg", "right"),
    ("left_shoulder", "right_shoulder", "arm", "torso"),
    ("left_hip", "right_hip", "leg", "torso"),
    ("left_shoulder", "left_hip", "arm", "torso"),
    ("right_shoulder", "right_hip", "arm", "torso"),
)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)), dtype=np.float32)


def _luma(rgb: np.ndarray) -> float:
    return float(0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])


@dataclass
class Scene:
    """Colours and background layout of one clip (world units, y up).

    Attributes:
        wall_top: Colour of the wall at the top of the scene.
        wall_bottom: Colour of the wall just above the water.
        water: Water colour.
        water_level: Height of the water surface.
        board: Springboard colour.
        direction: Side the dive travels to (+1 right); the board extends the other way.
        clutter: ``[N, 4]`` rectangles ``(x0, y0, x1, y1)`` hanging on the wall.
        clutter_colours: ``[N, 3]``.
        figure: Colour of the trunk; the limbs of the left side are lighter, of the right side darker.
        skin: Colour of the head.
    """

    wall_top: np.ndarray
    wall_bottom: np.ndarray
    water: np.ndarray
    water_level: float
    board: np.ndarray
    direction: int
    clutter: np.ndarray
    clutter_colours: np.ndarray
    figure: np.ndarray
    skin: np.ndarray

    @classmethod
    def sample(cls, rng: np.random.Generator, water_level: float, direction: int) -> Scene:
        """Random colours and clutter; the figure always contrasts with the wall."""
        hue = rng.random()
        wall_v = rng.uniform(0.3, 0.9)
        wall_top = _hsv(hue, rng.uniform(0.05, 0.45), wall_v)
        wall_bottom = _hsv(hue + rng.uniform(-0.1, 0.1), rng.uniform(0.05, 0.45), wall_v * rng.uniform(0.7, 1.1))
        count = int(rng.integers(3, 8))
        x0 = rng.uniform(-2.5, 2.0, count)
        y0 = rng.uniform(water_level, water_level + 3.5, count)
        clutter = np.stack([x0, y0, x0 + rng.uniform(0.1, 0.8, count), y0 + rng.uniform(0.05, 0.5, count)], axis=1)
        colours = np.stack([_hsv(rng.random(), rng.uniform(0.1, 0.6), rng.uniform(0.25, 0.95)) for _ in range(count)])
        wall_luma = 0.5 * (_luma(wall_top) + _luma(wall_bottom))
        figure_v = rng.uniform(0.12, 0.32) if wall_luma > 0.5 else rng.uniform(0.78, 1.0)
        return cls(
            wall_top=wall_top,
            wall_bottom=wall_bottom,
            water=_hsv(rng.uniform(0.5, 0.62), rng.uniform(0.4, 0.8), rng.uniform(0.35, 0.75)),
            water_level=water_level,
            board=_hsv(rng.random(), rng.uniform(0.0, 0.3), rng.uniform(0.5, 0.95)),
            direction=direction,
            clutter=clutter.astype(np.float32),
            clutter_colours=colours,
            figure=_hsv(rng.random(), rng.uniform(0.55, 0.95), figure_v),
            skin=_hsv(rng.uniform(0.02, 0.1), rng.uniform(0.3, 0.6), figure_v),
        )


@dataclass
class Camera:
    """Orthographic camera per frame: world ``(x, y)`` -> pixel ``(x', y')``.

    Attributes:
        centre: ``[T, 2]`` world point shown at the image centre.
        scale: Pixels per world unit (the body height in pixels).
        size: Image side in pixels.
    """

    centre: np.ndarray
    scale: float
    size: int

    def to_pixels(self, points: np.ndarray) -> np.ndarray:
        """``[T, N, >=2]`` world points -> ``[T, N, 2]`` pixel coordinates (x right, y down)."""
        half = (self.size - 1) / 2.0
        x = (points[..., 0] - self.centre[:, None, 0]) * self.scale + half
        y = half - (points[..., 1] - self.centre[:, None, 1]) * self.scale
        return np.stack([x, y], axis=-1)

    def world_of(self, t: int, coord: np.ndarray, axis: int) -> np.ndarray:
        """World x (``axis=0``) or y (``axis=1``) of pixel columns / rows ``coord`` in frame ``t``."""
        half = (self.size - 1) / 2.0
        if axis == 0:
            return self.centre[t, 0] + (coord - half) / self.scale
        return self.centre[t, 1] - (coord - half) / self.scale


def make_camera(motion: Motion, size: int, rng: np.random.Generator) -> Camera:
    """A camera that follows the diver partly and shakes, keeping the whole figure in view when it fits."""
    body_px = size * rng.uniform(0.3, 0.38)
    com = motion.joints[:, 5:, :2].mean(axis=1)
    mean = com.mean(axis=0)
    follow = np.array([rng.uniform(0.4, 0.7), rng.uniform(0.7, 0.9)])
    centre = mean + follow * (com - mean)
    shake = rng.normal(0.0, 0.5, size=centre.shape) / body_px  # about half a pixel
    centre = centre + shake
    camera = Camera(centre=centre, scale=float(body_px), size=size)
    # Shift so the figure's extent over the clip sits inside the frame, randomly within any slack.
    points = camera.to_pixels(np.concatenate([motion.joints, motion.head[:, None]], axis=1))
    margin = 0.12 * body_px + 1.5
    lo, hi = points.min(axis=(0, 1)) - margin, points.max(axis=(0, 1)) + margin
    slack = (size - 1) - (hi - lo)
    shift = np.where(slack > 0, -lo + rng.uniform(0.0, 1.0, 2) * np.maximum(slack, 0), -lo + slack / 2)
    camera.centre = camera.centre - np.array([shift[0], -shift[1]]) / body_px
    return camera


def _background(scene: Scene, camera: Camera, t: int) -> np.ndarray:
    size = camera.size
    coords = np.arange(size, dtype=np.float32)
    wy = camera.world_of(t, coords, 1)  # per row
    wx = camera.world_of(t, coords, 0)  # per column
    blend = np.clip((wy - scene.water_level) / 4.0, 0.0, 1.0)[:, None]
    rows = scene.wall_bottom * (1 - blend) + scene.wall_top * blend
    image = np.broadcast_to(rows[:, None, :], (size, size, 3)).copy()
    for (x0, y0, x1, y1), colour in zip(scene.clutter, scene.clutter_colours, strict=True):
        cols = (wx >= x0) & (wx <= x1)
        rws = (wy >= y0) & (wy <= y1)
        if cols.any() and rws.any():
            image[np.ix_(rws, cols)] = colour
    # Springboard: a slab whose tip is at x = 0, extending away from the dive, plus its support.
    side = -scene.direction
    board_cols = (wx * side >= 0.0) & (wx * side <= 3.0)
    board_rows = (wy <= 0.0) & (wy >= -0.05)
    image[np.ix_(board_rows, board_cols)] = scene.board
    support_cols = (wx * side >= 0.45) & (wx * side <= 0.6)
    support_rows = (wy < -0.05) & (wy >= scene.water_level)
    image[np.ix_(support_rows, support_cols)] = scene.board * 0.7
    under = wy < scene.water_level
    if under.any():
        ripple = 0.9 + 0.1 * np.sin((wy[under] - scene.water_level) * 40.0)[:, None]
        image[under] = (scene.water * ripple)[:, None, :]
    return image


def _capsule_coverage(xs: np.ndarray, ys: np.ndarray, a: np.ndarray, b: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage ``[P, h, w]`` of capsules from ``a[P, 2]`` to ``b[P, 2]`` with ``radius[P]``."""
    ab = b - a
    denom = np.maximum((ab**2).sum(axis=1), 1e-9)
    px = xs[None, None, :] - a[:, 0, None, None]
    py = ys[None, :, None] - a[:, 1, None, None]
    t = np.clip((px * ab[:, 0, None, None] + py * ab[:, 1, None, None]) / denom[:, None, None], 0.0, 1.0)
    dx = px - t * ab[:, 0, None, None]
    dy = py - t * ab[:, 1, None, None]
    dist = np.sqrt(dx * dx + dy * dy)
    return np.clip(radius[:, None, None] + 0.5 - dist, 0.0, 1.0)


@dataclass
class RenderedClip:
    """A rendered clip and its ground truth.

    Attributes:
        frames: ``[T, H, W, 3]`` uint8 RGB.
        masks: ``[T, H, W]`` float32 figure coverage in [0, 1].
        keypoint: ``[T, 17, 2]`` float32 pixel coordinates of the joints.
        score: ``[T, 17]`` float32: 1 for joints inside the frame, 0 outside.
    """

    frames: np.ndarray
    masks: np.ndarray
    keypoint: np.ndarray
    score: np.ndarray


def render_clip(motion: Motion, shape: BodyShape, size: int, rng: np.random.Generator) -> RenderedClip:
    """Render a dive.

    Args:
        motion: World-space joints of the clip.
        shape: Body proportions (for the limb thickness and head size).
        size: Image side in pixels (square frames).
        rng: Random generator for the camera and the scene.

    Returns:
        The :class:`RenderedClip`.
    """
    frames = motion.joints.shape[0]
    direction = 1 if motion.joints[-1, 5:, 0].mean() >= motion.joints[0, 5:, 0].mean() else -1
    scene = Scene.sample(rng, motion.water, direction)
    camera = make_camera(motion, size, rng)
    joints_px = camera.to_pixels(motion.joints).astype(np.float32)
    head_px = camera.to_pixels(motion.head[:, None])[:, 0]
    depth = motion.joints[..., 2]
    head_depth = motion.head[:, 2]

    limb_r = max(1.0, shape.limb_radius * camera.scale)
    radius_of = {"arm": limb_r, "leg": max(1.0, 1.15 * limb_r)}
    torso_r = max(1.2, shape.torso_radius * camera.scale)
    head_r = max(2.0, shape.head_radius * camera.scale)
    colour_of = {
        "torso": scene.figure,
        "left": np.clip(scene.figure * 0.7 + 0.3, 0, 1) if _luma(scene.figure) < 0.5 else scene.figure * 0.85,
        "right": scene.figure * 0.7 if _luma(scene.figure) >= 0.5 else np.clip(scene.figure * 0.85 + 0.1, 0, 1),
    }
    ia = np.array([J[a] for a, _, _, _ in _LIMBS])
    ib = np.array([J[b] for _, b, _, _ in _LIMBS])
    limb_radius = np.array([radius_of[r] for _, _, r, _ in _LIMBS], dtype=np.float32)
    limb_colour = np.stack([colour_of[c] for _, _, _, c in _LIMBS])
    shoulders, hips = [J["left_shoulder"], J["right_shoulder"]], [J["left_hip"], J["right_hip"]]

    images = np.empty((frames, size, size, 3), dtype=np.uint8)
    masks = np.zeros((frames, size, size), dtype=np.float32)
    pad = int(np.ceil(max(head_r, torso_r) + 1.5))
    for t in range(frames):
        image = _background(scene, camera, t)
        # Primitives: limbs, the trunk's core, the head, the face mark (drawn only when the face is visible).
        a = np.concatenate([joints_px[t, ia], joints_px[t, shoulders].mean(0, keepdims=True), head_px[t : t + 1]])
        b = np.concatenate([joints_px[t, ib], joints_px[t, hips].mean(0, keepdims=True), head_px[t : t + 1]])
        radius = np.concatenate([limb_radius, [torso_r, head_r]]).astype(np.float32)
        colour = np.concatenate([limb_colour, scene.figure[None], scene.skin[None]])
        z = np.concatenate([(depth[t, ia] + depth[t, ib]) / 2, [depth[t, 5:13].mean(), head_depth[t]]])
        nose_z = depth[t, J["nose"]]
        if nose_z >= head_depth[t] - 0.01:
            a = np.concatenate([a, joints_px[t, J["nose"]][None]])
            b = np.concatenate([b, joints_px[t, J["nose"]][None]])
            radius = np.append(radius, max(0.6, 0.45 * head_r)).astype(np.float32)
            colour = np.concatenate([colour, (scene.skin * 0.35)[None]])
            z = np.append(z, head_depth[t] + 1.0)  # on top of the head
        order = np.argsort(z, kind="stable")
        x0 = max(int(np.floor(min(a[:, 0].min(), b[:, 0].min()))) - pad, 0)
        x1 = min(int(np.ceil(max(a[:, 0].max(), b[:, 0].max()))) + pad + 1, size)
        y0 = max(int(np.floor(min(a[:, 1].min(), b[:, 1].min()))) - pad, 0)
        y1 = min(int(np.ceil(max(a[:, 1].max(), b[:, 1].max()))) + pad + 1, size)
        if x1 > x0 and y1 > y0:
            xs = np.arange(x0, x1, dtype=np.float32)
            ys = np.arange(y0, y1, dtype=np.float32)
            cover = _capsule_coverage(xs, ys, a[order], b[order], radius[order])
            region = image[y0:y1, x0:x1]
            for k, idx in enumerate(order):
                alpha = cover[k][..., None]
                region += alpha * (colour[idx] - region)
            masks[t, y0:y1, x0:x1] = cover.max(axis=0)
        images[t] = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)

    inside = (
        (joints_px[..., 0] >= -0.5)
        & (joints_px[..., 0] <= size - 0.5)
        & (joints_px[..., 1] >= -0.5)
        & (joints_px[..., 1] <= size - 0.5)
    )
    return RenderedClip(frames=images, masks=masks, keypoint=joints_px, score=inside.astype(np.float32))
