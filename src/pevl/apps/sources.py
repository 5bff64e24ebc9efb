"""Frame sources for long and live input: a video file, a stream on stdin (``-``), a URL or a capture device.

A :class:`FrameSource` yields :class:`SourceFrame` items in display order (the display matrix of portrait
recordings applied, as in :mod:`pevl.data.video`), converting a frame to RGB only when asked, so frames that no
window needs cost only their decoding.

Live sources (stdin, URLs, devices, or any source opened with ``live=True``) are read on a background thread
into a bounded buffer; when processing falls behind, the oldest buffered frames are dropped (and counted), so
memory and latency stay bounded whatever the input rate. A file is read on a background thread too (decoding
overlaps pose estimation on another core), but nothing is dropped: the reader waits.
"""

from __future__ import annotations

import collections
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from pevl.data.video import _Orientation, _orientation_of, _reason, probe_video
from pevl.errors import PevlError, file_error

STDIN = "-"
"""The source name that reads a stream from standard input."""
FRAME_TIMEOUT_S = 300.0
"""Seconds without a frame after which a decoder (file or live) is reported stuck."""


@dataclass
class SourceFrame:
    """One decoded frame: its display-order index, its time, and the decoded picture."""

    index: int
    time: float  # seconds from the start (index / fps when the stream gives no timestamps)
    frame: Any  # av.VideoFrame
    orientation: _Orientation
    _rgb: np.ndarray | None = None

    def rgb(self) -> np.ndarray:
        """``[H, W, 3]`` RGB uint8 in display orientation (converted once, on first use)."""
        if self._rgb is None:
            self._rgb = self.orientation.apply(self.frame.to_ndarray(format="rgb24"))
        return self._rgb


def is_live_name(source: str) -> bool:
    """Whether a source name is a stream rather than a file: ``-``, a URL (``scheme://``) or a device path."""
    return source == STDIN or "://" in source or source.startswith("/dev/")


