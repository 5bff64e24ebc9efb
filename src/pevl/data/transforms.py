"""CLIP preprocessing of the RGB frames and the matching normalisation of the pose.

The video and the pose of a clip go through one joint transform (:class:`ClipTransform`): every crop is a box
in the original frame; the frames inside it are resized to ``image_size`` squared and the keypoints are mapped
from the same box to ``[-1, 1]``, so a joint stays on the image patch the model sees it on (what P2V-R and
V2P-R rely on). Pose-only models use :class:`PoseTransform`, whose box is the whole frame.

Resizing is CLIP's (bicubic, antialiased, on uint8 pixels as PIL does, shorter side to ``image_size`` then a
square crop), done in torch; the crop is cut from the original frame first and then resized, which equals
resize-then-crop up to a pixel of rounding and is much cheaper on 1080p input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pevl.data.pose.layouts import COCO17_FLIP_INDEX
from pevl.errors import PevlError

CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
"""Per-channel RGB mean of OpenAI CLIP's image preprocessing (pixels in [0, 1])."""

CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
"""Per-channel RGB standard deviation of OpenAI CLIP's image preprocessing."""

Box = tuple[float, float, float, float]
"""A region ``(x0, y0, w, h)`` in pixels."""


def normalize_keypoints(keypoint: np.ndarray, score: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """Map pixel keypoints into a box's ``[-1, 1]`` coordinates and append the score.

    The box's left/top edge maps to -1 and its right/bottom edge to +1 on each axis. Joints with score 0
    (missing), or with non-finite values, become ``(0, 0, 0)``; the result never holds NaN.

    Args:
        keypoint: ``[..., J, 2]`` pixel coordinates (x, y), e.g. ``[T, J, 2]``.
        score: ``[..., J]`` confidences in [0, 1].
        box: ``(x0, y0, w, h)`` in pixels, ``w`` and ``h`` positive.

    Returns:
        ``[..., J, 3]`` float32 ``(x, y, score)``.
    """
    x0, y0, width, height = (float(v) for v in box)
    if not (width > 0 and height > 0):
        raise ValueError(f"box width and height must be positive, got {tuple(box)}")
    keypoint = np.asarray(keypoint, dtype=np.float32)
    score = np.asarray(score, dtype=np.float32)
    if keypoint.shape[-1] != 2 or keypoint.shape[:-1] != score.shape:
        raise ValueError(
            f"keypoint {keypoint.shape} and score {score.shape} shapes do not match ([..., J, 2], [..., J])"
        )
    out = np.empty((*score.shape, 3), dtype=np.float32)
    out[..., 0] = (keypoint[..., 0] - x0) * (2.0 / width) - 1.0
    out[..., 1] = (keypoint[..., 1] - y0) * (2.0 / height) - 1.0
    out[..., 2] = np.clip(score, 0.0, 1.0)
    valid = (score > 0) & np.isfinite(out).all(axis=-1)
    out[~valid] = 0.0
    return out


def centre_square_box(height: int, width: int) -> tuple[int, int, int, int]:
    """The centre square of the shorter side, ``(x0, y0, w, h)`` in pixels: the crop seen at test time."""
    side = min(height, width)
    return (width - side) // 2, (height - side) // 2, side, side


def _three_crop_boxes(height: int, width: int) -> list[tuple[int, int, int, int]]:
    """Three squares of the shorter side: start, centre and end of the longer side."""
    side = min(height, width)
    if width >= height:
        return [(x0, 0, side, side) for x0 in (0, (width - side) // 2, width - side)]
    return [(0, y0, side, side) for y0 in (0, (height - side) // 2, height - side)]


def _random_resized_box(
    height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float], rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """A random box whose area is a fraction of the shorter side squared, with jittered aspect ratio."""
    side = min(height, width)
    area = rng.uniform(*scale) * side * side
    aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
    box_w = min(width, max(1, round(math.sqrt(area * aspect))))
    box_h = min(height, max(1, round(math.sqrt(area / aspect))))
    x0 = int(rng.integers(0, width - box_w + 1))
    y0 = int(rng.integers(0, height - box_h + 1))
    return x0, y0, box_w, box_h


def check_one_person(keypoint: np.ndarray, score: np.ndarray) -> None:
    """Refuse anything but one person's ``[T, J, 2]`` keypoints and ``[T, J]`` scores.

    A skeleton pickle stores ``[M, T, J, 2]`` (M persons); passing that would make the person axis a clip axis.

    Raises:
        ValueError: Another shape, with the way to pick one person.
    """
    keypoint, score = np.asarray(keypoint), np.asarray(score)
    if keypoint.ndim == 4:
        raise ValueError(
            f"keypoint is [M, T, J, 2] = {list(keypoint.shape)} (a pickle's persons); the transforms take one "
            "person's [T, J, 2]: pass keypoint[m] and keypoint_score[m], or "
            "pevl.data.pose.pyskl.main_person(keypoint, score)"
        )
    if keypoint.ndim != 3 or keypoint.shape[-1] != 2 or score.shape != keypoint.shape[:-1]:
        raise ValueError(
            f"keypoint must be [T, J, 2] and score [T, J], got {list(keypoint.shape)} and {list(score.shape)}"
        )


@dataclass
class ClipTransform:
    """Joint video + pose transform: crops, CLIP resize and normalisation, pose mapped to the same crop.

    Test: ``crops=1`` takes the centre square of the shorter side, ``crops=3`` three squares along the longer
    side (left/centre/right, or top/middle/bottom for portrait video). Train: one random resized crop per clip
    (same box for every frame), an optional horizontal flip and light colour jitter.

    Attributes:
        image_size: Output side ``S`` in pixels (224 for CLIP ViT-B/16).
        train: Random augmentation instead of deterministic crops.
        crops: Test crops per clip, 1 or 3 (ignored when training).
        scale: Training crop area as a fraction of the shorter side squared (min, max).
        ratio: Training crop aspect ratio range (width / height).
        flip_prob: Probability of a horizontal flip when training. 0 by default: fine-grained labels can
            depend on direction (e.g. turning left vs right).
        flip_index: Joint permutation for a mirrored image (COCO-17 by default).
        color_jitter: Strength of brightness/contrast/saturation jitter when training (0 disables it).
        mean: Per-channel mean subtracted after scaling pixels to [0, 1].
        std: Per-channel standard deviation.
    """

    image_size: int = 224
    train: bool = False
    crops: int = 1
    scale: tuple[float, float] = (0.5, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_prob: float = 0.0
    flip_index: tuple[int, ...] = COCO17_FLIP_INDEX
    color_jitter: float = 0.1
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    def __post_init__(self) -> None:
        if self.crops not in (1, 3):
            raise PevlError(f"crops must be 1 or 3, got {self.crops}")
        if self.image_size < 1:
            raise PevlError(f"image_size must be positive, got {self.image_size}")
        if not (0 < self.scale[0] <= self.scale[1]) or not (0 < self.ratio[0] <= self.ratio[1]):
            raise PevlError(f"bad crop scale {self.scale} or ratio {self.ratio}")

    def __call__(
        self,
        frames: np.ndarray | None,
        keypoint: np.ndarray | None,
        score: np.ndarray | None,
        img_shape: tuple[int, int],
        rng: np.random.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Transform one clip.

        Args:
            frames: ``[T_v, H, W, 3]`` RGB uint8 frames, or ``None`` for pose only.
            keypoint: ``[T_p, J, 2]`` pixel keypoints of one person in the ``img_shape`` frame, or ``None`` for
                video only; a pickle's ``[M, T, J, 2]`` is refused (pick a person first).
            score: ``[T_p, J]`` keypoint scores (required with ``keypoint``).
            img_shape: ``(height, width)`` of the frame the keypoints refer to. The frames may be stored at
                another resolution of the same view: crops are placed in relative coordinates.
            rng: Random generator for training (a fresh unseeded one when ``None``).

        Returns:
            ``{"video": [crops, T_v, 3, S, S] float32, "pose": [crops, T_p, J, 3] float32}``, with only the keys
            of the inputs given. Pose coordinates are relative to each crop box (joints outside the crop fall
            outside [-1, 1]).
        """
        if frames is None and keypoint is None:
            raise ValueError("ClipTransform needs frames, keypoints or both")
        if keypoint is not None and score is None:
            raise ValueError("keypoint given without score")
        if keypoint is not None:
            check_one_person(keypoint, score)  # type: ignore[arg-type]
        img_h, img_w = int(img_shape[0]), int(img_shape[1])
        if frames is not None:
            frames = np.asarray(frames)
            if frames.ndim != 4 or frames.shape[-1] != 3:
                raise ValueError(f"frames must be [T, H, W, 3], got {frames.shape}")
            ref_h, ref_w = frames.shape[1], frames.shape[2]
        else:
            ref_h, ref_w = img_h, img_w
        rng = rng if rng is not None else (np.random.default_rng() if self.train else None)

        if self.train:
            assert rng is not None
            boxes = [_random_resized_box(ref_h, ref_w, self.scale, self.ratio, rng)]
            flip = self.flip_prob > 0 and rng.random() < self.flip_prob
            jitter = self._sample_jitter(rng) if self.color_jitter > 0 else None
        else:
            boxes = [centre_square_box(ref_h, ref_w)] if self.crops == 1 else _three_crop_boxes(ref_h, ref_w)
            flip, jitter = False, None

        out: dict[str, torch.Tensor] = {}
        if frames is not None:
            out["video"] = torch.stack([self._crop_video(frames, box, flip, jitter) for box in boxes])
        if keypoint is not None:
            poses = []
            for x0, y0, w, h in boxes:
                # The same region in the keypoints' pixel frame.
                sx, sy = img_w / ref_w, img_h / ref_h
                pose = normalize_keypoints(keypoint, score, (x0 * sx, y0 * sy, w * sx, h * sy))
                if flip:
                    pose = _flip_pose(pose, self.flip_index)
                poses.append(torch.from_numpy(pose))
            out["pose"] = torch.stack(poses)
        return out

    def _sample_jitter(self, rng: np.random.Generator) -> tuple[float, float, float]:
        s = self.color_jitter
        return tuple(float(v) for v in rng.uniform(1 - s, 1 + s, size=3))  # type: ignore[return-value]

    def _crop_video(
        self,
        frames: np.ndarray,
        box: tuple[int, int, int, int],
        flip: bool,
        jitter: tuple[float, float, float] | None,
    ) -> torch.Tensor:
        x0, y0, w, h = box
        # uint8 NHWC seen as channels-last NCHW: torch's uint8 antialiased bicubic kernel (the one that matches
        # PIL, as CLIP's preprocessing uses) is an order of magnitude faster than resizing floats.
        region = torch.from_numpy(np.ascontiguousarray(frames[:, y0 : y0 + h, x0 : x0 + w], dtype=np.uint8))
        region = region.permute(0, 3, 1, 2)
        size = self.image_size
        if (h, w) != (size, size):
            region = F.interpolate(region, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
        region = region.float().div_(255.0).contiguous()
        if flip:
            region = region.flip(-1)
        if jitter is not None:
            region = _color_jitter(region, *jitter)
        mean = torch.tensor(self.mean, dtype=region.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=region.dtype).view(1, 3, 1, 1)
        return (region - mean) / std


def _color_jitter(x: torch.Tensor, brightness: float, contrast: float, saturation: float) -> torch.Tensor:
    """Brightness, contrast and saturation factors applied to ``[T, 3, H, W]`` images in [0, 1]."""
    x = x * brightness
    gray = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
    x = (x - gray.mean(dim=(2, 3), keepdim=True)) * contrast + gray.mean(dim=(2, 3), keepdim=True)
    gray = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
    x = (x - gray) * saturation + gray
    return x.clamp_(0.0, 1.0)


def _flip_pose(pose: np.ndarray, flip_index: Sequence[int]) -> np.ndarray:
    """Mirror normalised poses ``[..., J, 3]``: negate x of present joints and swap left/right joints."""
    if pose.shape[-2] != len(flip_index):
        raise PevlError(f"flip_index has {len(flip_index)} joints but the pose has {pose.shape[-2]}")
    pose = pose[..., list(flip_index), :].copy()
    pose[..., 0] = np.where(pose[..., 2] > 0, -pose[..., 0], 0.0)
    return pose


def frame_square_box(img_shape: tuple[int, int]) -> Box:
    """The square of the longer side centred on the frame, in pixels: all in-frame points map into [-1, 1]."""
    height, width = float(img_shape[0]), float(img_shape[1])
    side = max(height, width)
    return (width - side) / 2, (height - side) / 2, side, side


@dataclass
class PoseTransform:
    """Pose-only transform: normalise to the frame's enclosing square, augment when training.

    The box is the whole frame squared around its centre (side = the longer side), so the aspect ratio is kept
    and every in-frame joint lands in [-1, 1]. Training applies, per clip, a random scale, rotation and shift
    in the normalised space, an optional flip, and drops random joints (score set to 0) to mimic detector misses.

    Attributes:
        train: Random augmentation.
        scale: Range of the random scale factor.
        max_rotation: Largest rotation in degrees (either direction).
        max_shift: Largest shift per axis in normalised units (1.0 = half the box).
        joint_dropout: Probability that a joint of a frame is dropped.
        flip_prob: Probability of a horizontal flip (0 by default, as in :class:`ClipTransform`).
        flip_index: Joint permutation for a mirrored pose.
    """

    train: bool = False
    scale: tuple[float, float] = (0.9, 1.1)
    max_rotation: float = 10.0
    max_shift: float = 0.1
    joint_dropout: float = 0.05
    flip_prob: float = 0.0
    flip_index: tuple[int, ...] = COCO17_FLIP_INDEX

    def __call__(
        self,
        keypoint: np.ndarray,
        score: np.ndarray,
        img_shape: tuple[int, int],
        rng: np.random.Generator | None = None,
    ) -> torch.Tensor:
        """Transform one clip's pose.

        Args:
            keypoint: ``[T_p, J, 2]`` pixel keypoints of one person (``[M, T, J, 2]`` is refused).
            score: ``[T_p, J]`` keypoint scores.
            img_shape: ``(height, width)`` of the frame the keypoints refer to.
            rng: Random generator for training (a fresh unseeded one when ``None``).

        Returns:
            ``[1, T_p, J, 3]`` float32 ``(x, y, score)``.
        """
        check_one_person(keypoint, score)
        pose = normalize_keypoints(keypoint, score, frame_square_box(img_shape))
        if self.train:
            rng = rng if rng is not None else np.random.default_rng()
            pose = self._augment(pose, rng)
        return torch.from_numpy(pose).unsqueeze(0)

    def _augment(self, pose: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        valid = pose[..., 2] > 0
        factor = rng.uniform(*self.scale)
        angle = math.radians(rng.uniform(-self.max_rotation, self.max_rotation))
        shift = rng.uniform(-self.max_shift, self.max_shift, size=2)
        cos, sin = math.cos(angle), math.sin(angle)
        matrix = factor * np.array([[cos, -sin], [sin, cos]], dtype=np.float32)
        xy = pose[..., :2] @ matrix.T + shift.astype(np.float32)
        pose = pose.copy()
        pose[..., :2] = xy
        if self.joint_dropout > 0:
            valid &= rng.random(valid.shape) >= self.joint_dropout
        pose[~valid] = 0.0
        if self.flip_prob > 0 and rng.random() < self.flip_prob:
            pose = _flip_pose(pose, self.flip_index)
        return pose.astype(np.float32, copy=False)
