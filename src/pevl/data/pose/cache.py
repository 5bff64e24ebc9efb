"""On-disk cache of extracted poses: one small ``.npz`` per video and backend.

A video's entry is keyed by its resolved path, size and modification time and by the backend's cache tag, so
an edited or replaced video is extracted again and two backends never mix. ``pevl extract-poses`` fills the
cache as it goes (a rerun skips the videos already done), and ``pevl predict`` and the datasets reuse it.

A rawframe folder is keyed like a video by its path and its own size and modification time, which change when
frames are added or removed (not when a frame file is rewritten in place).

Location: ``cache_dir`` if given, else ``$PEVL_CACHE/poses``, else ``~/.cache/pevl/poses``.
"""

from __future__ import annotations

import hashlib
import os
import re
import zipfile
from pathlib import Path

import numpy as np

from pevl.data.pose.base import BACKEND_ALIASES, PoseSequence
from pevl.utils.io import atomic_open

_FORMAT_VERSION = 1


def default_cache_dir() -> Path:
    """``$PEVL_CACHE/poses`` when ``PEVL_CACHE`` is set, else ``~/.cache/pevl/poses``."""
    root = os.environ.get("PEVL_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "pevl") / "poses"


class PoseCache:
    """Per-video pose cache for one backend.

    Args:
        cache_dir: Root folder of the cache (:func:`default_cache_dir` when ``None``).
        backend: Backend cache tag (:func:`pevl.data.pose.base.cache_tag`), e.g. ``"mediapipe"``.
    """

    def __init__(self, cache_dir: str | Path | None = None, backend: str = "mediapipe") -> None:
        self.root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        name, sep, settings = backend.partition("-")
        self.backend = BACKEND_ALIASES.get(name, name) + sep + settings  # "rtmpose" and "rtmlib" share entries
        self._folder = self.root / re.sub(r"[^A-Za-z0-9._-]+", "_", self.backend)

    def path_for(self, video_path: str | Path, clip: tuple[int | None, ...] | None = None) -> Path | None:
        """The cache file of a video in its current state, or ``None`` if the video does not exist.

        ``clip``: a frame range of a rawframe folder (``(start_index, offset, count)``), cached apart from the
        whole folder.
        """
        try:
            resolved = Path(video_path).resolve()
            stat = resolved.stat()
        except OSError:
            return None
        identity = f"{resolved}\0{stat.st_size}\0{stat.st_mtime_ns}\0{self.backend}\0{_FORMAT_VERSION}"
        if clip is not None:
            identity += f"\0clip={','.join(map(str, clip))}"
        digest = hashlib.sha1(identity.encode("utf-8", "surrogateescape")).hexdigest()
        return self._folder / digest[:2] / f"{digest}.npz"

    def get(self, video_path: str | Path, clip: tuple[int | None, ...] | None = None) -> PoseSequence | None:
        """The cached poses of a video (or of a ``clip`` of it), or ``None`` when absent, outdated or unreadable."""
        path = self.path_for(video_path, clip)
        if path is None or not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                img_shape = data["img_shape"]
                return PoseSequence(
                    keypoint=data["keypoint"],
                    keypoint_score=data["keypoint_score"],
                    img_shape=(int(img_shape[0]), int(img_shape[1])),
                    fps=float(data["fps"]),
                )
        except (OSError, ValueError, KeyError, IndexError, EOFError, zipfile.BadZipFile):
            return None  # a damaged entry is simply extracted again

    def put(
        self, video_path: str | Path, seq: PoseSequence, clip: tuple[int | None, ...] | None = None
    ) -> Path | None:
        """Store a video's (or a ``clip``'s) poses atomically; returns the cache file (``None``: video gone)."""
        path = self.path_for(video_path, clip)
        if path is None:
            return None
        with atomic_open(path, "wb") as f:
            np.savez_compressed(
                f,
                keypoint=seq.keypoint.astype(np.float32),
                keypoint_score=seq.keypoint_score.astype(np.float32),
                img_shape=np.asarray(seq.img_shape, dtype=np.int64),
                fps=np.float64(seq.fps),
                source=np.str_(str(Path(video_path).resolve())),
            )
        return path
