"""Pose extraction split over processes and machines: shards, their reports, and the merge.

A dataset's video list is cut into ``N`` interleaved shards (video ``i`` belongs to shard ``i % N``: neighbours
in a list, often of similar length, land on different shards). A shard run (``pevl extract-poses --shard K/N``,
a job-array task, or one ``torchrun`` rank) writes each finished video to the pose cache, which every shard
shares (on a cluster: a shared filesystem), and ends by writing a small report beside the output::

    <out>.shards/shard-K-of-N.json   {"shard": K, "num_shards": N, "inputs": <digest>, "videos": ...,
                                       "done": [frame_dir, ...], "failed": [[path, problem], ...]}

A shard rerun skips what its cache entries already hold, so every shard is resumable. The merge
(``--merge``, or rank 0 once all ranks are done) reads every video from the cache and writes the pickle; a
video without cache entry must be reported failed by a shard of the same inputs, else the merge refuses and
names the shards that have not reported. The pickle is the one a single process writes, byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from pevl.errors import PevlError, file_error
from pevl.utils.io import atomic_open

SHARDS_SUFFIX = ".shards"
_REPORT = re.compile(r"^shard-(\d+)-of-(\d+)\.json$")


class _Item(Protocol):
    path: Path
    frame_dir: str
    label: int


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> ``(K, N)``: shard ``K`` (counted from 0, like ``$SLURM_ARRAY_TASK_ID``) of ``N``.

    Raises:
        PevlError: Not two integers, or ``K`` outside ``0 .. N-1``.
    """
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if match is None:
        raise PevlError(f"--shard {text!r}: expected K/N, e.g. 0/4 (shards are counted from 0)")
    index, count = int(match[1]), int(match[2])
    if count < 1 or index >= count:
        raise PevlError(f"--shard {text!r}: K must be 0 .. N-1 (shards are counted from 0, like array task ids)")
    return index, count


def shard_indices(num_items: int, index: int, count: int) -> list[int]:
    """The positions of shard ``index`` of ``count`` in a list of ``num_items`` videos (interleaved)."""
    return list(range(index, num_items, count))


def inputs_digest(items: Sequence[_Item]) -> str:
    """A fingerprint of the video list (order, names, files, labels): shards of other inputs never mix."""
    digest = hashlib.sha1()
    for item in items:
        digest.update(f"{item.frame_dir}\0{Path(item.path).resolve()}\0{item.label}\n".encode(errors="replace"))
    return digest.hexdigest()


def shards_dir(out: str | Path) -> Path:
    """The folder of the shard reports of the pickle ``out``."""
    out = Path(out)
    return out.with_name(out.name + SHARDS_SUFFIX)


def report_path(out: str | Path, index: int, count: int) -> Path:
    """The report file of shard ``index`` of ``count``."""
    return shards_dir(out) / f"shard-{index}-of-{count}.json"


def write_report(
    out: str | Path,
    index: int,
    count: int,
    digest: str,
    videos: int,
    done: Sequence[str],
    failed: Sequence[tuple[str, str]],
) -> Path:
    """Write (atomically) the report of a finished shard; returns its path."""
    path = report_path(out, index, count)
    path.parent.mkdir(parents=True, exist_ok=True)
    report = {"shard": index, "num_shards": count, "inputs": digest, "videos": videos, "done": list(done),
              "failed": [list(f) for f in failed]}  # fmt: skip
    with atomic_open(path, "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")
    return path


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def read_reports(out: str | Path, digest: str) -> dict[int, dict[int, dict[str, Any]]]:
    """The readable reports of shards of these inputs, by shard count then shard index."""
    found: dict[int, dict[int, dict[str, Any]]] = {}
    folder = shards_dir(out)
    if not folder.is_dir():
        return found
    for path in sorted(folder.iterdir()):
        match = _REPORT.match(path.name)
        report = _read(path) if match else None
        if report is None or report.get("inputs") != digest:
            continue
        found.setdefault(int(match[2]), {})[int(match[1])] = report
    return found


def merge_failures(out: str | Path, items: Sequence[_Item], missing: Sequence[int]) -> list[tuple[str, str]]:
    """The shard-reported problems of the videos at ``missing`` (not in the cache), in list order.

    Raises:
        PevlError: A video that no shard of these inputs reported (its shard has not finished, or never ran),
            naming the video and the shards without report.
    """
    reports = read_reports(out, inputs_digest(items))
    problems: dict[str, str] = {}
    for by_index in reports.values():
        for report in by_index.values():
            for entry in report.get("failed") or []:
                if isinstance(entry, list) and len(entry) == 2:
                    problems[str(entry[0])] = str(entry[1])
    failed, unreported = [], []
    for i in missing:
        key = str(items[i].path)
        if key in problems:
            failed.append((key, problems[key]))
        else:
            unreported.append(i)
    if unreported:
        first = items[unreported[0]].path
        waiting = ""
        if reports:
            count = max(reports, key=lambda n: len(reports[n]))
            absent = [f"{k}/{count}" for k in range(count) if k not in reports[count]]
            waiting = f"; shards without a report: {', '.join(absent) or 'none'} (in {shards_dir(out)})"
        else:
            waiting = f"; no shard has reported in {shards_dir(out)}"
        raise file_error(
            first,
            f"no poses yet ({len(unreported)} of {len(items)} videos not extracted: run or finish their shards "
            f"first{waiting})",
        )
    return failed
