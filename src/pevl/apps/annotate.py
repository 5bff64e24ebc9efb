"""An annotated copy of a video: the skeleton on every frame, the current window's top-3 actions, a timeline bar.

Drawing is plain numpy on the decoded frames (text glyphs come from matplotlib's FreeType bindings, rendered once
per window), so it keeps up with decoding. The output has the input's frame count, size, frame rate and display
orientation (frames are decoded upright and written upright, so a portrait phone video stays portrait); audio is
dropped. It is encoded with H.264 where PyAV has an encoder for it, else MPEG-4 Part 2, into a temporary file
that is renamed only when complete: an error or Ctrl-C leaves no partial video.
"""

from __future__ import annotations

import functools
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from pevl.apps.sources import FrameSource
from pevl.apps.timeline import Timeline, segment_colours
from pevl.data.pose.layouts import COCO17_BONES
from pevl.errors import PevlError, file_error
from pevl.utils.io import atomic_path

VFR_TIME_BASE = 90_000
"""Ticks per second of the annotated copy of a variable-frame-rate video (MPEG's 90 kHz clock)."""
_LIMB_COLOUR = np.array([235, 235, 235], np.uint8)


def confidence_colour(score: np.ndarray) -> np.ndarray:
    """``[..., 3]`` uint8 colours for scores in [0, 1]: red (unsure) through yellow to green (confident)."""
    s = np.clip(np.asarray(score, np.float32), 0.0, 1.0)[..., None]
    red = np.array([230, 40, 40], np.float32)
    yellow = np.array([240, 220, 40], np.float32)
    green = np.array([40, 210, 70], np.float32)
    low = red + (yellow - red) * np.clip(s * 2, 0, 1)
    colour = np.where(s < 0.5, low, yellow + (green - yellow) * np.clip(s * 2 - 1, 0, 1))
    return colour.round().astype(np.uint8)


def _fill(image: np.ndarray, x0: float, y0: float, x1: float, y1: float, radius: float, colour: np.ndarray) -> None:
    """Paint the pixels within ``radius`` of the segment (x0, y0)-(x1, y1) (a disc when both ends agree)."""
    height, width = image.shape[:2]
    left, right = int(max(0, np.floor(min(x0, x1) - radius))), int(min(width, np.ceil(max(x0, x1) + radius) + 1))
    top, bottom = int(max(0, np.floor(min(y0, y1) - radius))), int(min(height, np.ceil(max(y0, y1) + radius) + 1))
    if left >= right or top >= bottom:
        return
    ys, xs = np.mgrid[top:bottom, left:right].astype(np.float32)
    dx, dy = x1 - x0, y1 - y0
    length2 = dx * dx + dy * dy
    t = np.clip(((xs - x0) * dx + (ys - y0) * dy) / length2, 0.0, 1.0) if length2 > 0 else 0.0
    distance2 = (xs - x0 - t * dx) ** 2 + (ys - y0 - t * dy) ** 2
    image[top:bottom, left:right][distance2 <= radius * radius] = colour


def draw_skeleton(
    image: np.ndarray, keypoint: np.ndarray, score: np.ndarray, scale: tuple[float, float] = (1.0, 1.0)
) -> None:
    """Draw one person's COCO-17 skeleton in place: limbs in light grey, joints coloured by confidence.

    Joints with score 0 (missing) are left out, and so are the limbs that touch them.

    Args:
        image: ``[H, W, 3]`` uint8, modified in place.
        keypoint: ``[17, 2]`` pixels in the pose image.
        score: ``[17]``.
        scale: ``(sx, sy)`` from pose-image pixels to ``image`` pixels.
    """
    height, width = image.shape[:2]
    radius = max(2.0, min(height, width) / 120)
    points = keypoint * np.asarray(scale, np.float32)
    present = (score > 0) & np.isfinite(points).all(axis=-1)
    for a, b in COCO17_BONES:
        if present[a] and present[b]:
            _fill(image, *points[a], *points[b], radius * 0.5, _LIMB_COLOUR)
    colours = confidence_colour(score)
    for j in np.flatnonzero(present):
        _fill(image, *points[j], *points[j], radius, colours[j])


@functools.lru_cache(maxsize=1)
def _font_path() -> str:
    from matplotlib import font_manager

    return font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans"))


