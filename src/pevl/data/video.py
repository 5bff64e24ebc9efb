"""Video decoding with PyAV: probing, random access to frames and streaming every frame.

All frames are RGB ``uint8`` arrays ``[H, W, 3]`` in *display orientation*: the display matrix a phone
writes for portrait recordings (FFmpeg's ``DISPLAYMATRIX`` side data, the old ``rotate`` tag) is applied,
so a portrait clip comes out portrait. A frame's index is its position in the decoder's output (display
order), counted from 0; timestamps are never turned into indices with ``pts * fps``, which is wrong for
variable-frame-rate videos.

A folder of numbered images (MMAction2 "rawframes", ``img_00001.jpg``) is read as a video too, by
:mod:`pevl.data.rawframes`: :func:`probe_video`, :func:`iter_frames` and :func:`read_frames` accept one.

Long videos are never held whole: :func:`read_frames` keeps only the frames it was asked for and, where the
container has reliable timestamps, seeks to the keyframe before a wanted frame instead of decoding the gap.
"""

from __future__ import annotations

import bisect
import functools
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from pevl.errors import PevlError, file_error

VIDEO_EXTENSIONS: tuple[str, ...] = (
    ".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ts", ".ogv",
)  # fmt: skip
"""File extensions treated as videos when a folder is scanned."""

