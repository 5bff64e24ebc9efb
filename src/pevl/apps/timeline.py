"""Action timelines of long videos: sliding windows, their top-k actions, and merged segments.

A video of ``N`` frames is cut into windows of ``L`` frames every ``S`` frames (``S <= L``, so nothing is left
out): window ``k`` covers frames ``[k S, k S + L)`` while that fits, and one last window ``[N - L, N)`` is added,
clamped to the end, when the regular ones stop short of it. A video shorter than one window is one window
``[0, N)``. Inside a window the model's clip is sampled as for a whole trimmed video
(:func:`pevl.data.sampling.sample_clip_indices`), shifted to the window's start.

Times are presentation timestamps: on a variable-frame-rate file the windows are planned in seconds
(:func:`plan_windows_by_time`, each window holds the frames shown during its span) and every time reported (JSON,
CSV, the printed table, segments, the annotated video) comes from the frames' timestamps, never from
``frame / fps``; a constant-rate file keeps frame-exact windows of ``round(window * fps)`` frames.

Segments merge runs of consecutive windows whose top-1 action (after optional smoothing of the probabilities
over neighbouring windows) is the same and at least ``min_score`` likely. Overlapping windows are split at the
midpoints between their centres, so segments never overlap: the first starts at 0, the last ends with the video,
and only windows below ``min_score`` leave gaps.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pevl.data.sampling import sample_clip_indices
from pevl.errors import PevlError
from pevl.utils.io import atomic_open, atomic_path, write_json

MIN_DEFAULT_WINDOW_SECONDS = 1.0
"""Shortest default window: one second (a tiny model's 8 pose frames would otherwise be a quarter second)."""


@dataclass(frozen=True)
class Window:
    """One window of the timeline.

    Attributes:
        index: Its position in the timeline.
        start: First frame.
        end: One past the last frame.
        pose_frames: ``[T_p]`` frame numbers of the pose stream.
        video_frames: ``[T_v]`` frame numbers of the RGB stream (a subset of ``pose_frames``).
        times: ``(start, end)`` seconds from the frames' timestamps when known when the window is made (a live
            source); otherwise the timeline converts ``start`` and ``end``.
    """

    index: int
    start: int
    end: int
    pose_frames: np.ndarray
    video_frames: np.ndarray
    times: tuple[float, float] | None = None


def window_sizes(fps: float, window: float, stride: float | None) -> tuple[int, int]:
    """Window and stride in frames (each at least 1) from seconds.

    Raises:
        PevlError: A non-positive length, or a stride longer than the window (the timeline would have gaps).
    """
    stride = window / 2 if stride is None else stride
    if not (window > 0 and stride > 0):
        raise PevlError(f"--window and --stride must be positive seconds (got {window} and {stride})")
    if stride > window + 1e-9:
        raise PevlError(f"--stride ({stride:g} s) must not exceed --window ({window:g} s): frames would be skipped")
    length = max(1, round(window * fps))
    return length, max(1, min(length, round(stride * fps)))


def default_window_seconds(num_pose_frames: int, fps: float) -> float:
    """The window of ``--timeline``: the model's clip length, ``T_p`` consecutive frames, at least one second.

    With that window every pose frame the model reads is a consecutive frame of the video (dense sampling).
    """
    return max(MIN_DEFAULT_WINDOW_SECONDS, num_pose_frames / fps if fps > 0 else 0.0)


def make_window(index: int, start: int, end: int, num_pose_frames: int, num_video_frames: int) -> Window:
    """The window ``[start, end)`` with its clip sampled as for a trimmed video of ``end - start`` frames."""
    clip = sample_clip_indices(end - start, num_pose_frames, num_video_frames)
    return Window(index, start, end, clip.pose[0] + start, clip.video[0] + start)


def is_variable_rate(times: np.ndarray | None, fps: float) -> bool:
    """Whether frame timestamps stray from ``index / fps`` by more than half a frame somewhere (a VFR video)."""
    if times is None or len(times) < 2 or fps <= 0:
        return False
    return bool(np.max(np.abs(times - np.arange(len(times)) / fps)) > 0.5 / fps)


def plan_windows_by_time(
    times: np.ndarray, window: float, stride: float, num_pose_frames: int, num_video_frames: int
) -> list[Window]:
    """Windows of ``window`` seconds every ``stride`` seconds over frames shown at ``times`` (a VFR video).

    Window ``k`` holds the frames whose timestamps fall in ``[k * stride, k * stride + window)``; a last window
    clamped to the end is added when the regular ones stop short of it, as for frames.

    Args:
        times: ``[N]`` increasing seconds of each frame, from 0.
        window: Window length in seconds.
        stride: Seconds between window starts.
        num_pose_frames: ``T_p`` of the model.
        num_video_frames: ``T_v`` of the model.
    """
    count = len(times)
    if count == 0:
        return []
    end = float(times[-1]) + (float(times[-1] - times[-2]) if count > 1 else 0.0)
    eps = 1e-6
    if end <= window + eps:
        return [make_window(0, 0, count, num_pose_frames, num_video_frames)]
    starts = list(np.arange(0.0, end - window + eps, stride))
    if starts[-1] + window < end - eps:
        starts.append(end - window)
    spans: list[tuple[int, int]] = []
    for t in starts:
        first = min(int(np.searchsorted(times, t - eps)), count - 1)
        last = max(int(np.searchsorted(times, t + window - eps)), first + 1)
        if not spans or spans[-1] != (first, last):  # a gap longer than the window: one window, not several
            spans.append((first, last))
    return [make_window(i, s, e, num_pose_frames, num_video_frames) for i, (s, e) in enumerate(spans)]


def window_starts(num_frames: int, length: int, stride: int) -> list[tuple[int, int]]:
    """``(start, end)`` of every window of a video of ``num_frames`` frames (see the module docstring)."""
    if num_frames < 1:
        return []
    if num_frames <= length:
        return [(0, num_frames)]
    spans = [(s, s + length) for s in range(0, num_frames - length + 1, stride)]
    if spans[-1][1] < num_frames:
        spans.append((num_frames - length, num_frames))
    return spans


def plan_windows(
    num_frames: int, length: int, stride: int, num_pose_frames: int, num_video_frames: int
) -> list[Window]:
    """Every window of a video whose frame count is known."""
    return [
        make_window(i, start, end, num_pose_frames, num_video_frames)
        for i, (start, end) in enumerate(window_starts(num_frames, length, stride))
    ]


@dataclass
class Segment:
    """A run of windows with one action.

    Attributes:
        start: Seconds.
        end: Seconds.
        label: The action.
        score: Mean probability of the action over the run's windows.
        windows: ``(first, last)`` window index of the run.
    """

    start: float
    end: float
    label: str
    score: float
    windows: tuple[int, int]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "start": round(self.start, 3), "end": round(self.end, 3), "label": self.label,
            "score": round(self.score, 6), "windows": list(self.windows),
        }  # fmt: skip


