"""Pose extraction on every real clip: person-found rate, joints kept in the frame, frames/s, gap-filling cost.

For each clip: the person-found rate before and after gap filling, the largest normalised coordinate of a
scored joint, the extraction frames/s, and the CPU time the filling adds.

Writes the section "Pose extraction quality" of docs/benchmarks.md. Each clip is extracted once by BlazePose
(``mediapipe``); ``fill_gaps`` then runs on the result, so both rates come from the same detections and the
filling cost is timed on its own, back to back with the extraction it follows.

Usage: ``python benchmarks/bench_pose_quality.py [--out docs/benchmarks.md]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from _report import SHARED_DATA, machine, write_section
from pevl.data.pose.base import create_extractor, extract_video
from pevl.data.pose.gaps import DEFAULT_MAX_GAP, fill_gaps, found_rate


def measure(path: Path, extractor: object) -> dict[str, float]:
    """Extract one clip and fill its gaps; rates, largest normalised coordinate and timings."""
    started, cpu = time.perf_counter(), time.process_time()
    seq = extract_video(path, extractor)  # type: ignore[arg-type]
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    fill_started = time.process_time()
    keypoint, score = fill_gaps(seq.keypoint, seq.keypoint_score, max_gap=DEFAULT_MAX_GAP)
    fill_seconds = time.process_time() - fill_started
    h, w = seq.img_shape
    seen = score > 0
    normalised = np.abs((keypoint - np.array([w / 2, h / 2])) / np.array([w / 2, h / 2])).max(axis=-1)
    return {
        "frames": seq.num_frames,
        "found_raw": found_rate(seq.keypoint_score),
        "found_filled": found_rate(score),
        "max_abs": float(normalised[seen].max()) if seen.any() else 0.0,
        "fps": seq.num_frames / seconds,
        "cpu_fps": seq.num_frames / cpu_seconds,
        "fill_share": fill_seconds / cpu_seconds,
    }


def main() -> None:
    """Run the benchmark and write its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md")
    args = parser.parse_args()
    videos = sorted((SHARED_DATA / "videos").iterdir())
    rows = []
    with create_extractor("mediapipe") as extractor:
        extract_video(videos[0], extractor)  # warm-up
        for path in videos:
            result = measure(path, extractor)
            rows.append((path.name, result))
            print(path.name, {k: round(v, 4) for k, v in result.items()}, flush=True)
    lines = [
        "## Pose extraction quality",
        "",
        f"`python benchmarks/bench_pose_quality.py` on {machine()}, one process, other work running on the machine "
        f"at the same time (frames/s are wall-clock; the CPU-time rate is steadier). BlazePose (`mediapipe`) on "
        f"every real clip of `../shared/data/videos`; *found* is the share of frames with a person, raw and after "
        f"filling gaps of up to {DEFAULT_MAX_GAP} frames; *max abs* is the largest coordinate of a scored joint "
        "once normalised to [-1, 1] by the frame (PYSKL's `PreNormalize2D`): joints BlazePose puts outside the "
        "picture score 0, so it stays within 1; *fill cost* is the CPU time of the filling over that of the "
        "extraction.",
        "",
        "| clip | frames | found (raw) | found (filled) | max abs | frames/s | frames/s (CPU time) | fill cost |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows:
        lines.append(
            f"| {name} | {r['frames']:.0f} | {100 * r['found_raw']:.1f}% | {100 * r['found_filled']:.1f}% | "
            f"{r['max_abs']:.2f} | {r['fps']:.1f} | {r['cpu_fps']:.1f} | {100 * r['fill_share']:.3f}% |"
        )
    write_section(args.out, "pose_quality", "\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