# Containers whose packet timestamps are decode-order counters rather than presentation times: frames are
# located by counting from the start there, never by timestamp.
_UNRELIABLE_PTS_FORMATS = ("avi",)


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` learns about a video.

    Attributes:
        path: The video file.
        num_frames: Number of frames the decoder outputs (one per coded picture; container headers are not
            trusted).
        fps: Average frame rate (frames per second); for variable-frame-rate videos, frames over duration.
            0.0 when the container gives no timing at all.
        width: Frame width in display orientation (after rotation).
        height: Frame height in display orientation.
        rotation: Counter-clockwise rotation in degrees (0, 90, 180 or 270) applied to the stored frames to
            display them, as in FFmpeg's display matrix; a phone's portrait recording usually has 270.
        codec: Decoder name, e.g. ``"h264"``, ``"vp9"``, ``"mpeg4"``.
        declared_frames: Frame count the container header announces (0 when it gives none); far more than
            ``num_frames`` means a truncated file (see :attr:`truncated`).
    """

    path: Path
    num_frames: int
    fps: float
    width: int
    height: int
    rotation: int
    codec: str
    declared_frames: int = 0

    @property
    def truncated(self) -> bool:
        """Whether the header announces clearly more frames than can be decoded (a cut-off download or copy)."""
        return self.declared_frames - self.num_frames > max(2, 0.05 * self.declared_frames)


@dataclass(frozen=True)
class _Orientation:
    """How to turn a stored frame into the displayed one: transpose first, then flip rows / columns."""

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False

    def apply(self, image: np.ndarray) -> np.ndarray:
        if self.transpose:
            image = image.transpose(1, 0, 2)
        if self.flip_rows:
            image = image[::-1]
        if self.flip_cols:
            image = image[:, ::-1]
        return np.ascontiguousarray(image) if (self.transpose or self.flip_rows or self.flip_cols) else image

    @property
    def rotation(self) -> int:
        """Counter-clockwise rotation in degrees that this orientation amounts to (mirroring ignored)."""
        if not self.transpose:
            return 180 if (self.flip_rows and self.flip_cols) else 0
        # transpose + flip rows == rot90 counter-clockwise; transpose + flip columns == clockwise.
        if self.flip_rows and not self.flip_cols:
            return 90
        if self.flip_cols and not self.flip_rows:
            return 270
        return 0


def _orientation_of(frame: Any) -> _Orientation:
    """Read the display matrix of a decoded frame.

    FFmpeg's matrix maps a stored pixel (x, y) to the displayed (x', y') = (a x + c y, b x + d y), y pointing
    down, with ``[a, b, _, c, d, ...]`` the first five int32 entries (16.16 fixed point). Reading the matrix
    itself, not only ``frame.rotation``, keeps mirrored recordings right too.
    """
    for side_data in frame.side_data:
        if "DISPLAYMATRIX" not in str(side_data.type):
            continue
        raw = bytes(side_data)
        if len(raw) < 36:
            break
        m = struct.unpack("<9i", raw[:36])
        a, b, c, d = (round(v / 65536.0) for v in (m[0], m[1], m[3], m[4]))
        if a == 0 and d == 0 and b != 0 and c != 0:  # quarter turn: axes swap
            return _Orientation(transpose=True, flip_rows=b < 0, flip_cols=c < 0)
        if b == 0 and c == 0 and a != 0 and d != 0:
            return _Orientation(flip_rows=d < 0, flip_cols=a < 0)
        break  # an arbitrary angle: leave the frame as stored
    return _Orientation()


def _open(path: Path) -> tuple[Any, Any]:
    """Open ``path`` and return ``(container, video stream)``, raising a one-line error for bad input."""
    import av

    if not path.exists():
        raise file_error(path, "no such file")
    if not path.is_file():
        raise file_error(path, "not a file")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.FFmpegError as err:
        raise file_error(path, f"cannot open as a video ({_reason(err)})") from None
    if not container.streams.video:
        container.close()
        raise file_error(path, "not a video file (no video stream)")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return container, stream


def _reason(err: BaseException) -> str:
    text = getattr(err, "strerror", None) or str(err)
    return str(text).strip().rstrip(".").splitlines()[0] if text else type(err).__name__


def _to_rgb(frame: Any, orientation: _Orientation) -> np.ndarray:
    return orientation.apply(frame.to_ndarray(format="rgb24"))


@dataclass(frozen=True)
class _PacketTable:
    """Timing of one video from a pass over its packets (nothing decoded).

    Attributes:
        num_frames: Number of coded pictures.
        pts_sorted: Every packet's presentation timestamp in display order, so that a decoded frame's index is
            the rank of its pts; ``None`` when timestamps cannot be trusted (missing, duplicated, or AVI, whose
            timestamps count packets in decode order).
        keyframes: Display-order indices of the keyframes (only meaningful with ``pts_sorted``).
        duration: Seconds covered by the frames (0.0 when unknown).
        time_base: Seconds per ``pts`` tick (0.0 when unknown).
    """

    num_frames: int
    pts_sorted: np.ndarray | None
    keyframes: list[int]
    duration: float
    time_base: float = 0.0


def _packet_table(path: Path) -> _PacketTable:
    """The packet table of ``path``, remembered for the file's current size and modification time.

    A dataset probes a video and then reads frames from it; long videos have many packets, so the pass over
    them is done once per file version.
    """
    if not path.is_file():
        _open(path)  # raises the right error
    stat = path.stat()
    try:
        return _cached_packet_table(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    except PevlError:
        return _scan_packet_table(path)  # raises again, naming the path as the caller gave it


@functools.lru_cache(maxsize=64)
def _cached_packet_table(path_name: str, size: int, mtime_ns: int) -> _PacketTable:
    return _scan_packet_table(Path(path_name))


def _scan_packet_table(path: Path) -> _PacketTable:
    """One pass over the packets, counting those the decoder will output a frame for.

    Not counted: packets the container marks as discarded (before an edit list's start) and packets before
    the first keyframe (a clip cut mid-GOP by stream copy), which the decoder cannot decode.
    """
    import av

    container, stream = _open(path)
    packets: list[tuple[int | None, bool]] = []
    try:
        for packet in container.demux(stream):
            if packet.size == 0 or packet.is_discard:  # the flush packet at the end; edit-list leftovers
                continue
            packets.append((packet.pts, bool(packet.is_keyframe)))
    except av.FFmpegError as err:
        if not packets:
            raise file_error(path, f"unreadable video data ({_reason(err)})") from None
        # A truncated file: the packets before the damage are still usable.
    finally:
        time_base = stream.time_base
        format_names = container.format.name.split(",")
        container.close()
    first_key = next((i for i, (_, key) in enumerate(packets) if key), 0)
    pts = [p for p, _ in packets[first_key:]]
    keys = [i for i, (_, key) in enumerate(packets[first_key:]) if key]
    if not pts or any(p is None for p in pts) or any(n in format_names for n in _UNRELIABLE_PTS_FORMATS):
        return _PacketTable(len(pts), None, [], 0.0)
    values = np.asarray(pts, dtype=np.int64)
    order = np.argsort(values, kind="stable")
    pts_sorted = values[order]
    if np.any(np.diff(pts_sorted) == 0):
        return _PacketTable(len(pts), None, [], 0.0)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    keyframes = sorted(int(rank[k]) for k in keys)
    duration = 0.0
    if time_base is not None and len(pts_sorted) > 1:
        span = float((int(pts_sorted[-1]) - int(pts_sorted[0])) * time_base)
        duration = span * len(pts_sorted) / (len(pts_sorted) - 1)  # add the last frame's duration
    return _PacketTable(len(pts), pts_sorted, keyframes, duration, float(time_base) if time_base else 0.0)


def frame_times(path: str | Path) -> np.ndarray | None:
    """Presentation time of every frame of a video file in seconds from the first, in display order.

    From the packets' timestamps (nothing decoded); ``None`` where they cannot be trusted (AVI, missing or
    duplicated timestamps) or for a rawframe folder: frame ``i`` is then shown at ``i / fps``.
    """
    path = Path(path)
    if path.is_dir():
        return None
    table = _packet_table(path)
    if table.pts_sorted is None or table.time_base <= 0 or len(table.pts_sorted) == 0:
        return None
    return (table.pts_sorted - table.pts_sorted[0]).astype(np.float64) * table.time_base


def _fps(stream: Any, table: _PacketTable) -> float:
    if table.duration > 0:
        return table.num_frames / table.duration  # frames over time: right for variable frame rates too
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if isinstance(rate, Fraction) and rate > 0:
        return float(rate)
    return 0.0


def probe_video(path: str | Path) -> VideoInfo:
    """Read a video's frame count, frame rate, display size, rotation and codec.

    The frame count comes from a pass over the coded packets (fast: nothing is decoded), not from the
    container header, which is often missing or wrong; one frame is decoded to learn the display orientation.

    Args:
        path: A video file (mp4, avi, webm, mkv, ...) or a rawframe folder.

    Returns:
        The :class:`VideoInfo`.

    Raises:
        PevlError: The file is missing, is not a video, or holds no decodable frame.
    """
    import av

    path = Path(path)
    if path.is_dir():
        return _probe_rawframes(path)
    table = _packet_table(path)
    if table.num_frames == 0:
        raise file_error(path, "the video stream holds no frames")
    container, stream = _open(path)
    try:
        try:
            first = next(container.decode(stream), None)
        except av.FFmpegError as err:
            raise file_error(path, f"cannot decode the video ({_reason(err)})") from None
        if first is None:
            raise file_error(path, "the video stream holds no decodable frame")
        orientation = _orientation_of(first)
        width, height = (first.height, first.width) if orientation.transpose else (first.width, first.height)
        return VideoInfo(
            path=path,
            num_frames=table.num_frames,
            fps=_fps(stream, table),
            width=int(width),
            height=int(height),
            rotation=orientation.rotation,
            codec=stream.codec_context.name,
            declared_frames=int(stream.frames or 0),
        )
    finally:
        container.close()


def _probe_rawframes(folder: Path) -> VideoInfo:
    """:class:`VideoInfo` of a rawframe folder (no frame rate: 0.0; codec ``"rawframes"``)."""
    from pevl.data.rawframes import probe_rawframes

    info = probe_rawframes(folder)
    return VideoInfo(folder, info.num_frames, 0.0, info.width, info.height, 0, "rawframes")


def iter_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Decode every frame of a video, one at a time.

    Args:
        path: A video file or a rawframe folder.

    Yields:
        RGB ``uint8`` frames ``[H, W, 3]`` in display orientation, in display order.

    Raises:
        PevlError: The file is missing or not a video, or its data cannot be decoded (raised when reached;
            the frames before the damage have been yielded).
    """
    import av

    path = Path(path)
    if path.is_dir():
        from pevl.data.rawframes import iter_rawframes

        yield from iter_rawframes(path)
        return
    container, stream = _open(path)
    orientation: _Orientation | None = None
    index = 0
    try:
        try:
            for frame in container.decode(stream):
                if orientation is None:
                    orientation = _orientation_of(frame)
                yield _to_rgb(frame, orientation)
                index += 1
        except av.FFmpegError as err:
            raise file_error(path, f"corrupt video data after frame {index} ({_reason(err)})") from None
    finally:
        container.close()


def read_frames(path: str | Path, indices: Sequence[int]) -> np.ndarray:
    """Decode the frames at the given indices.

    Each wanted frame is decoded once, in increasing order, and copied into place, so ``indices`` may repeat
    and come in any order; only the wanted frames are kept in memory. Where timestamps are reliable (mp4, mov,
    mkv, webm) a gap that spans a keyframe is skipped by seeking to that keyframe; otherwise the decoder runs
    through the gap without converting the frames it passes.

    Args:
        path: A video file or a rawframe folder.
        indices: Display-order frame indices, each in ``[0, num_frames)``.

    Returns:
        ``[len(indices), H, W, 3]`` RGB ``uint8`` frames in display orientation.

    Raises:
        PevlError: The file is missing or not a video, an index is out of range, or the video breaks before a
            wanted frame.
    """
    import av

    path = Path(path)
    if path.is_dir():
        from pevl.data.rawframes import read_rawframes

        return read_rawframes(path, list(indices))
    wanted = np.asarray(list(indices), dtype=np.int64).reshape(-1)
    if wanted.size == 0:
        info = probe_video(path)
        return np.zeros((0, info.height, info.width, 3), dtype=np.uint8)
    if wanted.min() < 0:
        raise file_error(path, f"negative frame index {int(wanted.min())} requested")
    table = _packet_table(path)
    if wanted.max() >= table.num_frames:
        count = f"{table.num_frames} frame{'s' if table.num_frames != 1 else ''}"
        raise file_error(path, f"frame {int(wanted.max())} requested but the video has {count}")
    unique = sorted(set(wanted.tolist()))
    try:
        decoded = _decode_by_seeking(path, table, unique) if len(table.keyframes) > 1 else None
        if decoded is None:
            decoded = _decode_by_counting(path, unique)
    except av.FFmpegError as err:
        raise file_error(path, f"corrupt video data ({_reason(err)})") from None
    missing = [i for i in unique if i not in decoded]
    if missing:
        raise file_error(path, f"frame {missing[0]} could not be decoded (damaged or truncated video)")
    out = np.empty((len(wanted), *decoded[unique[0]].shape), dtype=np.uint8)
    for row, index in enumerate(wanted.tolist()):
        out[row] = decoded[index]
    return out


# Seek only when it skips at least this many frames: a seek flushes the (multi-threaded) decoder.
_MIN_FRAMES_SKIPPED_BY_SEEK = 8


def _decode_by_counting(path: Path, unique: list[int]) -> dict[int, np.ndarray]:
    """Decode from the start, numbering frames by their output position, and keep the wanted ones."""
    wanted = set(unique)
    last = unique[-1]
    decoded: dict[int, np.ndarray] = {}
    orientation: _Orientation | None = None
    container, stream = _open(path)
    try:
        for index, frame in enumerate(container.decode(stream)):
            if orientation is None:
                orientation = _orientation_of(frame)
            if index in wanted:
                decoded[index] = _to_rgb(frame, orientation)
            if index >= last:
                break
    finally:
        container.close()
    return decoded


def _decode_by_seeking(path: Path, table: _PacketTable, unique: list[int]) -> dict[int, np.ndarray] | None:
    """Decode the wanted frames, seeking to the keyframe before a target when that skips enough frames.

    A decoded frame's index is the rank of its timestamp in the packet table. Returns ``None`` when the
    decoder's timestamps disagree with the table, so the caller counts frames from the start instead.
    """
    assert table.pts_sorted is not None
    pts_sorted = table.pts_sorted
    keyframes = table.keyframes

    def keyframe_before(index: int) -> int:
        position = bisect.bisect_right(keyframes, index) - 1
        return keyframes[position] if position >= 0 else 0

    # Group the targets into runs decoded after one seek each.
    runs: list[tuple[int, list[int]]] = []
    previous = -1
    for target in unique:
        key = keyframe_before(target)
        if not runs or key - previous > _MIN_FRAMES_SKIPPED_BY_SEEK:
            runs.append((key, [target]))
        else:
            runs[-1][1].append(target)
        previous = target

    decoded: dict[int, np.ndarray] = {}
    orientation: _Orientation | None = None
    container, stream = _open(path)
    try:
        for key, targets in runs:
            container.seek(int(pts_sorted[key]), stream=stream, backward=True, any_frame=False)
            pending = iter(targets)
            target: int | None = next(pending)
            last_index = -1
            for frame in container.decode(stream):
                index = _rank(pts_sorted, frame.pts)
                if index is None or index <= last_index:
                    return None  # timestamps unknown to the table, or going backwards
                last_index = index
                if index < target:
                    continue
                if index > target:
                    return None  # the decoder skipped the target: let counting from the start decide
                if orientation is None:
                    orientation = _orientation_of(frame)
                decoded[index] = _to_rgb(frame, orientation)
                target = next(pending, None)
                if target is None:
                    break
            if target is not None:
                return None  # the stream ended early: let counting from the start decide
    finally:
        container.close()
    return decoded


def _rank(pts_sorted: np.ndarray, pts: int | None) -> int | None:
    """Display index of the frame with timestamp ``pts``, or ``None`` if no packet has it."""
    if pts is None:
        return None
    index = int(np.searchsorted(pts_sorted, pts))
    return index if index < len(pts_sorted) and int(pts_sorted[index]) == pts else None
