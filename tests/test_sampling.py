"""Frame sampling: Video (H) for pose and Video (L) for RGB on one time axis."""

from __future__ import annotations

import numpy as np
import pytest

from pevl.data.sampling import sample_clip_indices
from pevl.errors import PevlError


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize(("t_p", "t_v"), [(32, 8), (16, 8), (8, 8), (12, 4)])
def test_rgb_frames_are_the_middle_pose_frame_of_each_window(train, t_p, t_v):
    clips = sample_clip_indices(300, t_p, t_v, train=train, num_clips=3, rng=np.random.default_rng(1))
    w = t_p // t_v
    assert clips.pose.shape == (3, t_p) and clips.video.shape == (3, t_v)
    assert clips.window == w
    for t in range(t_v):
        assert np.array_equal(clips.video[:, t], clips.pose[:, t * w + w // 2])


def test_test_sampling_takes_segment_centres_deterministically():
    clips = sample_clip_indices(320, 32, 8)
    segment = 320 / 32
    expected = np.floor((np.arange(32) + 0.5) * segment).astype(int)
    assert np.array_equal(clips.pose[0], expected)
    again = sample_clip_indices(320, 32, 8)
    assert np.array_equal(clips.pose, again.pose)


def test_multi_clip_testing_shifts_clips_evenly_inside_the_segments():
    clips = sample_clip_indices(640, 32, 8, num_clips=4)
    # segment of 20 frames, offsets at 1/8, 3/8, 5/8, 7/8 of it
    assert clips.pose[:, 0].tolist() == [2, 7, 12, 17]
    assert len({tuple(row) for row in clips.pose.tolist()}) == 4
    assert np.all(np.diff(clips.pose[:, 3]) > 0)


def test_training_samples_one_random_frame_inside_every_segment():
    rng = np.random.default_rng(0)
    total, t_p = 200, 20
    seen = set()
    for _ in range(50):
        pose = sample_clip_indices(total, t_p, 4, train=True, rng=rng).pose[0]
        segment = np.floor(np.arange(t_p + 1) * total / t_p).astype(int)
        assert np.all(pose >= segment[:-1]) and np.all(pose < segment[1:])
        seen.add(tuple(pose))
    assert len(seen) > 40  # random, not a fixed pattern


def test_training_is_reproducible_with_a_seeded_generator():
    a = sample_clip_indices(500, train=True, rng=np.random.default_rng(7))
    b = sample_clip_indices(500, train=True, rng=np.random.default_rng(7))
    assert np.array_equal(a.pose, b.pose)


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("total", [1, 5, 31, 32, 33])
def test_short_videos_repeat_frames_but_never_go_backwards_or_out_of_range(train, total):
    clips = sample_clip_indices(total, 32, 8, train=train, num_clips=2, rng=np.random.default_rng(3))
    assert clips.pose.min() >= 0 and clips.pose.max() < total
    assert np.all(np.diff(clips.pose, axis=1) >= 0)
    if total >= 32 and not train:
        assert len(np.unique(clips.pose[0])) == 32


def test_long_videos_are_covered_from_start_to_end():
    pose = sample_clip_indices(100_000, 32, 8).pose[0]
    assert pose[0] < 100_000 / 32 and pose[-1] > 100_000 * 31 / 32


def test_pose_frames_must_be_a_multiple_of_video_frames():
    with pytest.raises(PevlError, match="multiple"):
        sample_clip_indices(100, 30, 8)


@pytest.mark.parametrize("kwargs", [{"total_frames": 0}, {"total_frames": 10, "num_clips": 0}])
def test_empty_or_nonsense_requests_are_errors(kwargs):
    with pytest.raises(PevlError):
        sample_clip_indices(**kwargs)
