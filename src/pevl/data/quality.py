"""Content checks of a video and its poses: what makes a prediction or a skeleton file quietly meaningless.

Each check gives one warning line naming the video; callers print them (``warning: ...``), count them and record
them in their output, and go on: a questionable video is still processed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pevl.data.video import VideoInfo


def content_warnings(
    video: str | Path, info: VideoInfo | None, keypoint_score: np.ndarray | None = None, consequence: str = ""
) -> list[str]:
    """Warnings about a video: a single frame, a truncated file, nobody found in its poses.

    Args:
        video: The video, named in every line.
        info: What :func:`pevl.data.video.probe_video` read (``None``: no frame checks).
        keypoint_score: Scores ``[..., T, J]`` of the poses found (any leading person axis); ``None`` when no
            poses were looked for.
        consequence: Appended to the no-person line, e.g. ``"the prediction rests on the video alone"``.

    Returns:
        One line per problem, in a fixed order (empty when all is well).
    """
    lines: list[str] = []
    if info is not None and info.num_frames == 1:
        lines.append(f"{video}: has a single frame: there is no motion to see")
    if info is not None and info.truncated:
        lines.append(
            f"{video}: truncated: only {info.num_frames} of the {info.declared_frames} frames its header announces "
            "can be decoded"
        )
    if keypoint_score is not None:
        score = np.asarray(keypoint_score)
        frames = score.shape[-2] if score.ndim >= 2 else 0
        if score.size == 0 or not (score > 0).any():
            tail = f"; {consequence}" if consequence else ""
            lines.append(f"{video}: no person found in any of its {frames} pose frames{tail}")
    return lines