def smooth_probabilities(probs: np.ndarray, windows: int) -> np.ndarray:
    """Centred moving average of ``[W, C]`` probabilities over ``windows`` neighbours (1 = unchanged).

    The average shrinks at the ends (only existing neighbours count), so rows stay distributions.
    """
    if windows <= 1 or len(probs) <= 1:
        return probs
    half = windows // 2
    cumulative = np.concatenate([np.zeros((1, probs.shape[1])), np.cumsum(probs, axis=0)])
    rows = np.arange(len(probs))
    lo, hi = np.clip(rows - half, 0, len(probs)), np.clip(rows + half + 1, 0, len(probs))
    return (cumulative[hi] - cumulative[lo]) / (hi - lo)[:, None]


def merge_segments(
    probs: np.ndarray, bounds: np.ndarray, labels: Sequence[str], min_score: float = 0.0, smooth: int = 1
) -> list[Segment]:
    """Merge consecutive windows with the same top-1 action into segments.

    Args:
        probs: ``[W, C]`` window probabilities.
        bounds: ``[W + 1]`` seconds: window ``k`` owns ``[bounds[k], bounds[k + 1])`` of the video.
        labels: The ``C`` label texts.
        min_score: Windows whose (smoothed) top-1 probability is below this belong to no segment.
        smooth: Windows averaged (centred) before the top-1 is taken.

    Returns:
        The segments in time order; they never overlap.
    """
    if smooth < 1:
        raise PevlError(f"--smooth must be at least 1 window (got {smooth})")
    probs = smooth_probabilities(np.asarray(probs, dtype=np.float64), smooth)
    segments: list[Segment] = []
    top = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=np.int64)
    run_start = None
    for k in range(len(probs) + 1):
        ends_run = run_start is not None and (
            k == len(probs) or top[k] != top[run_start] or probs[k, top[k]] < min_score
        )
        if ends_run:
            cls = int(top[run_start])
            score = float(probs[run_start:k, cls].mean())
            segments.append(Segment(float(bounds[run_start]), float(bounds[k]), labels[cls], score, (run_start, k - 1)))
            run_start = None
        if k < len(probs) and run_start is None and probs[k, top[k]] >= min_score:
            run_start = k
    return segments


