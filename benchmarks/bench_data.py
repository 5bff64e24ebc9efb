"""Data pipeline throughput: video decoding + frame sampling (clips/s) and pose extraction (frames/s).

Measured at three sizes on real clips: 340x256 (Kinetics), 720p (the 1080p NTU clip re-encoded on the fly
with PyAV into a temporary folder) and 1080p (NTU RGB+D). Prints a Markdown table and writes it into
``docs/benchmarks.md`` between the ``<!-- bench:data -->`` markers (other sections are left alone).

    python benchmarks/bench_data.py [--data ../shared/data] [--repeat 3] [--no-write]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _report import SHARED_DATA, machine, write_section

ROOT = Path(__file__).resolve().parents[1]
SECTION = "data"


def make_720p(source: Path, target: Path) -> Path:
    """Re-encode ``source`` to 1280x720 h264 (mp4) with PyAV."""
    import av

    from pevl.data.video import iter_frames, probe_video

    info = probe_video(source)
    with av.open(str(target), "w") as container:
        stream = container.add_stream("libx264", rate=round(info.fps) or 30)
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        stream.options = {"crf": "20", "preset": "veryfast"}
        for image in iter_frames(source):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(width=1280, height=720)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return target


def best_of(repeat: int, fn, *args):  # noqa: ANN001, ANN202
    """Smallest wall time of ``repeat`` calls (and the last result)."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn(*args)
        times.append(time.perf_counter() - start)
    return min(times), result


def bench_decode(path: Path, clips: int, repeat: int) -> dict[str, float]:
    from pevl.data.sampling import sample_clip_indices
    from pevl.data.transforms import ClipTransform
    from pevl.data.video import iter_frames, probe_video, read_frames

    rng = np.random.default_rng(0)
    transform = ClipTransform(image_size=224, train=True)

    def sample_and_read(with_pose_frames: bool, with_transform: bool) -> None:
        for _ in range(clips):
            info = probe_video(path)
            indices = sample_clip_indices(info.num_frames, 32, 8, train=True, rng=rng)
            wanted = indices.pose[0] if with_pose_frames else indices.video[0]
            frames = read_frames(path, wanted.tolist())
            if with_transform:
                transform(frames[:: len(wanted) // 8], None, None, frames.shape[1:3], rng=rng)

    sample_and_read(True, True)  # warm-up: first calls into torch and FFmpeg set up thread pools and caches
    t_rgb, _ = best_of(repeat, sample_and_read, False, False)
    t_clip, _ = best_of(repeat, sample_and_read, False, True)
    t_pose, _ = best_of(repeat, sample_and_read, True, False)
    t_full, count = best_of(repeat, lambda: sum(1 for _ in iter_frames(path)))
    return {
        "rgb_clips": clips / t_rgb,
        "rgb_clip_transform": clips / t_clip,
        "pose_clips": clips / t_pose,
        "decode_fps": count / t_full,
    }


def bench_pose(path: Path, tmp: Path) -> dict[str, float]:
    from pevl.data.pose.base import create_extractor, extract_video
    from pevl.data.pose.extract import extract_poses

    with create_extractor("mediapipe") as extractor:
        extract_video(path, extractor)  # warm-up
        seconds, seq = best_of(2, extract_video, path, extractor)
        one = seq.num_frames / seconds
    # Two worker processes on two copies (spawn and model start-up included).
    copies = []
    for i in range(2):
        copy = tmp / f"copy{i}_{path.name}"
        shutil.copyfile(path, copy)
        copies.append(copy)
    summary = extract_poses(copies, tmp / "poses.pkl", workers=2, cache_dir=tmp / f"cache_{path.stem}", progress=False)
    return {"pose_fps": one, "pose_fps_2workers": summary.frames / summary.seconds}


def render(rows: list[tuple[str, str, dict[str, float]]], repeat: int) -> str:
    lines = [
        f"Data pipeline on this machine ({machine()}); "
        f"best of {repeat} runs. `python benchmarks/bench_data.py` regenerates it.",
        "",
        "- *RGB clip*: `probe_video` + `sample_clip_indices` (train) + `read_frames` of the T_v = 8 Video (L) "
        "frames; *+ transform* adds `ClipTransform` (random resized crop to 224, CLIP normalisation).",
        "- *pose clip*: the same for the T_p = 32 Video (H) frames (what on-the-fly pose extraction would read).",
        "- *decode*: every frame with `iter_frames` (RGB, display orientation).",
        "- *pose*: BlazePose (`mediapipe` backend) over the whole video, decoding included; one process, and two "
        "worker processes via `extract_poses(workers=2)` on two copies (start-up included).",
        "",
        "| input | size | RGB clip/s | RGB clip + transform/s | pose clip/s | decode frames/s | pose frames/s "
        "(1 process) | pose frames/s (2 workers) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, size, r in rows:
        lines.append(
            f"| {name} | {size} | {r['rgb_clips']:.1f} | {r['rgb_clip_transform']:.1f} | {r['pose_clips']:.1f} | "
            f"{r['decode_fps']:.0f} | {r['pose_fps']:.1f} | {r['pose_fps_2workers']:.1f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help="the real clips (default: ../shared/data)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--clips", type=int, default=10, help="clips per decoding measurement")
    parser.add_argument("--no-write", action="store_true", help="print only, do not update docs/benchmarks.md")
    args = parser.parse_args()
    videos = args.data / "videos"
    if not videos.is_dir():
        print(f"bench_data: no videos at {videos}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        inputs = [
            ("k400_tai_chi.mp4 (h264)", "340x256", videos / "k400_tai_chi.mp4"),
            (
                "ntu_drink_water re-encoded (h264)",
                "1280x720",
                make_720p(videos / "ntu_drink_water_1080p.avi", tmp / "ntu_720p.mp4"),
            ),
            ("ntu_drink_water_1080p.avi (h264)", "1920x1080", videos / "ntu_drink_water_1080p.avi"),
        ]
        rows = []
        for name, size, path in inputs:
            print(f"measuring {name} ...", file=sys.stderr)
            result = bench_decode(path, args.clips, args.repeat)
            result.update(bench_pose(path, tmp))
            rows.append((name, size, result))
    table = render(rows, args.repeat)
    print(table)
    if not args.no_write:
        write_section(ROOT / "docs" / "benchmarks.md", SECTION, f"## Data pipeline\n\n{table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
