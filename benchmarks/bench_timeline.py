"""Timeline speed on a 60 s 720p video: windows per second and where the time goes.

The video is a real clip (``k400_clean_and_jerk.mp4``, 10 s) looped six times and scaled to 1280x720, 29.97 fps,
1800 frames (made once with PyAV, kept in the temp folder). For a tiny preset and ``pevl_vit_b16`` in bf16 (random
weights: the speed is the same as trained ones), ``run_timeline`` scores windows of the model's default length
(``--timeline``: T_p consecutive frames, at least 1 s) every half window, in batches of 8, against 10 class texts,
with BlazePose estimated on the fly.

The cost rule checked: the timeline's wall time against the sum of its parts measured alone, one decoding pass over
every frame, one BlazePose pass over the frames the windows read, and the model time of its windows (batches of 8
scored alone); the timeline must cost at most 1.2x that sum. Pose and model references are measured on a part
(150 frames; 3 batches, 1 for ViT-B/16) and scaled to the whole, as the per-frame and per-batch costs are constant.

    python benchmarks/bench_timeline.py [--presets pevl_tiny pevl_vit_b16] [--no-write]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from _report import SHARED_DATA, machine, write_section
from pevl.apps.sources import FrameSource
from pevl.apps.stream import run_timeline
from pevl.apps.timeline import default_window_seconds, plan_windows, window_sizes
from pevl.data.pose.base import create_extractor
from pevl.engine.builder import autocast
from pevl.models.presets import create_model

ROOT = Path(__file__).resolve().parents[1]
SECTION = "timeline"
LABELS = ["clean and jerk", "snatch", "deadlift", "squat", "bench pressing", "tai chi", "yoga", "lunge",
          "jumping jacks", "push up"]  # fmt: skip
AMP = {"pevl_tiny": "off", "pevl_vit_b16": "bf16"}


def make_video(path: Path, loops: int = 6, size: tuple[int, int] = (1280, 720)) -> Path:
    """A real clip looped ``loops`` times and scaled to ``size`` (H.264), unless it exists already."""
    import av

    if path.exists():
        return path
    source = SHARED_DATA / "videos" / "k400_clean_and_jerk.mp4"
    tmp = path.with_suffix(".tmp.mp4")
    with av.open(str(source)) as clip:
        frames = [f.reformat(width=size[0], height=size[1], format="yuv420p") for f in clip.decode(video=0)]
    with av.open(str(tmp), "w") as out:
        rate = Fraction(30000, 1001)
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.codec_context.time_base = 1 / rate
        stream.options = {"preset": "veryfast"}
        for i in range(loops * len(frames)):
            frame = frames[i % len(frames)]
            frame.pts, frame.time_base = i, stream.codec_context.time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    tmp.rename(path)
    return path


def decode_pass(video: Path) -> tuple[float, int]:
    """Seconds to decode every frame to RGB, and the frame count."""
    started = time.perf_counter()
    count = 0
    with FrameSource(video, live=False) as source:
        source.want_rgb = lambda _: True
        for item in source:
            item.rgb()
            count += 1
    return time.perf_counter() - started, count


def pose_seconds_per_frame(video: Path, frames: int = 150) -> float:
    """BlazePose seconds per 720p frame (after one warm-up frame)."""
    with FrameSource(video, live=False) as source, create_extractor("mediapipe") as extractor:
        source.want_rgb = lambda i: i <= frames
        images = []
        for item in source:
            images.append(item.rgb())
            if len(images) > frames:
                break
        extractor.detect(images[0])
        started = time.perf_counter()
        for image in images[1:]:
            extractor.detect(image)
    return (time.perf_counter() - started) / frames


def model_seconds_per_batch(model: torch.nn.Module, amp: str, batch: int = 8, repeat: int = 3) -> float:
    """Seconds to score one batch of windows alone (class texts encoded once, as in the timeline)."""
    cfg = model.config
    size = cfg.clip.vision.image_size
    video = torch.randn(batch, cfg.num_video_frames, 3, size, size)
    pose = torch.rand(batch, cfg.num_pose_frames, cfg.num_joints, 3)
    device = torch.device("cpu")
    with torch.no_grad(), autocast(device, amp, training=False, width=cfg.clip.vision.width):
        text = model.encode_class_texts(model.build_class_texts(LABELS))
        model(video=video[:1], pose=pose[:1], texts=text)  # warm-up
        started = time.perf_counter()
        for _ in range(repeat):
            model(video=video, pose=pose, texts=text)
    return (time.perf_counter() - started) / repeat


def bench(preset: str, video: Path, decode: float, num_frames: int, pose_per_frame: float) -> dict[str, float]:
    """Run the timeline and its reference parts for one preset."""
    model = create_model(preset, num_classes=len(LABELS)).eval()
    amp = AMP.get(preset, "auto")
    timeline = run_timeline(video, model, LABELS, amp=amp, batch_size=8)
    cfg = model.config
    length, step = window_sizes(timeline.fps, default_window_seconds(cfg.num_pose_frames, timeline.fps), None)
    windows = plan_windows(num_frames, length, step, cfg.num_pose_frames, cfg.num_video_frames)
    pose_frames = len({int(i) for w in windows for i in w.pose_frames})
    batches = -(-len(windows) // 8)
    model_ref = model_seconds_per_batch(model, amp, repeat=3 if cfg.clip.vision.width < 512 else 1) * batches
    reference = decode + pose_per_frame * pose_frames + model_ref
    seconds = timeline.seconds
    return {
        "windows": len(timeline.windows), "window": length / timeline.fps, "pose_frames": pose_frames,
        "total": seconds["total"], "decode": seconds["decode"], "pose": seconds["pose"], "model": seconds["model"],
        "transform": seconds["transform"], "reference": reference, "model_ref": model_ref,
        "pose_ref": pose_per_frame * pose_frames,
    }  # fmt: skip


def report(rows: dict[str, dict[str, float]], decode: float, num_frames: int) -> str:
    """The Markdown section."""
    lines = [
        "## Timeline (long videos)",
        "",
        f"`benchmarks/bench_timeline.py` on {machine()}; other work was running on the machine at the same time. "
        f"Video: a real clip looped to 60 s and scaled to 1280x720 ({num_frames} frames, 29.97 fps); windows of "
        "the `--timeline` default length every half window, batches of 8, 10 class texts, BlazePose on the fly, "
        f"torch on {torch.get_num_threads()} thread(s). Decoding runs on a background thread, so its share overlaps "
        "the others; `crops` is the CLIP resize of the RGB frames the windows read.",
        "",
        "| preset | precision | windows | windows/s | wall s | decode | pose | model | crops | timeline / (model + "
        "decode + pose alone) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for preset, r in rows.items():
        share = {k: f"{100 * r[k] / r['total']:.0f}%" for k in ("decode", "pose", "model", "transform")}
        precision = "fp32" if AMP.get(preset) == "off" else AMP.get(preset, "auto")
        lines.append(
            f"| {preset} | {precision} | {r['windows']} of {r['window']:.2f} s | "
            f"{r['windows'] / r['total']:.2f} | {r['total']:.1f} | {share['decode']} | {share['pose']} | "
            f"{share['model']} | {share['transform']} | {r['total'] / r['reference']:.2f}x "
            f"({r['total']:.1f} / ({r['model_ref']:.1f} + {decode:.1f} + {r['pose_ref']:.1f})) |"
        )
    lines += [
        "",
        "Pose is estimated once per frame that some window reads (the tiny preset's 8 pose frames per window read "
        "about half of the frames, ViT-B/16's 32 read all of them) and the RGB crop of a frame is made once, whatever "
        "the number of windows overlapping it; class texts are encoded once per run. With torch on both cores (its "
        "default) the tiny model's batches of 8 took 1.3 s in the timeline instead of 0.06 s on this loaded machine: "
        "torch's threads wait for the core the decoder and the pose model hold.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run and write the section."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["pevl_tiny", "pevl_vit_b16"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    torch.manual_seed(0)
    np.random.seed(0)
    # One torch thread: the reader thread decodes on the other core. With torch's OpenMP threads on every core, each
    # batch waits for the core the decoder (or any other process) holds, and on a loaded 2-core machine the tiny
    # model's batches took 20x longer.
    torch.set_num_threads(args.threads)
    video = make_video(Path(tempfile.gettempdir()) / "pevl_bench_timeline_60s_720p.mp4")
    decode, num_frames = decode_pass(video)
    pose_per_frame = pose_seconds_per_frame(video)
    print(f"decode pass {decode:.1f} s for {num_frames} frames; BlazePose {1000 * pose_per_frame:.1f} ms/frame")
    rows = {}
    for preset in args.presets:
        rows[preset] = bench(preset, video, decode, num_frames, pose_per_frame)
        print(preset, {k: round(v, 3) for k, v in rows[preset].items()}, flush=True)
    text = report(rows, decode, num_frames)
    print(text)
    if not args.no_write:
        write_section(ROOT / "docs" / "benchmarks.md", SECTION, text)


if __name__ == "__main__":
    main()
