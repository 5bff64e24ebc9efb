"""Transforms: CLIP preprocessing, and poses that stay on the image patches the model sees."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pevl.data.pose.layouts import COCO17_FLIP_INDEX
from pevl.data.transforms import CLIP_MEAN, CLIP_STD, ClipTransform, PoseTransform, normalize_keypoints

MEAN = torch.tensor(CLIP_MEAN).view(3, 1, 1)
STD = torch.tensor(CLIP_STD).view(3, 1, 1)


def frames_with_dots(points: list[tuple[float, float]], height: int, width: int, num_frames: int = 2) -> np.ndarray:
    """Dark frames with one bright 9x9 dot centred on each point (x, y)."""
    frames = np.full((num_frames, height, width, 3), 20, np.uint8)
    for x, y in points:
        xi, yi = int(x), int(y)
        frames[:, max(yi - 4, 0) : yi + 5, max(xi - 4, 0) : xi + 5] = 250
    return frames


def brightest_pixel(image: torch.Tensor) -> tuple[float, float]:
    """(x, y) of the centre of mass of the bright region of a CLIP-normalised [3, S, S] image."""
    pixels = (image * STD + MEAN).mean(0)
    mask = (pixels > 0.6).float()
    assert mask.sum() > 0, "the dot left the crop"
    ys, xs = torch.meshgrid(torch.arange(pixels.shape[0]), torch.arange(pixels.shape[1]), indexing="ij")
    return float((xs * mask).sum() / mask.sum()) + 0.5, float((ys * mask).sum() / mask.sum()) + 0.5


def to_output_pixels(pose_xy: torch.Tensor, size: int) -> tuple[float, float]:
    return float((pose_xy[0] + 1) / 2 * size), float((pose_xy[1] + 1) / 2 * size)


def one_joint(x: float, y: float, num_frames: int = 4, joint: int = 5) -> tuple[np.ndarray, np.ndarray]:
    keypoint = np.zeros((num_frames, 17, 2), np.float32)
    score = np.zeros((num_frames, 17), np.float32)
    keypoint[:, joint] = (x, y)
    score[:, joint] = 0.9
    return keypoint, score


def test_normalize_keypoints_maps_the_box_edges_to_minus_one_and_one():
    keypoint = np.array([[[10, 20], [110, 70], [60, 45]]], np.float32)
    score = np.array([[1.0, 0.5, 0.8]], np.float32)
    out = normalize_keypoints(keypoint, score, (10, 20, 100, 50))
    np.testing.assert_allclose(out[0, :, :2], [[-1, -1], [1, 1], [0, 0]], atol=1e-6)
    np.testing.assert_allclose(out[0, :, 2], [1.0, 0.5, 0.8])
    assert out.dtype == np.float32


def test_missing_and_nan_joints_become_zero_never_nan():
    keypoint = np.array([[[50, 50], [np.nan, 3], [30, 30]]], np.float32)
    score = np.array([[0.0, 0.9, np.nan]], np.float32)
    out = normalize_keypoints(keypoint, score, (0, 0, 100, 100))
    assert np.isfinite(out).all()
    assert np.all(out[0] == 0)


def test_test_transform_is_clip_preprocessing():
    rng = np.random.default_rng(0)
    # Smooth content, so resize-then-crop (CLIP) and crop-then-resize agree up to interpolation noise.
    small = rng.integers(0, 256, (1, 6, 8, 3), dtype=np.uint8)
    frames = np.stack([np.asarray(Image.fromarray(small[0]).resize((320, 240), Image.BILINEAR))])
    out = ClipTransform(image_size=112)(frames, None, None, (240, 320))["video"]
    assert out.shape == (1, 1, 3, 112, 112) and out.dtype == torch.float32
    # OpenAI CLIP: PIL bicubic resize of the shorter side, centre crop, to [0, 1], normalise.
    resized = Image.fromarray(frames[0]).resize((149, 112), Image.BICUBIC)
    left = (149 - 112) // 2
    reference = np.asarray(resized)[:, left : left + 112].astype(np.float32) / 255
    reference = (torch.from_numpy(reference).permute(2, 0, 1) - MEAN) / STD
    assert (out[0, 0] - reference).abs().mean() < 0.05  # a stretched or off-centre crop gives > 0.4


def test_a_uniform_frame_becomes_the_clip_normalised_colour():
    frames = np.zeros((3, 50, 80, 3), np.uint8)
    frames[..., 0], frames[..., 1], frames[..., 2] = 255, 128, 0
    out = ClipTransform(image_size=32)(frames, None, None, (50, 80))["video"]
    expected = (torch.tensor([1.0, 128 / 255, 0.0]).view(3, 1, 1) - MEAN) / STD
    assert torch.allclose(out[0, 1], expected.expand(3, 32, 32), atol=1e-3)


@pytest.mark.parametrize(("height", "width"), [(240, 320), (320, 180)])
def test_three_crops_run_along_the_longer_side_and_joints_follow_them(height, width):
    point = (width * 0.2, height * 0.2)  # near the top-left corner: only in the first crop
    frames = frames_with_dots([point], height, width)
    keypoint, score = one_joint(*point)
    out = ClipTransform(image_size=64, crops=3)(frames, keypoint, score, (height, width))
    assert out["video"].shape == (3, 2, 3, 64, 64) and out["pose"].shape == (3, 4, 17, 3)
    x, y = brightest_pixel(out["video"][0, 0])
    px, py = to_output_pixels(out["pose"][0, 0, 5], 64)
    assert abs(x - px) < 1.5 and abs(y - py) < 1.5
    side = min(height, width)
    # the last crop ends at the far end of the longer side, so the joint lies outside it
    assert out["pose"][2, 0, 5, 0 if width > height else 1] < -1
    if width > height:
        assert out["pose"][2, 0, 5, 0] == pytest.approx((point[0] - (width - side)) / side * 2 - 1, abs=1e-5)


def test_random_resized_crops_and_flips_keep_joints_on_their_pixels():
    height, width = 180, 320
    point = (170.0, 95.0)  # near the centre: inside almost any crop
    frames = frames_with_dots([point], height, width)
    keypoint, score = one_joint(*point)
    transform = ClipTransform(image_size=96, train=True, flip_prob=0.5, color_jitter=0.0, scale=(0.7, 1.0))
    checked, flips = 0, 0
    for seed in range(12):
        out = transform(frames, keypoint, score, (height, width), rng=np.random.default_rng(seed))
        pose = out["pose"][0, 0]
        flipped = pose[6, 2] > 0  # a flip moves the left shoulder into the right-shoulder slot
        flips += int(flipped)
        joint = 6 if flipped else 5
        if abs(pose[joint, 0]) < 0.9 and abs(pose[joint, 1]) < 0.9:
            x, y = brightest_pixel(out["video"][0, 0])
            px, py = to_output_pixels(pose[joint], 96)
            assert abs(x - px) < 2.0 and abs(y - py) < 2.0
            checked += 1
    assert checked >= 8 and 0 < flips < 12


def test_flip_mirrors_x_and_swaps_left_and_right_joints():
    keypoint, score = one_joint(60.0, 40.0, joint=5)  # left shoulder left of centre
    plain = ClipTransform(image_size=32, train=True, flip_prob=0.0, color_jitter=0.0, scale=(1.0, 1.0), ratio=(1, 1))
    flipped = ClipTransform(image_size=32, train=True, flip_prob=1.0, color_jitter=0.0, scale=(1.0, 1.0), ratio=(1, 1))
    a = plain(None, keypoint, score, (100, 100), rng=np.random.default_rng(0))["pose"][0, 0]
    b = flipped(None, keypoint, score, (100, 100), rng=np.random.default_rng(0))["pose"][0, 0]
    assert b[5, 2] == 0 and b[6, 2] == pytest.approx(0.9)
    assert b[6, 0] == pytest.approx(-a[5, 0]) and b[6, 1] == pytest.approx(a[5, 1])
    assert list(COCO17_FLIP_INDEX[5:7]) == [6, 5]


def test_default_training_never_flips_because_direction_can_be_the_label():
    keypoint, score = one_joint(30.0, 50.0)
    transform = ClipTransform(image_size=32, train=True)
    for seed in range(20):
        pose = transform(None, keypoint, score, (100, 100), rng=np.random.default_rng(seed))["pose"][0, 0]
        assert pose[5, 2] > 0 and pose[6, 2] == 0


def test_keypoints_in_another_resolution_of_the_same_view_map_to_the_same_place():
    # e.g. PYSKL keypoints at 340x256 for a 320x240 video
    frames = np.zeros((1, 240, 320, 3), np.uint8)
    keypoint, score = one_joint(170.0, 128.0)  # centre of the 340x256 frame
    out = ClipTransform(image_size=32)(frames, keypoint, score, (256, 340))
    assert out["pose"][0, 0, 5, :2].abs().max() < 1e-5


def test_only_the_given_streams_are_returned():
    keypoint, score = one_joint(10.0, 10.0)
    assert set(ClipTransform(image_size=16)(None, keypoint, score, (40, 60))) == {"pose"}
    frames = np.zeros((2, 40, 60, 3), np.uint8)
    assert set(ClipTransform(image_size=16)(frames, None, None, (40, 60))) == {"video"}


def test_colour_jitter_changes_training_pixels_but_not_test_pixels():
    frames = np.random.default_rng(0).integers(0, 256, (2, 40, 40, 3), dtype=np.uint8)
    test = ClipTransform(image_size=40)
    assert torch.equal(test(frames, None, None, (40, 40))["video"], test(frames, None, None, (40, 40))["video"])
    train = ClipTransform(image_size=40, train=True, color_jitter=0.3, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    jittered = train(frames, None, None, (40, 40), rng=np.random.default_rng(1))["video"]
    assert not torch.allclose(jittered, test(frames, None, None, (40, 40))["video"], atol=1e-2)


def test_pose_transform_keeps_aspect_and_puts_every_in_frame_joint_in_range():
    keypoint = np.zeros((3, 17, 2), np.float32)
    score = np.full((3, 17), 0.8, np.float32)
    keypoint[:, 0] = (0, 50)  # left edge, middle height of a 200x100 frame
    keypoint[:, 1] = (200, 100)  # bottom-right corner
    keypoint[:, 2] = (100, 50)  # centre
    score[:, 3] = 0.0
    out = PoseTransform()(keypoint, score, (100, 200))
    assert out.shape == (1, 3, 17, 3) and out.dtype == torch.float32
    np.testing.assert_allclose(out[0, 0, :3, :2].numpy(), [[-1, 0], [1, 0.5], [0, 0]], atol=1e-6)
    assert torch.all(out[0, :, 3] == 0)
    assert out[..., :2].abs().max() <= 1


def test_pose_transform_training_augments_within_bounds_and_keeps_missing_joints_missing():
    rng = np.random.default_rng(0)
    keypoint = rng.uniform(0, 100, (32, 17, 2)).astype(np.float32)
    score = np.full((32, 17), 0.9, np.float32)
    score[:, 16] = 0.0
    test = PoseTransform()(keypoint, score, (100, 100))
    transform = PoseTransform(train=True, joint_dropout=0.2)
    out = transform(keypoint, score, (100, 100), rng=np.random.default_rng(1))
    assert torch.isfinite(out).all()
    assert torch.all(out[0, :, 16] == 0)
    dropped = (out[0, :, :16, 2] == 0).float().mean()
    assert 0.1 < dropped < 0.3
    kept = out[0, :, :16, 2] > 0
    assert not torch.allclose(out[0, :, :16, :2][kept], test[0, :, :16, :2][kept], atol=1e-3)
    assert out[..., :2].abs().max() < 1.6  # scale 1.1, shift 0.1, rotation 10 degrees of a [-1, 1] pose