def render_text(lines: list[str], size: int) -> np.ndarray:
    """``[h, w]`` float32 coverage in [0, 1] of white text lines of ``size`` pixels, left-aligned."""
    from matplotlib.ft2font import FT2Font

    font = FT2Font(_font_path())
    bitmaps = []
    for line in lines:
        font.set_size(size, 72)
        font.set_text(line or " ", 0.0)
        font.draw_glyphs_to_bitmap(antialiased=True)
        bitmaps.append(np.asarray(font.get_image(), dtype=np.float32) / 255.0)
    gap = max(1, size // 4)
    width = max(b.shape[1] for b in bitmaps)
    out = np.zeros((sum(b.shape[0] for b in bitmaps) + gap * (len(bitmaps) - 1), width), np.float32)
    row = 0
    for b in bitmaps:
        out[row : row + b.shape[0], : b.shape[1]] = b
        row += b.shape[0] + gap
    return out


def _blend_label(image: np.ndarray, coverage: np.ndarray, margin: int) -> None:
    """Paint text coverage onto a translucent dark box at the top-left corner."""
    height, width = image.shape[:2]
    h = min(coverage.shape[0] + 2 * margin, height)
    w = min(coverage.shape[1] + 2 * margin, width)
    box = image[:h, :w].astype(np.float32) * 0.45
    text = np.zeros((h, w), np.float32)
    th = max(0, min(coverage.shape[0], h - margin))  # a frame smaller than the margin shows the box alone
    tw = max(0, min(coverage.shape[1], w - margin))
    text[margin : margin + th, margin : margin + tw] = coverage[:th, :tw]
    box = box * (1 - text[..., None]) + 255.0 * text[..., None]
    image[:h, :w] = box.round().astype(np.uint8)


class _Overlay:
    """The per-window text and the timeline bar of one video, built once and stamped on every frame."""

    def __init__(self, timeline: Timeline, height: int, width: int, top_k: int) -> None:
        self.timeline = timeline
        self.top_k = top_k
        self.size = max(10, round(min(height, width) / 22))
        self.bar_height = min(height, max(6, round(height / 40)))  # a tiny video is all bar rather than a crash
        colours = segment_colours(len(timeline.labels))
        bar = np.zeros((self.bar_height, width, 3), np.uint8)
        bounds = timeline.bounds() / max(timeline.duration, 1e-9) * width  # the bar is a time axis
        for k in range(len(timeline.windows)):
            cls = int(np.argmax(timeline.probs[k]))
            shade = 0.35 + 0.65 * float(timeline.probs[k, cls])
            bar[:, int(round(bounds[k])) : int(round(bounds[k + 1]))] = (colours[cls] * shade).astype(np.uint8)
        self.bar = bar
        self.inner = timeline.frame_bounds()[1:-1]  # frame positions where one window hands over
        self._text: dict[int, np.ndarray] = {}

    def text(self, window: int) -> np.ndarray:
        if window not in self._text:
            lines = [f"{rank}. {label}  {100 * p:.1f}%"
                     for rank, (label, p) in enumerate(self.timeline.top_k(window, self.top_k), 1)]  # fmt: skip
            self._text = {window: render_text(lines, self.size)}  # one window at a time: frames come in order
        return self._text[window]

    def stamp(self, image: np.ndarray, frame: int) -> None:
        if not self.timeline.windows:
            return
        window = int(np.searchsorted(self.inner, frame + 0.5))  # as Timeline.window_at, bounds computed once
        _blend_label(image, self.text(window), margin=max(3, self.size // 3))
        height, width = image.shape[:2]
        bar = self.bar.copy()
        cursor = min(width - 1, int(float(self.timeline.time_of(frame)) / max(self.timeline.duration, 1e-9) * width))
        bar[:, max(0, cursor - 1) : cursor + 2] = 255
        image[height - self.bar_height :] = bar


def _encoder() -> str:
    import av

    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def annotate_video(video: str | Path, timeline: Timeline, out: str | Path, top_k: int = 3) -> Path:
    """Write the annotated copy of a video.

    Args:
        video: The video file the timeline was computed on.
        timeline: Its timeline, with per-frame poses (``keep_poses=True``) to draw skeletons.
        out: The output video (``.mp4``; written atomically).
        top_k: Actions listed per window.

    Returns:
        The written path.

    Raises:
        PevlError: The video cannot be decoded, or it does not match the timeline.
    """
    import av

    out = Path(out)
    if out.suffix.lower() not in (".mp4", ".mov", ".mkv"):
        raise file_error(out, "the annotated video must be .mp4, .mov or .mkv")
    vfr_base = VFR_TIME_BASE if timeline.times is not None else None
    with FrameSource(video, live=False) as source:
        rate = source.rate
        with atomic_path(out) as tmp:
            with av.open(str(tmp), mode="w") as container:
                stream: Any = None
                overlay: _Overlay | None = None
                count = 0
                for item in source:
                    image = np.array(item.rgb(), copy=True)
                    height, width = image.shape[:2]
                    if stream is None:
                        stream = _open_stream(container, rate, width, height, vfr_base)
                        overlay = _Overlay(timeline, height, width, top_k)
                    if timeline.keypoint is not None and item.index < len(timeline.keypoint):
                        sy, sx = height / timeline.img_shape[0], width / timeline.img_shape[1]
                        draw_skeleton(image, timeline.keypoint[item.index], timeline.keypoint_score[item.index],
                                      (sx, sy))  # fmt: skip
                    assert overlay is not None
                    overlay.stamp(image, item.index)
                    frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                    frame.time_base = stream.codec_context.time_base
                    # The input's presentation times: a variable-frame-rate video keeps its timing.
                    shown = float(timeline.time_of(item.index))
                    frame.pts = item.index if vfr_base is None else round(shown * vfr_base)
                    container.mux(stream.encode(frame))
                    count += 1
                if stream is None:
                    raise file_error(video, "no frames to annotate")
                container.mux(stream.encode(None))
            if count != timeline.num_frames:
                raise file_error(video, f"decoded {count} frames but the timeline has {timeline.num_frames}")
    return out


def _open_stream(container: Any, rate: Fraction, width: int, height: int, vfr_base: int | None = None) -> Any:
    """An H.264 (or MPEG-4) stream of the input's size and rate; 4:4:4 chroma when a side is odd.

    ``vfr_base``: ticks per second of the frame timestamps of a variable-frame-rate video (``None``: one tick per
    frame at ``rate``).
    """
    codec = _encoder()
    even = width % 2 == 0 and height % 2 == 0
    if codec == "mpeg4" and not even:
        raise PevlError(f"this PyAV has no H.264 encoder and MPEG-4 needs even frame sides (got {width}x{height})")
    stream = container.add_stream(codec, rate=rate)
    stream.width, stream.height = width, height
    stream.pix_fmt = "yuv420p" if even else "yuv444p"
    stream.codec_context.time_base = Fraction(1, 1) / rate if vfr_base is None else Fraction(1, vfr_base)
    if codec == "libx264":
        stream.options = {"preset": "veryfast", "crf": "20"}
    else:
        stream.bit_rate = max(1_000_000, width * height * 4)
    return stream