@dataclass
class Timeline:
    """The result of a timeline run.

    Attributes:
        video: The source.
        fps: Average frame rate (frames over duration).
        num_frames: Frames decoded.
        window_frames: Window length in frames.
        stride_frames: Stride in frames.
        labels: The label texts scored.
        windows: The windows, in time order.
        probs: ``[W, C]`` class probabilities of each window.
        keypoint: ``[N, 17, 2]`` main-person pixels per frame (kept for drawing), or ``None``.
        keypoint_score: ``[N, 17]`` their scores (0 = missing), or ``None``.
        img_shape: ``(height, width)`` of the frames.
        pose_source: ``"file"``, ``"cache"``, ``"extracted"`` or ``"none"``.
        dropped_frames: Frames a live source dropped because processing fell behind.
        seconds: Time spent per stage (``decode``, ``pose``, ``model``, ``total``).
        times: ``[N]`` presentation time of each frame in seconds from the first (variable frame rate), or ``None``:
            frame ``i`` is shown at ``i / fps``.
        window_seconds: The window asked for, in seconds (``None``: ``window_frames / fps``).
        stride_seconds: The stride asked for, in seconds (``None``: ``stride_frames / fps``).
        warnings: Things to know about the inputs (e.g. poses resampled to the video's frames), one line each.
    """

    video: str
    fps: float
    num_frames: int
    window_frames: int
    stride_frames: int
    labels: list[str]
    windows: list[Window] = field(default_factory=list)
    probs: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    keypoint: np.ndarray | None = None
    keypoint_score: np.ndarray | None = None
    img_shape: tuple[int, int] = (0, 0)
    pose_source: str = "none"
    dropped_frames: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    times: np.ndarray | None = None
    window_seconds: float | None = None
    stride_seconds: float | None = None
    warnings: list[str] = field(default_factory=list)

    def time_of(self, frame: float | np.ndarray) -> Any:
        """Seconds at a (possibly fractional) frame position; ``num_frames`` is the end of the last frame."""
        if self.times is None or len(self.times) == 0:
            return np.asarray(frame, dtype=np.float64) / self.fps
        times = np.asarray(self.times, dtype=np.float64)
        last = times[-1] + (times[-1] - times[-2] if len(times) > 1 else 1.0 / self.fps)
        return np.interp(frame, np.arange(len(times) + 1), np.append(times, last))

    def window_span(self, window: Window) -> tuple[float, float]:
        """``(start, end)`` seconds of a window, from the frames' timestamps."""
        if window.times is not None:
            return window.times
        return float(self.time_of(window.start)), float(self.time_of(window.end))

    @property
    def duration(self) -> float:
        """Seconds covered by the decoded frames."""
        return float(self.time_of(self.num_frames))

    @property
    def window_length(self) -> float:
        """Window length in seconds."""
        return self.window_seconds if self.window_seconds is not None else self.window_frames / self.fps

    @property
    def stride_length(self) -> float:
        """Stride in seconds."""
        return self.stride_seconds if self.stride_seconds is not None else self.stride_frames / self.fps

    def frame_bounds(self) -> np.ndarray:
        """``[W + 1]`` frame positions: window ``k`` owns ``[bounds[k], bounds[k+1])``, split between centres."""
        if not self.windows:
            return np.zeros(1)
        centres = np.array([(w.start + w.end) / 2 for w in self.windows], dtype=np.float64)
        inner = (centres[:-1] + centres[1:]) / 2
        return np.concatenate([[0.0], inner, [float(self.num_frames)]])

    def bounds(self) -> np.ndarray:
        """``[W + 1]`` seconds: window ``k`` owns ``[bounds[k], bounds[k+1])``, split at midpoints of centres."""
        return np.asarray(self.time_of(self.frame_bounds()), dtype=np.float64)

    def window_at(self, frame: int) -> int:
        """Index of the window that owns a frame (see :meth:`bounds`)."""
        inner = self.frame_bounds()[1:-1]
        return int(np.searchsorted(inner, frame + 0.5))

    def top_k(self, window: int, k: int) -> list[tuple[str, float]]:
        """The ``k`` most likely actions of one window with their probabilities."""
        row = self.probs[window]
        order = np.argsort(-row, kind="stable")[: max(1, min(k, len(row)))]
        return [(self.labels[i], float(row[i])) for i in order]

    def segments(self, min_score: float = 0.0, smooth: int = 1) -> list[Segment]:
        """Merged segments (see :func:`merge_segments`)."""
        return merge_segments(self.probs, self.bounds(), self.labels, min_score, smooth)

    def window_dict(self, window: Window, k: int) -> dict[str, Any]:
        """JSON-ready form of one window."""
        start, end = self.window_span(window)
        return {
            "index": window.index,
            "start": round(start, 3),
            "end": round(end, 3),
            "start_frame": window.start,
            "end_frame": window.end,
            "top_k": [{"label": label, "probability": round(p, 6)} for label, p in self.top_k(window.index, k)],
        }

    def to_dict(self, top_k: int = 5, min_score: float = 0.0, smooth: int = 1) -> dict[str, Any]:
        """The whole timeline as a JSON-ready dict."""
        return {
            "video": self.video,
            "fps": round(self.fps, 4),
            "num_frames": self.num_frames,
            "duration": round(self.duration, 3),
            "window": round(self.window_length, 4),
            "stride": round(self.stride_length, 4),
            "variable_frame_rate": self.times is not None,
            "pose_source": self.pose_source,
            "dropped_frames": self.dropped_frames,
            "warnings": list(self.warnings),
            "windows": [self.window_dict(w, top_k) for w in self.windows],
            "segments": [s.to_dict() for s in self.segments(min_score, smooth)],
            "seconds": {key: round(value, 3) for key, value in self.seconds.items()},
        }

    def write_json(self, path: str | Path, top_k: int = 5, min_score: float = 0.0, smooth: int = 1) -> None:
        """Write :meth:`to_dict` atomically."""
        write_json(path, self.to_dict(top_k, min_score, smooth))

    def write_csv(self, path: str | Path, top_k: int = 5) -> None:
        """One row per window and rank: ``window, start, end, rank, label, probability`` (atomically)."""
        with atomic_open(path, "w") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["window", "start", "end", "rank", "label", "probability"])
            for w in self.windows:
                for rank, (label, p) in enumerate(self.top_k(w.index, top_k), 1):
                    start, end = self.window_span(w)
                    writer.writerow([w.index, round(start, 3), round(end, 3), rank, label, f"{p:.6f}"])

    def format(self, top_k: int = 3, min_score: float = 0.0, smooth: int = 1) -> str:
        """A human-readable table of the windows and the segments."""
        lines = [
            f"{self.video}: {len(self.windows)} windows of {self.window_length:.2f} s every "
            f"{self.stride_length:.2f} s over {self.duration:.2f} s (poses: {self.pose_source})"
            + (", variable frame rate" if self.times is not None else "")
        ]
        for w in self.windows:
            lines.append(format_window(self, w, top_k))
        lines.append("segments:")
        lines += [f"  {s.start:8.2f} - {s.end:8.2f} s  {100 * s.score:6.2f}%  {s.label}"
                  for s in self.segments(min_score, smooth)]  # fmt: skip
        return "\n".join(lines)