class FrameSource:
    """Frames of a file or a live stream, decoded once, in order.

    Args:
        source: A video file, ``-`` for stdin, a URL (``rtsp://``, ``http://``, ``udp://``...) or a device.
        live: Treat the source as live (bounded buffer, frames dropped when behind); default: by its name.
        input_format: FFmpeg input format for sources that cannot be probed (``v4l2``, ``mpegts``, ...).
        buffer_seconds: How much video a live source may buffer before old frames are dropped.

    Raises:
        PevlError: The source cannot be opened or holds no video stream (one line naming it).
    """

    def __init__(
        self, source: str | Path, live: bool | None = None, input_format: str | None = None,
        buffer_seconds: float = 2.0,
    ) -> None:  # fmt: skip
        import av

        self.name = str(source)
        self.live = is_live_name(self.name) if live is None else live
        self.dropped = 0
        self.num_frames: int | None = None
        if not self.live:
            info = probe_video(Path(self.name))  # frame count and rate from the packets; errors name the file
            self.num_frames = info.num_frames
        options: dict[str, str] | None = None
        try:
            target: Any = sys.stdin.buffer if self.name == STDIN else self.name
            if not self.live and Path(self.name).is_dir():  # a rawframe folder: FFmpeg's image2 sequence reader
                from pevl.data.rawframes import ffmpeg_image_sequence

                target, input_format, options = ffmpeg_image_sequence(self.name)
            self._container = av.open(
                target, mode="r", format=input_format, options=options, metadata_errors="ignore"
            )
        except av.FFmpegError as err:
            raise file_error(self.name, f"cannot open as a video ({_reason(err)})") from None
        except OSError as err:
            raise file_error(self.name, f"cannot open ({err.strerror or err})") from None
        if not self._container.streams.video:
            self._container.close()
            raise file_error(self.name, "not a video (no video stream)")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        rate = self._stream.average_rate or self._stream.guessed_rate or self._stream.base_rate
        self.fps = info.fps if not self.live and info.fps > 0 else (float(rate) if rate else 0.0)
        if self.fps <= 0:
            self.fps = 25.0  # no timing at all: a common default keeps seconds meaningful
        close = rate is not None and rate > 0 and abs(float(rate) - self.fps) <= 0.01 * self.fps
        self.rate = Fraction(rate) if close else Fraction(self.fps).limit_denominator(1001)
        """The frame rate as a fraction (the stream's own where it agrees with ``fps``), for writing videos."""
        # A file waits for the consumer (a few frames of look-ahead); a live source keeps ``buffer_seconds``.
        self._capacity = max(4, int(round(buffer_seconds * self.fps))) if self.live else 8
        self.want_rgb: Callable[[int], bool] | None = None  # files: frames converted ahead on the reader thread
        self.decode_seconds = 0.0  # time spent decoding (on the reader thread)
        self._closed = False

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the container."""
        if not self._closed:
            self._closed = True
            self._container.close()

    def _decode(self) -> Iterator[SourceFrame]:
        import av

        orientation: _Orientation | None = None
        index = 0
        start_pts: int | None = None
        time_base = self._stream.time_base
        try:
            started = time.perf_counter()
            for frame in self._container.decode(self._stream):
                if orientation is None:
                    orientation = _orientation_of(frame)
                if frame.pts is not None and time_base is not None and self.live:
                    start_pts = frame.pts if start_pts is None else start_pts
                    seconds = float((frame.pts - start_pts) * time_base)
                else:
                    seconds = index / self.fps
                self.decode_seconds += time.perf_counter() - started
                yield SourceFrame(index, seconds, frame, orientation)
                index += 1
                started = time.perf_counter()
        except av.FFmpegError as err:
            if self.live and index > 0:
                return  # a live stream that ends mid-packet: the frames so far are what there is
            where = f"after frame {index}" if index else "before the first frame"
            raise file_error(self.name, f"corrupt or truncated video data {where} ({_reason(err)})") from None
        if index == 0:
            raise file_error(self.name, "the video stream holds no decodable frame")
        if self.num_frames is not None and index < self.num_frames:
            raise file_error(self.name, f"truncated video: decoded {index} of {self.num_frames} frames")

    def __iter__(self) -> Iterator[SourceFrame]:
        """Decode on a background thread; yield the frames in order (dropping the oldest when a live one lags)."""
        buffer: collections.deque = collections.deque()
        condition = threading.Condition()
        stop = threading.Event()
        end = object()
        capacity = self._capacity

        def produce() -> None:
            try:
                for item in self._decode():
                    if not self.live and self.want_rgb is not None and self.want_rgb(item.index):
                        started = time.perf_counter()
                        item.rgb()  # converted on this thread: the consumer runs the pose model meanwhile
                        self.decode_seconds += time.perf_counter() - started
                    with condition:
                        while not self.live and len(buffer) >= capacity and not stop.is_set():
                            condition.wait(0.1)
                        if stop.is_set():
                            return
                        if self.live and len(buffer) >= capacity:
                            buffer.popleft()
                            self.dropped += 1
                        buffer.append(item)
                        condition.notify_all()
                outcome: object = end
            except BaseException as err:  # handed to the consumer, which re-raises it
                outcome = err
            with condition:
                buffer.append(outcome)
                condition.notify_all()

        worker = threading.Thread(target=produce, name="pevl-source", daemon=True)
        worker.start()
        try:
            while True:
                with condition:
                    waited = time.monotonic()
                    while not buffer:
                        if time.monotonic() - waited > FRAME_TIMEOUT_S:
                            raise file_error(self.name, f"no frame for {FRAME_TIMEOUT_S:g} s (stuck decoder or stream)")
                        condition.wait(0.1)
                    item = buffer.popleft()
                    condition.notify_all()
                if item is end:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            with condition:
                condition.notify_all()
            if not self.live:
                worker.join(FRAME_TIMEOUT_S)  # it sees ``stop`` within 0.1 s unless the decoder is stuck (daemon)
            if not worker.is_alive():
                self.close()


def require_source(source: str) -> None:
    """Raise a one-line error when a file source does not exist (live names are checked when opened)."""
    if not is_live_name(source) and not Path(source).exists():
        raise file_error(source, "no such file")
    if source == STDIN and sys.stdin is None:
        raise PevlError("-: no standard input to read from")
