"""Poses estimated on the fly for a clip, kept on disk so that predicting the same video again skips the estimator.

``pevl predict`` estimates poses on the sampled frames only (BlazePose on 32 frames: about a second, plus loading
the backend). The result depends only on the video file, the frames and the backend, so it is stored under a
SHA-256 of the resolved path, size and modification time (ns) of the video, the backend and the frame numbers.
A changed video (rewritten, even with the same size) gets a new key. Entries are ``<key>.npz`` files (no pickles)
under ``$PEVL_CACHE/clip_poses`` (default ``~/.cache/pevl/clip_poses``); a damaged entry counts as a miss.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from pevl.utils.io import atomic_open


def default_cache_dir() -> Path:
    """``$PEVL_CACHE/clip_poses``, else ``~/.cache/pevl/clip_poses``."""
    return Path(os.environ.get("PEVL_CACHE") or Path.home() / ".cache" / "pevl").expanduser() / "clip_poses"


def clip_pose_path(
    video: str | Path, frames: np.ndarray, backend: str, cache_dir: str | Path | None = None
) -> Path | None:
    """The cache entry of the poses of ``frames`` of ``video`` estimated by ``backend`` (None: not a file)."""
    path = Path(video).resolve()
    try:
        stat = path.stat()
    except OSError:
        return None
    frame_list = ",".join(str(int(i)) for i in np.asarray(frames).ravel())
    key = hashlib.sha256(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\0{backend}\0{frame_list}".encode()).hexdigest()
    return (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / f"{key}.npz"


def read_clip_poses(path: Path | None, num_frames: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``(keypoint [T, J, 2], score [T, J])`` of an entry, or ``None`` when absent, damaged or of another length."""
    if path is None:
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            keypoint, score = data["keypoint"], data["score"]
    except (OSError, ValueError, KeyError):
        return None
    if keypoint.shape[0] != num_frames or keypoint.shape[:2] != score.shape or keypoint.shape[-1:] != (2,):
        return None
    return keypoint.astype(np.float32), score.astype(np.float32)


def write_clip_poses(path: Path | None, keypoint: np.ndarray, score: np.ndarray) -> None:
    """Store an entry atomically; a cache that cannot be written only costs the next run the estimation."""
    if path is None:
        return
    try:
        with atomic_open(path, "wb") as f:
            np.savez(f, keypoint=np.asarray(keypoint, np.float32), score=np.asarray(score, np.float32))
    except OSError:
        pass
