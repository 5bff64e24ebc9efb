"""Batch pose extraction into a PYSKL skeleton pickle: the library behind ``pevl extract-poses``.

Input is a video, a rawframe folder (numbered images, see :mod:`pevl.data.rawframes`), a folder (searched
recursively for videos and rawframe folders) or an MMAction2 list (video or rawframe lines, parsed as MMAction2
parses them). Each video's raw poses go to the per-video cache (:class:`~pevl.data.pose.cache.PoseCache`) as
soon as they are done, so an interrupted run resumes where it stopped; a video that cannot be read is reported
by name and skipped. The pickle is written once, atomically, at the end, after short detection gaps are filled
(:mod:`pevl.data.pose.gaps`; ``max_gap=0`` keeps the raw output).

The pickle loads in PYSKL and MMAction2 as they are (numpy 1.x or 2.x): it has a ``split`` dict (one split,
``"all"`` by default, holding every video, plus one per list file named after it) and a ``label`` only for
videos that have one.

Worker processes each own one extractor (models are not shared across processes); the main process writes the
cache and the pickle.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
import warnings
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pevl.data.pose import shards
from pevl.data.pose.base import PoseExtractor, PoseSequence, cache_tag, create_extractor, extract_video
from pevl.data.pose.cache import PoseCache
from pevl.data.pose.gaps import DEFAULT_MAX_GAP, fill_gaps
from pevl.data.video import VIDEO_EXTENSIONS
from pevl.errors import PevlError, PevlWarning, file_error
from pevl.utils.io import check_not_inputs, check_output_file

STUCK_AFTER_S = 6 * 3600.0
"""With worker processes: when no video in flight finishes for this long, the workers are reported stuck."""

LIST_EXTENSIONS: tuple[str, ...] = (".txt", ".lst", ".list")
"""Files with these extensions are read as video lists; any other file is taken to be a video."""


@dataclass(frozen=True)
class VideoItem:
    """One video to process.

    Attributes:
        path: The video file or rawframe folder.
        frame_dir: Its identifier in the pickle (relative path without extension, or the stem).
        label: Class index, -1 when unlabelled.
        frames: A rawframe list line's frames: ``(start_index, offset, total_frames)`` (``None`` as
            ``start_index``: the folder's first file's number); ``None`` = the whole video.
    """

    path: Path
    frame_dir: str
    label: int = -1
    frames: tuple[int | None, int, int] | None = None

    @property
    def clip_args(self) -> tuple[tuple[int | None, int, int], ...]:
        """The extra argument of the extraction functions for a frame range (empty for a whole video)."""
        return () if self.frames is None else (self.frames,)

    @property
    def cache_clip(self) -> tuple[int | None, int, int] | None:
        """The frame range as the cache keys it: ``None`` for a whole video (shared with other commands)."""
        from pevl.data.rawframes import covers_folder

        if self.frames is None or covers_folder(self.path, self.frames[0], self.frames[2], self.frames[1]):
            return None
        return self.frames


@dataclass
class ExtractSummary:
    """What :func:`extract_poses` did.

    Attributes:
        out: The pickle written.
        total: Videos in the input.
        extracted: Videos whose poses were estimated in this run.
        cached: Videos taken from the cache (done by an earlier run).
        failed: ``(video path, problem)`` for every video that was skipped.
        warnings: ``(video path, one line)`` for every written video whose content is questionable: nobody
            found, a single frame, a truncated file (see :func:`pevl.data.quality.content_warnings`).
        frames: Frames processed in this run.
        seconds: Wall time of the run.
        found_raw: Frames of the written videos where the pose estimator found a person.
        found_filled: The same after gap filling.
        total_frames: Frames of the written videos.
    """

    out: Path
    total: int
    extracted: int = 0
    cached: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    frames: int = 0
    seconds: float = 0.0
    found_raw: int = 0
    found_filled: int = 0
    total_frames: int = 0

    @property
    def warned(self) -> set[str]:
        """Videos with at least one warning."""
        return {video for video, _ in self.warnings}

    @property
    def written(self) -> int:
        """Annotations in the pickle."""
        return self.extracted + self.cached

    def format(self) -> str:
        """A short human-readable report."""
        rate = f" ({self.frames / self.seconds:.1f} frames/s)" if self.seconds > 0 and self.frames else ""
        lines = [
            f"{self.written}/{self.total} videos written to {self.out}: {self.extracted} extracted, "
            f"{self.cached} from cache, {len(self.failed)} skipped, {len(self.warned)} with warnings; "
            f"{self.frames} frames in {self.seconds:.1f} s{rate}"
        ]
        if self.total_frames:
            found = f"person found in {100 * self.found_raw / self.total_frames:.1f}% of frames"
            if self.found_filled != self.found_raw:
                found += f" ({100 * self.found_filled / self.total_frames:.1f}% after filling short gaps)"
            lines.append(found)
        lines += [f"skipped {problem}" for _, problem in self.failed]  # the line docs/data.md shows
        return "\n".join(lines)


def _frame_dir(relative: Path, folder: bool = False) -> str:
    return relative.as_posix() if folder else relative.with_suffix("").as_posix()


def _scan_folder(folder: Path) -> list[VideoItem]:
    from pevl.data.rawframes import find_frames

    if find_frames(folder) is not None:
        return [VideoItem(path=folder, frame_dir=folder.name)]
    found: list[tuple[Path, bool]] = []
    for p in sorted(folder.rglob("*")):
        if any(part.startswith(".") for part in p.relative_to(folder).parts):
            continue
        if p.is_dir():
            if find_frames(p) is not None:
                found.append((p, True))
        elif p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file():
            found.append((p, False))
    return [VideoItem(path=p, frame_dir=_frame_dir(p.relative_to(folder), is_dir)) for p, is_dir in found]


def read_video_list(
    path: str | Path,
    root: str | Path | None = None,
    *,
    with_offset: bool = False,
    multi_class: bool = False,
    start_index: int | None = None,
) -> list[VideoItem]:
    """Read an MMAction2 list as MMAction2 does (:func:`pevl.data.datasets.lists.parse_video_list`).

    Video lines ``path [label ...]`` and rawframe lines ``folder [offset] total_frames [label ...]`` are
    accepted; ``#`` lines are skipped, repeated lines dropped with a warning. A rawframe line reads exactly
    its listed frames: files numbered ``offset + start_index`` onwards, ``total_frames`` of them. A
    multi-label line gives the pickle its first label (with a warning); an unlabelled line gives no label.
    ``frame_dir`` is the video's stem (a folder's name), or the path as written without extension when two
    stems collide; a folder listed as several clips (offsets) gets ``_<first>-<last>`` frame numbers appended.

    Args:
        path: The list file.
        root: Folder that relative paths are relative to (the list file's folder when ``None``).
        with_offset: Rawframe lines carry an offset before the frame count (MMAction2's ``with_offset``).
        multi_class: Several labels on a line are a multi-label line (MMAction2's ``multi_class``); without
            it a rawframe line with several numbers after the count is refused as ambiguous.
        start_index: Number of a folder's first frame file (MMAction2's ``start_index``); ``None``: the
            number of the first file in each folder.

    Returns:
        The videos, in list order.

    Raises:
        PevlError: Missing file, or a malformed or ambiguous line (naming the line).
    """
    from pevl.data.datasets.lists import parse_video_list

    path = Path(path)
    base = Path(root) if root is not None else path.parent
    entries = parse_video_list(path, root=base, with_offset=with_offset, multi_class=multi_class)
    multi = [e for e in entries if len(e.labels) > 1]
    if multi:
        warnings.warn(
            f"{path}: {len(multi)} multi-label lines (first: line {multi[0].line}); the pickle gets the first label",
            PevlWarning,
            stacklevel=2,
        )
    is_folder = [e.num_frames is not None for e in entries]
    stems = [Path(e.name).name if folder else Path(e.name).stem for e, folder in zip(entries, is_folder, strict=True)]
    unique_stems = len(set(stems)) == len(stems)
    clips_per_name: dict[str, int] = {}
    for entry in entries:
        clips_per_name[entry.name] = clips_per_name.get(entry.name, 0) + 1
    items = []
    for entry, stem, folder in zip(entries, stems, is_folder, strict=True):
        video = Path(entry.name)
        frame_dir = stem if unique_stems else _frame_dir(video, folder)
        frames: tuple[int | None, int, int] | None = None
        if folder:
            frames = (start_index, entry.offset, int(entry.num_frames or 0))
            if clips_per_name[entry.name] > 1:  # clips of one folder: frame indices from its first frame
                frame_dir = f"{frame_dir}_{entry.offset}-{entry.offset + frames[2] - 1}"
        items.append(
            VideoItem(
                path=video if video.is_absolute() else base / video,
                frame_dir=frame_dir,
                label=entry.label,
                frames=frames,
            )
        )
    return items


def collect_videos(
    inputs: str | Path | Sequence[str | Path], root: str | Path | None = None, **list_options: Any
) -> tuple[list[VideoItem], dict[str, list[str]]]:
    """Resolve inputs (videos, folders, video lists) into the videos to process.

    Args:
        inputs: One input or several. A rawframe folder is one video (``frame_dir`` = its name); another
            folder is searched recursively for videos and rawframe folders (``frame_dir`` = relative path
            without extension); a ``.txt``/``.lst``/``.list`` file is a list (see :func:`read_video_list`);
            any other file is a video (``frame_dir`` = its stem).
        root: Folder for the relative paths of video lists.
        **list_options: ``with_offset``, ``multi_class``, ``start_index`` of :func:`read_video_list`.

    Returns:
        ``(videos, split)``: ``split`` maps each video list's stem to its ``frame_dir`` values.

    Raises:
        PevlError: An input does not exist, or two videos would get the same ``frame_dir``.
    """
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    items: list[VideoItem] = []
    split: dict[str, list[str]] = {}
    for entry in inputs:
        path = Path(entry)
        if path.is_dir():
            items += _scan_folder(path)
        elif path.is_file() and path.suffix.lower() in LIST_EXTENSIONS:
            listed = read_video_list(path, root=root, **list_options)
            split.setdefault(path.stem, []).extend(item.frame_dir for item in listed)
            items += listed
        elif path.is_file():
            items.append(VideoItem(path=path, frame_dir=path.stem))
        else:
            raise file_error(path, "no such file or folder")
    seen: dict[str, Path] = {}
    unique: list[VideoItem] = []
    for item in items:
        if item.frame_dir in seen:
            if seen[item.frame_dir].resolve() == item.path.resolve():
                continue  # the same video given twice (a list's repeated lines are dropped when it is read)
            raise file_error(item.path, f"frame_dir {item.frame_dir!r} is also used by {seen[item.frame_dir]}")
        seen[item.frame_dir] = item.path
        unique.append(item)
    return unique, split


# --- worker side --------------------------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _init_worker(backend: str, backend_kwargs: dict[str, Any]) -> None:
    try:
        _WORKER["extractor"] = create_extractor(backend, **backend_kwargs)
    except Exception as err:  # reported to the main process with the first video
        _WORKER["error"] = str(err) if isinstance(err, PevlError) else f"{type(err).__name__}: {err}"


def _extract_in_worker(path: Path, max_persons: int, *clip: tuple[int | None, int, int]) -> tuple[str, Any]:
    if "error" in _WORKER:
        return "init_error", _WORKER["error"]
    return _extract_one(_WORKER["extractor"], path, max_persons, *clip)


def _extract_one(
    extractor: PoseExtractor, path: Path, max_persons: int, frames: tuple[int | None, int, int] | None = None
) -> tuple[str, Any]:
    """``("ok", PoseSequence)`` or ``("error", one-line message naming the video)``; never raises for a video."""
    try:
        return "ok", extract_video(path, extractor, max_persons=max_persons, frames=frames)
    except PevlError as err:
        return "error", str(err)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as err:  # any other failure on one video must not stop the batch
        return "error", f"{path}: {type(err).__name__}: {err}"


# --- main side ----------------------------------------------------------------------------------------------


def extract_poses(
    inputs: str | Path | Sequence[str | Path],
    out: str | Path,
    backend: str = "mediapipe",
    workers: int = 1,
    cache_dir: str | Path | None = None,
    labels: Mapping[str, int] | None = None,
    max_persons: int = 1,
    root: str | Path | None = None,
    progress: bool = True,
    backend_kwargs: Mapping[str, Any] | None = None,
    split_name: str = "all",
    max_gap: int = DEFAULT_MAX_GAP,
    shard: tuple[int, int] | None = None,
    merge: bool = False,
    list_options: Mapping[str, Any] | None = None,
    placeholder_label: int | None = None,
) -> ExtractSummary:
    """Estimate the poses of many videos and write them as one PYSKL skeleton pickle.

    Args:
        inputs: A video, a folder, a video list, or several of them (see :func:`collect_videos`).
        out: Destination ``.pkl`` (written atomically at the end).
        backend: Pose backend (``"mediapipe"`` or ``"rtmlib"``).
        workers: Worker processes, each with its own extractor (1 = in this process).
        cache_dir: Pose cache root (:func:`~pevl.data.pose.cache.default_cache_dir` when ``None``).
        labels: ``frame_dir`` -> class index, for videos whose list line gives no label.
        max_persons: Person tracks kept per video (BlazePose always gives one).
        root: Folder for the relative paths of video lists.
        progress: Show a progress bar (on stderr).
        backend_kwargs: Constructor arguments of the backend (e.g. ``{"mode": "lightweight"}`` for rtmlib).
        split_name: The pickle's split that holds every written video (beside one split per list file).
        max_gap: Longest detection gap filled by interpolation, in frames (0: write the raw detections).
        shard: ``(K, N)``: process only shard ``K`` of ``N`` (:mod:`pevl.data.pose.shards`) into the cache and
            write its report instead of the pickle (``summary.out`` is the report).
        merge: Extract nothing: write the pickle from the cache, where every shard has put its videos (a video
            missing there must have been reported failed by its shard).
        list_options: MMAction2 list options for list inputs: ``with_offset``, ``multi_class``,
            ``start_index`` (:func:`read_video_list`).
        placeholder_label: Label written for videos without one (for PYSKL's ``Collect(keys=[..., 'label'])``;
            ``None``: no ``label`` key, as PYSKL's own tool writes them).

    Returns:
        The :class:`ExtractSummary`.

    Raises:
        PevlError: Bad input (nothing found, duplicate names), the backend is unavailable, or no video at all
            could be read. Individual bad videos are reported in the summary instead.
    """
    from tqdm import tqdm

    from pevl.data.pose.pyskl import save_pyskl

    if workers < 1 or max_persons < 1:
        raise PevlError(f"workers and max_persons must be at least 1 (got {workers} and {max_persons})")
    if max_gap < 0:
        raise PevlError(f"the longest gap to fill must be at least 0 frames, got {max_gap}")
    if not split_name.strip():
        raise PevlError("the split name must not be empty")
    if shard is not None and (merge or not 0 <= shard[0] < shard[1]):
        raise PevlError(f"shard {shard[0]}/{shard[1]}: K must be 0 .. N-1, and a shard run does not merge")
    start = time.perf_counter()
    out = check_output_file(out, "skeleton pickle")  # before any work
    kwargs = dict(backend_kwargs or {})
    items, split = collect_videos(inputs, root=root, **dict(list_options or {}))
    given = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    check_not_inputs({"skeleton pickle": out}, [*given, *(item.path for item in items)])  # no output over an input
    if not items:
        raise PevlError(f"{', '.join(map(str, [inputs] if isinstance(inputs, (str, Path)) else inputs))}: no videos")
    if labels:
        items = [
            replace(it, label=labels.get(it.frame_dir, it.label)) if it.label < 0 else it for it in items
        ]
    cache = PoseCache(cache_dir, backend=cache_tag(backend, max_persons=max_persons, **kwargs))
    mine = range(len(items)) if shard is None else shards.shard_indices(len(items), *shard)
    summary = ExtractSummary(out=out, total=len(mine))
    results: dict[int, PoseSequence] = {}
    todo: list[int] = []
    for i in mine:
        seq = cache.get(items[i].path, items[i].cache_clip)
        if seq is not None:
            results[i] = seq
            summary.cached += 1
        else:
            todo.append(i)
    if merge and todo:
        summary.failed = shards.merge_failures(out, items, todo)
        todo = []

    bar = tqdm(total=len(items), initial=summary.cached, unit="video", desc="extract-poses", disable=not progress)

    def finish(i: int, status: str, payload: Any) -> None:
        if status == "ok":
            cache.put(items[i].path, payload, items[i].cache_clip)
            results[i] = payload
            summary.extracted += 1
            summary.frames += payload.num_frames
        else:
            summary.failed.append((str(items[i].path), payload))
            if progress:
                bar.write(f"skipped {payload}", file=sys.stderr)
        bar.update(1)
        elapsed = time.perf_counter() - start
        bar.set_postfix(failed=len(summary.failed), fps=f"{summary.frames / max(elapsed, 1e-9):.1f}")

    try:
        if todo and (workers == 1 or len(todo) == 1):
            with create_extractor(backend, **kwargs) as extractor:
                for i in todo:
                    finish(i, *_extract_one(extractor, items[i].path, max_persons, *items[i].clip_args))
        elif todo:
            _run_pool(items, todo, backend, kwargs, max_persons, min(workers, len(todo)), finish)
    finally:
        bar.close()

    done = sorted(results)
    if shard is not None:
        summary.out = shards.write_report(out, *shard, shards.inputs_digest(items), len(mine),
                                          [items[i].frame_dir for i in done], summary.failed)  # fmt: skip
        summary.seconds = time.perf_counter() - start
        return summary
    if not done:
        first = summary.failed[0][1] if summary.failed else "nothing to do"
        raise PevlError(f"no video could be processed ({len(summary.failed)} failed; first: {first})")
    for i in done:
        summary.warnings += [(str(items[i].path), line) for line in _video_warnings(items[i].path, results[i])]
    annotations = []
    for i in done:
        seq = results[i]
        keypoint, score = fill_gaps(seq.keypoint, seq.keypoint_score, max_gap=max_gap)
        summary.total_frames += seq.num_frames
        summary.found_raw += int((seq.keypoint_score > 0).any(axis=(0, 2)).sum())
        summary.found_filled += int((score > 0).any(axis=(0, 2)).sum())
        filled = PoseSequence(keypoint, score, seq.img_shape, seq.fps)
        annotations.append(filled.to_annotation(items[i].frame_dir, items[i].label))
    written = [items[i].frame_dir for i in done]
    splits = {name: [d for d in dirs if d in set(written)] for name, dirs in split.items()}
    splits[split_name] = written
    save_pyskl(out, annotations, splits, placeholder_label=placeholder_label)
    summary.seconds = time.perf_counter() - start
    return summary


def _video_warnings(path: Path, seq: PoseSequence) -> list[str]:
    """The content warnings of a processed video (its backend's own, then nobody / one frame / truncated)."""
    from pevl.data.quality import content_warnings
    from pevl.data.video import probe_video

    try:
        info = probe_video(path)
    except PevlError:
        info = None
    lines = list(seq.warnings)
    return lines + [w for w in content_warnings(path, info, seq.keypoint_score) if w not in lines]


def _run_pool(
    items: list[VideoItem],
    todo: list[int],
    backend: str,
    kwargs: dict[str, Any],
    max_persons: int,
    workers: int,
    finish: Any,
) -> None:
    """Extract ``todo`` in worker processes, calling ``finish(i, status, payload)`` as each video ends.

    A worker that dies (a crash inside the backend) breaks the pool: the pool is rebuilt and each video that
    was in flight is retried alone, so only the video that crashes on its own is reported as failed.
    """
    # "spawn": a forked copy of a process that already runs torch / decoder threads can deadlock.
    context = multiprocessing.get_context("spawn")

    def new_pool() -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=workers, mp_context=context, initializer=_init_worker, initargs=(backend, kwargs)
        )

    pool = new_pool()
    pending: dict[Future, int] = {}
    queue = deque(todo)
    suspects: deque[int] = deque()  # in flight when a worker died: retried one at a time
    alone: int | None = None  # the suspect running alone right now
    try:
        while queue or suspects or pending:
            if suspects and not pending:
                alone = suspects.popleft()
                item = items[alone]
                pending[pool.submit(_extract_in_worker, item.path, max_persons, *item.clip_args)] = alone
            while not suspects and queue and len(pending) < 2 * workers:  # bounded: results are not piled up
                i = queue.popleft()
                pending[pool.submit(_extract_in_worker, items[i].path, max_persons, *items[i].clip_args)] = i
            finished, _ = wait(pending, timeout=STUCK_AFTER_S, return_when=FIRST_COMPLETED)
            if not finished:  # a wait with a limit: a stuck worker is an error naming what it was doing
                stuck = ", ".join(str(items[i].path) for i in pending.values())
                raise PevlError(f"{stuck}: no pose worker finished a video in {STUCK_AFTER_S / 3600:g} h (stuck?)")
            broken = False
            for future in finished:
                i = pending.pop(future)
                was_alone, alone = i == alone, (None if i == alone else alone)
                try:
                    status, payload = future.result()
                except BrokenProcessPool:
                    broken = True
                    if was_alone:
                        finish(i, "error", f"{items[i].path}: the pose backend crashed on this video")
                    else:
                        suspects.append(i)
                    continue
                if status == "init_error":
                    raise PevlError(payload)
                finish(i, status, payload)
            if broken:
                suspects.extend(pending.values())
                pending.clear()
                pool.shutdown(wait=False, cancel_futures=True)
                pool = new_pool()
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)  # every future is done: the workers only have to exit
