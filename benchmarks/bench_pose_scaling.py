"""Pose extraction across processes: frames/s of `pevl extract-poses` under torchrun with 1, 2 and 4 ranks.

Each run starts from an empty pose cache and extracts the same real clips (BlazePose, the default backend),
end to end: process start, model load, every rank's share, the barrier and rank 0's merge. Frames/s is the
clips' total frames over that wall time. Prints a Markdown table and writes it into ``docs/benchmarks.md``
between the ``<!-- bench:pose-scaling -->`` markers.

    python benchmarks/bench_pose_scaling.py [--data ../shared/data] [--procs 1 2 4] [--copies 2] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import SHARED_DATA, machine, write_section

ROOT = Path(__file__).resolve().parents[1]
SECTION = "pose-scaling"
CLIPS = ("k400_archery.avi", "k400_arm_wrestling.mp4", "k400_clean_and_jerk.mp4", "k400_tai_chi.mp4",
         "ucf101_apply_eye_makeup.avi")  # fmt: skip


def make_list(data: Path, folder: Path, copies: int) -> tuple[Path, int]:
    """A video list of ``copies`` links to each clip (distinct files: distinct cache entries); its frame count."""
    from pevl.data.video import probe_video

    lines, frames = [], 0
    for copy in range(copies):
        for name in CLIPS:
            target = folder / f"{Path(name).stem}_{copy}{Path(name).suffix}"
            shutil.copyfile(data / "videos" / name, target)
            frames += probe_video(target).num_frames
            lines.append(f"{target.name} 0")
    listing = folder / "videos.txt"
    listing.write_text("\n".join(lines) + "\n")
    return listing, frames


def run(listing: Path, procs: int, work: Path) -> float:
    """Wall seconds of one extraction with ``procs`` torchrun ranks (a fresh cache)."""
    cache, out = work / f"cache{procs}", work / f"poses{procs}.pkl"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}",
               "-m", "pevl", "extract-poses", str(listing), "-o", str(out), "--cache-dir", str(cache),
               "--no-progress"]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
    seconds = time.perf_counter() - start
    if done.returncode != 0 or not out.is_file():
        raise SystemExit(f"{procs} processes failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED_DATA)
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--copies", type=int, default=2, help="copies of each clip in the list (default 2)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        listing, frames = make_list(args.data, work, args.copies)
        seconds = {n: run(listing, n, work) for n in args.procs}
    base = seconds[args.procs[0]]
    rows = [f"| {n} | {seconds[n]:.1f} | {frames / seconds[n]:.1f} | {base / seconds[n]:.2f}x |" for n in args.procs]
    body = "\n".join([
        "## Pose extraction across processes (`pevl extract-poses` under torchrun)",
        "",
        f"{len(CLIPS) * args.copies} real clips, {frames} frames, BlazePose, a fresh cache per run; wall time from "
        "launch to the merged pickle (process start and model load included). "
        f"Machine: {machine()}; shared with other jobs while measured.",
        "",
        "| processes | seconds | frames/s | speed-up |",
        "|---|---|---|---|",
        *rows,
    ])  # fmt: skip
    print(body)
    if not args.no_write:
        write_section(ROOT / "docs" / "benchmarks.md", SECTION, body)


if __name__ == "__main__":
    main()
