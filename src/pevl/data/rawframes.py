"""Rawframe folders: a video stored as numbered images (MMAction2's ``img_00001.jpg``, FineGym's frames).

A folder is a rawframe folder when it holds numbered image files (``.jpg``, ``.jpeg``, ``.png``, ``.bmp``). The
frames are the files of the folder's main sequence: ``img_<number>`` when present (MMAction2's RGB frames;
its optical-flow ``flow_x_`` / ``flow_y_`` files are ignored), else the largest group of files sharing a name
prefix and extension. They are ordered by number; frame index ``i`` is the ``i``-th file, so a sequence may
start at 0 or 1. Images are decoded with Pillow.

:mod:`pevl.data.video` hands folders to this module, so :func:`pevl.data.video.probe_video`,
:func:`~pevl.data.video.iter_frames` and :func:`~pevl.data.video.read_frames` (and so ``extract-poses``,
``predict``, ``explain`` and the datasets) accept a rawframe folder wherever they accept a video.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pevl.errors import file_error

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp")
"""Image files that can be frames."""

_NUMBERED = re.compile(r"^(?P<prefix>.*?)(?P<number>\d+)(?P<ext>\.[A-Za-z]+)$")


@dataclass(frozen=True)
class FrameSequence:
    """The frames of a rawframe folder.

    Attributes:
        folder: The folder.
        files: The frame files in order.
        numbers: The number in each file's name.
    """

    folder: Path
    files: tuple[Path, ...]
    numbers: tuple[int, ...]


def _group_key(prefix: str, ext: str) -> tuple[int, str, str]:
    # img_ first (MMAction2 RGB frames), then anything but optical flow.
    rank = 0 if prefix.lower() == "img_" else (2 if prefix.lower().startswith("flow") else 1)
    return rank, prefix, ext.lower()


def find_frames(folder: str | Path) -> FrameSequence | None:
    """The main numbered image sequence of a folder, or ``None`` when it holds none (or is not a folder)."""
    folder = Path(folder)
    try:
        names = [entry.name for entry in _scandir(folder)]
    except OSError:
        return None
    groups: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for name in names:
        match = _NUMBERED.match(name)
        if match is None or match.group("ext").lower() not in IMAGE_EXTENSIONS or name.startswith("."):
            continue
        groups.setdefault((match.group("prefix"), match.group("ext")), []).append((int(match.group("number")), name))
    if not groups:
        return None
    best = min(groups, key=lambda key: (_group_key(*key)[0], -len(groups[key]), _group_key(*key)[1:]))
    frames = sorted(groups[best])
    return FrameSequence(folder, tuple(folder / name for _, name in frames), tuple(n for n, _ in frames))


def _scandir(folder: Path) -> list[os.DirEntry]:
    with os.scandir(folder) as entries:
        return [entry for entry in entries if entry.is_file()]


def is_rawframe_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder of numbered image frames."""
    path = Path(path)
    return path.is_dir() and find_frames(path) is not None


def _require(folder: Path) -> FrameSequence:
    if not folder.exists():
        raise file_error(folder, "no such file or folder")
    frames = find_frames(folder)
    if frames is None:
        raise file_error(
            folder, f"a folder without numbered frame images (e.g. img_00001.jpg; {', '.join(IMAGE_EXTENSIONS)})"
        )
    return frames


@dataclass(frozen=True)
class RawframeInfo:
    """What :func:`probe_rawframes` learns: the frame count and the size of the first frame."""

    num_frames: int
    width: int
    height: int


def probe_rawframes(folder: str | Path) -> RawframeInfo:
    """Frame count and size of a rawframe folder (only the first image's header is read).

    Raises:
        PevlError: Not a rawframe folder, or its first image cannot be read.
    """
    frames = _require(Path(folder))
    from PIL import Image

    try:
        with Image.open(frames.files[0]) as image:
            width, height = image.size
    except (OSError, ValueError) as err:
        raise file_error(frames.files[0], f"cannot read the frame image ({type(err).__name__})") from None
    return RawframeInfo(len(frames.files), int(width), int(height))


def _load(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError) as err:
        raise file_error(path, f"cannot read the frame image ({type(err).__name__})") from None


def iter_rawframes(folder: str | Path) -> Iterator[np.ndarray]:
    """Decode every frame of a rawframe folder in order: RGB ``uint8`` ``[H, W, 3]``.

    Raises:
        PevlError: Not a rawframe folder, or a frame image cannot be read (raised when reached).
    """
    for path in _require(Path(folder)).files:
        yield _load(path)


