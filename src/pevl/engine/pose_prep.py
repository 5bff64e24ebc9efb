"""Poses for a training run on videos: estimate the ones the pose cache lacks before training starts.

A dataset of one's own videos has no skeleton file: its poses come from the pose cache that
``pevl extract-poses`` fills. ``pevl train`` runs that extraction itself for the videos of the run's splits
that are not cached yet (``data.estimate_poses``, on by default): same cache, same progress bar, resumable
(each finished video is cached at once, so an interrupted run picks up where it stopped). With
``data.estimate_poses=false``, or under ``torchrun``, a missing pose is an error that prints the exact
``pevl extract-poses`` command to run.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from pevl.engine.config import RunConfig
from pevl.errors import PevlError


def _sources(cfg: RunConfig, splits: list[str]) -> list[Path]:
    """The video files / rawframe folders of the splits (no pose check), in order, without repeats."""
    from pevl.data.datasets.registry import DATASETS

    if cfg.data.dataset not in DATASETS:
        return []
    root = Path(cfg.data.root) if cfg.data.root else None
    found: dict[Path, None] = {}
    for split in splits:
        spec = DATASETS[cfg.data.dataset](cfg.data.dataset, split, root, dict(cfg.data.options))
        if spec.poses is not None:  # the dataset brings its own poses
            return []
        for record in spec.records:
            source = record.video or record.frames_dir
            if source is not None:
                found[Path(source)] = None
    return list(found)


def extract_command(folder: Path, out: Path, cache_dir: Path, backend: str) -> str:
    """The ``pevl extract-poses`` command that fills ``cache_dir`` with the poses of the videos under ``folder``."""
    parts = ["pevl", "extract-poses", str(folder), "--out", str(out), "--cache-dir", str(cache_dir)]
    if backend != "mediapipe":
        parts += ["--backend", backend]
    return shlex.join(parts)


def ensure_poses(
    cfg: RunConfig, splits: list[str], cache_dir: str | Path, work_dir: str | Path, distributed: bool, progress: bool
) -> int:
    """Estimate the poses the cache lacks for the videos of ``splits`` (see the module docstring).

    Args:
        cfg: The run config (a pose file, a pose-less model or a dataset with its own poses: nothing to do).
        splits: The splits the run reads.
        cache_dir: The pose cache the datasets read.
        work_dir: The run's folder (the by-product skeleton pickle goes to ``<work_dir>/poses.pkl``).
        distributed: Under ``torchrun``: never estimate, only say what to run.
        progress: Show the extraction's progress bar.

    Returns:
        The number of videos whose poses were estimated (0 when the cache had them all).

    Raises:
        PevlError: Poses are missing and may not be estimated here; the message holds the command to run.
    """
    if cfg.data.pose_file:
        return 0
    from pevl.data.datasets.base import CachePoses, VideoRecord

    backend = str(cfg.data.options.get("pose_backend", "mediapipe"))
    cache = CachePoses(cache_dir, backend=backend)
    sources = _sources(cfg, splits)
    missing = [s for s in sources if not cache.has(VideoRecord(s.name, -1, video=s if s.is_file() else None,
                                                               frames_dir=s if s.is_dir() else None))]  # fmt: skip
    if not missing:
        return 0
    folder = Path(os.path.commonpath([str(s.parent) for s in missing]))
    out = Path(work_dir) / "poses.pkl"
    command = extract_command(folder, out, Path(cache_dir), backend)
    if distributed or not cfg.data.estimate_poses:
        why = "under torchrun" if distributed else "with data.estimate_poses=false"
        raise PevlError(
            f"the pose cache {cache_dir} lacks poses for {len(missing)} of {len(sources)} videos (first: "
            f"{missing[0]}); {why} pevl train does not estimate them: run `{command}` first"
        )
    print(
        f"estimating the poses of {len(missing)} of {len(sources)} videos into {cache_dir} ({backend}; interrupt "
        f"and rerun to resume; the same as `{command}`)",
        file=sys.stderr,
    )
    from pevl.data.pose.extract import extract_poses

    Path(work_dir).mkdir(parents=True, exist_ok=True)
    summary = extract_poses(
        folder, out, backend=backend, workers=max(1, min(cfg.data.num_workers, os.cpu_count() or 1)),
        cache_dir=cache_dir, progress=progress,
    )  # fmt: skip
    for _, warning in summary.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for _, problem in summary.failed:
        print(f"skipped {problem}", file=sys.stderr)
    return summary.extracted
