"""Frame sampling on one time axis: Video (H) for the pose stream and Video (L) for the RGB stream.

PeVL reads ``T_p`` frames for pose ("Video (H)", default 32) and ``T_v`` of them for RGB ("Video (L)", default
8). Both come from the same uniform segmentation of the clip (TSN / PYSKL ``UniformSampleFrames`` style): the
clip is cut into ``T_p`` equal segments and one frame is taken per segment; RGB frame ``t`` is the middle one of
the ``w = T_p / T_v`` pose frames of its window, so ``video[:, t] == pose[:, t * w + w // 2]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pevl.errors import PevlError


@dataclass(frozen=True)
class ClipIndices:
    """Frame indices of one or more clips sampled from a video.

    Attributes:
        pose: ``[num_clips, T_p]`` frame indices for the pose stream (Video (H)), non-decreasing per clip.
        video: ``[num_clips, T_v]`` frame indices for the RGB stream (Video (L)), a subset of ``pose``:
            ``video[:, t] == pose[:, t * w + w // 2]`` with ``w = T_p // T_v``.
    """

    pose: np.ndarray
    video: np.ndarray

    @property
    def window(self) -> int:
        """Pose frames per RGB frame, ``w = T_p // T_v`` (the UCMR temporal alignment window)."""
        return self.pose.shape[1] // self.video.shape[1]


def sample_clip_indices(
    total_frames: int,
    num_pose_frames: int = 32,
    num_video_frames: int = 8,
    train: bool = False,
    num_clips: int = 1,
    rng: np.random.Generator | None = None,
) -> ClipIndices:
    """Sample the pose and RGB frame indices of ``num_clips`` clips covering the whole video.

    Training uses random segment sampling: one uniformly random frame per segment, so every epoch sees
    different frames while covering the whole action. Testing is deterministic: clip ``c`` of ``n`` takes the
    frame at fraction ``(c + 0.5) / n`` of every segment, so one clip takes segment centres and several clips
    are evenly shifted copies (multi-clip testing). Videos shorter than ``T_p`` repeat frames; indices never
    decrease along a clip.

    Args:
        total_frames: Number of frames in the video (at least 1).
        num_pose_frames: ``T_p``, frames per clip for pose.
        num_video_frames: ``T_v``, frames per clip for RGB; must divide ``T_p``.
        train: Random segment sampling instead of the deterministic test sampling.
        num_clips: Clips to sample (multi-clip testing; independent random clips when training).
        rng: Random generator for training (a fresh unseeded one when ``None``).

    Returns:
        The :class:`ClipIndices`.

    Raises:
        PevlError: A count is not positive, or ``T_p`` is not a multiple of ``T_v``.
    """
    total_frames = int(total_frames)
    if total_frames < 1:
        raise PevlError(f"cannot sample frames from a video with {total_frames} frames")
    if num_pose_frames < 1 or num_video_frames < 1 or num_clips < 1:
        raise PevlError(
            f"frame and clip counts must be positive (got num_pose_frames={num_pose_frames}, "
            f"num_video_frames={num_video_frames}, num_clips={num_clips})"
        )
    if num_pose_frames % num_video_frames:
        raise PevlError(
            f"num_pose_frames ({num_pose_frames}) must be a multiple of num_video_frames ({num_video_frames})"
        )
    segment = total_frames / num_pose_frames
    starts = np.arange(num_pose_frames, dtype=np.float64)[None, :]
    if train:
        rng = rng if rng is not None else np.random.default_rng()
        offsets = rng.random((num_clips, num_pose_frames))
    else:
        offsets = np.broadcast_to(((np.arange(num_clips) + 0.5) / num_clips)[:, None], (num_clips, num_pose_frames))
    pose = np.floor((starts + offsets) * segment).astype(np.int64)
    np.clip(pose, 0, total_frames - 1, out=pose)  # guards float rounding at the very end
    window = num_pose_frames // num_video_frames
    video = pose[:, window // 2 :: window].copy()
    return ClipIndices(pose=pose, video=video)