def frame_range(folder: str | Path, start: int | None, count: int, offset: int = 0) -> tuple[Path, ...]:
    """The files numbered ``start + offset`` onwards, ``count`` of them (an MMAction2 rawframe list line).

    Args:
        folder: The rawframe folder.
        start: Number of the folder's first frame (MMAction2's ``start_index``); ``None``: its first file's.
        count: How many frames (the line's ``total_frames``).
        offset: Frames skipped before the clip (the line's offset, ``with_offset`` lists).

    Raises:
        PevlError: Not a rawframe folder, or a file of the range is missing (naming its number).
    """
    folder = Path(folder)
    frames = _require(folder)
    by_number = dict(zip(frames.numbers, frames.files, strict=True))
    first = (frames.numbers[0] if start is None else start) + offset
    missing = next((n for n in range(first, first + count) if n not in by_number), None)
    if missing is not None:
        raise file_error(
            folder,
            f"frame file number {missing} is missing: the list gives {count} frames from number {first}, the "
            f"folder has {len(frames.files)} numbered {frames.numbers[0]}..{frames.numbers[-1]}",
        )
    return tuple(by_number[n] for n in range(first, first + count))


def covers_folder(folder: str | Path, start: int | None, count: int, offset: int = 0) -> bool:
    """Whether :func:`frame_range` of these arguments is the whole folder (``False`` when it is unreadable)."""
    frames = find_frames(folder)
    if frames is None:
        return False
    first = (frames.numbers[0] if start is None else start) + offset
    return frames.numbers == tuple(range(first, first + count))


def iter_frame_files(files: Sequence[Path]) -> Iterator[np.ndarray]:
    """Decode the given frame files in order (see :func:`frame_range`)."""
    for path in files:
        yield _load(path)


def read_rawframes(folder: str | Path, indices: Sequence[int]) -> np.ndarray:
    """Decode the frames at the given 0-based indices (the ``i``-th frame file in number order).

    Returns:
        ``[len(indices), H, W, 3]`` RGB ``uint8``.

    Raises:
        PevlError: Not a rawframe folder, an index out of range, an unreadable image, or frames of different
            sizes.
    """
    folder = Path(folder)
    frames = _require(folder)
    files = frames.files
    return _stack(folder, [(int(i), _checked(folder, files, int(i))) for i in indices])


def _checked(folder: Path, files: tuple[Path, ...], index: int) -> Path:
    if not 0 <= index < len(files):
        raise file_error(folder, f"frame {index} requested but the folder has {len(files)} frames")
    return files[index]


def read_template_frames(
    folder: str | Path, indices: Sequence[int], template: str = "img_{:05d}.jpg", start: int = 1
) -> np.ndarray:
    """Decode frames named by an MMAction2 ``filename_tmpl``: file ``template.format(index + start)``.

    Args:
        folder: The frame folder.
        indices: 0-based frame indices (an MMAction2 offset is added by the caller).
        template: File name pattern, e.g. ``"img_{:05d}.jpg"``.
        start: Number of the first frame file (MMAction2's ``start_index``, 1 by default).

    Returns:
        ``[len(indices), H, W, 3]`` RGB ``uint8``.

    Raises:
        PevlError: A frame file is missing or unreadable, or the frames differ in size.
    """
    folder = Path(folder)
    return _stack(folder, [(int(i), folder / template.format(int(i) + start)) for i in indices])


def _stack(folder: Path, wanted: list[tuple[int, Path]]) -> np.ndarray:
    decoded: dict[Path, np.ndarray] = {}
    for _, path in wanted:
        if path not in decoded:
            decoded[path] = _load(path)
    if not wanted:
        info = probe_rawframes(folder)
        return np.zeros((0, info.height, info.width, 3), np.uint8)
    shapes = {decoded[path].shape for _, path in wanted}
    if len(shapes) > 1:
        raise file_error(folder, f"frames of different sizes ({', '.join(str(s[:2]) for s in sorted(shapes))})")
    return np.stack([decoded[path] for _, path in wanted])


def ffmpeg_image_sequence(folder: str | Path, fps: float = 25.0) -> tuple[str, str, dict[str, str]]:
    """How FFmpeg (PyAV's ``av.open``) opens a rawframe folder as a video stream.

    Args:
        folder: The rawframe folder.
        fps: Frame rate given to the stream (rawframes carry none).

    Returns:
        ``(pattern, format, options)`` for ``av.open(pattern, format=format, options=options)``.

    Raises:
        PevlError: Not a rawframe folder, or its frame numbers have gaps or mixed widths (FFmpeg's image
            sequences need ``prefix%05d.jpg``-style names without holes).
    """
    frames = _require(Path(folder))
    numbers = [_NUMBERED.match(f.name).group("number") for f in frames.files]  # type: ignore[union-attr]
    padded = any(n.startswith("0") and len(n) > 1 for n in numbers)
    widths = {len(n) for n in numbers}
    contiguous = frames.numbers == tuple(range(frames.numbers[0], frames.numbers[0] + len(frames.numbers)))
    if not contiguous or (padded and len(widths) > 1):
        raise file_error(folder, "frame numbers have gaps or mixed widths: cannot be read as one image sequence")
    match = _NUMBERED.match(frames.files[0].name)
    assert match is not None
    width = f"%0{widths.pop()}d" if padded else "%d"
    pattern = str(frames.folder / (match.group("prefix").replace("%", "%%") + width + match.group("ext")))
    return pattern, "image2", {"start_number": str(frames.numbers[0]), "framerate": f"{fps:g}"}