def format_window(timeline: Timeline, window: Window, top_k: int = 3) -> str:
    """One line: the window's time span and its top-k actions."""
    best = ", ".join(f"{label} {100 * p:.1f}%" for label, p in timeline.top_k(window.index, top_k))
    start, end = timeline.window_span(window)
    return f"  {start:8.2f} - {end:8.2f} s  {best}"


def segment_colours(count: int) -> np.ndarray:
    """``[count, 3]`` distinct uint8 RGB colours (a fixed hue wheel), one per class."""
    hues = (np.arange(count) * 0.61803398875) % 1.0
    out = np.empty((count, 3), np.uint8)
    for i, h in enumerate(hues):
        sector, frac = int(h * 6) % 6, h * 6 - math.floor(h * 6)
        v, p, q, t = 0.9, 0.9 * 0.35, 0.9 * (1 - 0.65 * frac), 0.9 * (1 - 0.65 * (1 - frac))
        rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][sector]
        out[i] = [round(255 * c) for c in rgb]
    return out


def plot_timeline(timeline: Timeline, path: str | Path, min_score: float = 0.0, smooth: int = 1) -> Path:
    """A PNG of the timeline: each window's top-1 probability over time, and the merged segments below it.

    Args:
        timeline: The timeline.
        path: The PNG to write (atomically).
        min_score: Segments' minimum score.
        smooth: Windows averaged before merging.

    Returns:
        The written path.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    colours = segment_colours(len(timeline.labels)) / 255.0
    fig = Figure(figsize=(10, 3.2))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    bounds = timeline.bounds()
    used: list[int] = []
    for k in range(len(timeline.windows)):
        cls = int(np.argmax(timeline.probs[k]))
        used += [cls] if cls not in used else []
        top.fill_between([bounds[k], bounds[k + 1]], 0, timeline.probs[k, cls], color=colours[cls], step="pre")
    top.set_ylim(0, 1)
    top.set_ylabel("top-1 prob.")
    top.set_title(f"Timeline: {len(timeline.windows)} windows of {timeline.window_length:.2f} s "
                  f"every {timeline.stride_length:.2f} s")  # fmt: skip
    for seg in timeline.segments(min_score, smooth):
        cls = timeline.labels.index(seg.label)
        bottom.axvspan(seg.start, seg.end, color=colours[cls])
        bottom.text((seg.start + seg.end) / 2, 0.5, seg.label[:24], ha="center", va="center", fontsize=7, clip_on=True)
    bottom.set_yticks([])
    bottom.set_ylabel("segments")
    bottom.set_xlim(0, timeline.duration)
    bottom.set_xlabel("seconds")
    handles = [Patch(color=colours[c], label=timeline.labels[c][:40]) for c in used[:8]]
    top.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png", bbox_inches="tight")
    return path
