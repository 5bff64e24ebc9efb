"""Training speed on whatever device is present: train-step throughput, peak memory and MFU, and the data loader.

* *Train step*: for each preset (random weights, CLIP frozen as in training), batch size, ``torch.compile`` on or
  off and activation checkpointing on or off: clips/s of whole optimiser steps (forward with the class texts, the
  losses, backward, gradient clipping, AdamW: fused on a GPU) with the precision ``train.amp: auto`` picks (bf16
  autocast on a GPU, fp32 on a CPU), peak memory, and the model FLOP utilisation: FLOPs per step from
  :func:`pevl.tools.profile.profile_model` (multiply-adds x 2; forward + backward ~= 3x forward; recomputation by
  activation checkpointing not counted) over the device's peak bf16 FLOP/s (known GPUs, or ``--peak-tflops``).
* *Data loader*: clips/s of the training pipeline (decode + sample, poses from the ``extract-poses`` cache, random
  crop and normalisation) on the real videos of ``../shared/data``, in one process and with worker processes, so
  that the workers one GPU needs can be read off: ``ceil(train-step clips/s / clips/s per worker)``.

Prints Markdown and writes it into ``docs/benchmarks.md`` between the ``<!-- bench:train -->`` markers.

    python benchmarks/bench_train.py                      # a GPU: batches 8 32 64, compile and checkpointing on/off
    python benchmarks/bench_train.py --quick              # a CPU: batch 1, 1 step, a couple of minutes
    python benchmarks/bench_train.py --presets pevl_vit_b16 --batch-sizes 32 64 --steps 20 --workers 1 2 4 8
"""

from __future__ import annotations

import argparse
import itertools
import math
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from _report import SHARED_DATA, machine, write_section
from pevl.engine.builder import autocast
from pevl.engine.config import OptimSection
from pevl.engine.loader import iterate
from pevl.engine.optim import build_optimizer
from pevl.models.pevl import PeVL
from pevl.models.presets import create_model

ROOT = Path(__file__).resolve().parents[1]
SECTION = "train"
VIDEOS = ("k400_tai_chi.mp4", "k400_clean_and_jerk.mp4", "k400_arm_wrestling.mp4", "k400_archery.avi")

# Dense bf16 tensor-core peaks (no sparsity), TFLOP/s, matched against torch.cuda.get_device_name().
GPU_PEAK_TFLOPS = {
    "H200": 989.0,
    "H100 SXM": 989.0,
    "H100 HBM3": 989.0,  # the SXM card reports itself as "NVIDIA H100 80GB HBM3"
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "H100": 756.0,
    "GH200": 989.0,
    "A100": 312.0,
    "A10G": 70.0,
    "A10": 125.0,
    "L40S": 362.0,
    "L40": 181.0,
    "L4": 121.0,
    "RTX 4090": 165.0,
    "RTX 3090": 71.0,
    "V100": 125.0,
}


@dataclass
class StepResult:
    """One row of the train-step table."""

    preset: str
    batch: int
    compiled: bool
    checkpointing: bool
    clips_per_s: float
    step_s: float
    peak_gib: float
    tflops: float  # achieved model TFLOP/s
    mfu: float | None  # fraction of the device peak
    compile_s: float  # the first step (compilation included) minus a steady step
    error: str = ""


def device_peak_tflops(device: torch.device, override: float | None) -> float | None:
    """The device's peak dense bf16 TFLOP/s: ``override``, else the table for known GPUs, else None."""
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in GPU_PEAK_TFLOPS.items():  # the table is ordered most specific first
        if all(part in name for part in key.split()):
            return value
    return None


def step_flops(preset: str, batch: int, num_classes: int) -> float:
    """Model FLOPs of one training step: 3 x (batch clips + one encoding of the class texts), 2 FLOPs per MAC.

    From :func:`pevl.tools.profile.profile_model` (on the ``meta`` device); should that fail, from one forward of a
    single clip on the CPU under ``FlopCounterMode``.
    """
    from pevl.tools.profile import profile_model

    try:
        profile = profile_model(preset, num_video_frames=8, num_pose_frames=32, num_classes=num_classes)
    except Exception as err:  # noqa: BLE001 -- any failure of the profiler falls back to counting a real forward
        print(f"warning: pevl profile failed ({type(err).__name__}: {err}); counting a CPU forward", file=sys.stderr)
        return 3 * _counted_forward_flops(preset, batch, num_classes)
    forward_macs = batch * profile["gflops"] + num_classes * profile["text_gflops_per_prompt"]
    return 3 * 2 * forward_macs * 1e9


def _counted_forward_flops(preset: str, batch: int, num_classes: int) -> float:
    """FLOPs of one forward (``batch`` clips, texts encoded once) counted on the CPU, scaled from a single clip."""
    from torch.utils.flop_counter import FlopCounterMode

    model = create_model(preset, num_classes=num_classes).eval()
    texts = model.build_class_texts([f"action number {i}" for i in range(num_classes)])
    video, pose = _inputs(model, 1, torch.device("cpu"))
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            features = model.encode_class_texts(texts)
        text_flops = counter.get_total_flops()
        with FlopCounterMode(display=False) as counter:
            model(video=video, pose=pose, texts=features)
    return batch * counter.get_total_flops() + text_flops


def _inputs(model: PeVL, batch: int, device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Random frames and keypoints (in [-1, 1], score 1) of ``batch`` clips."""
    cfg = model.config
    size = cfg.clip.vision.image_size
    video = torch.randn(batch, cfg.num_video_frames, 3, size, size, device=device) if cfg.use_video else None
    pose = None
    if cfg.use_pose:
        xy = torch.rand(batch, cfg.num_pose_frames, cfg.num_joints, 2, device=device) * 2 - 1
        rest = torch.ones(batch, cfg.num_pose_frames, cfg.num_joints, cfg.pose_channels - 2, device=device)
        pose = torch.cat([xy, rest], dim=-1)
    return video, pose


def peak_memory_gib(device: torch.device) -> float:
    """Peak memory: allocated on the GPU since the last reset, or this process's peak resident size on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_step(
    preset: str,
    batch: int,
    compiled: bool,
    checkpointing: bool,
    device: torch.device,
    steps: int,
    num_classes: int,
    flops: float,
    peak_tflops: float | None,
) -> StepResult:
    """Time ``steps`` optimiser steps after a warm-up step (which compiles when ``compiled``)."""
    torch.manual_seed(0)
    model = create_model(preset, num_classes=num_classes, grad_checkpointing=checkpointing).to(device).train()
    optimizer = build_optimizer(model, OptimSection())
    forward = torch.compile(model) if compiled else model
    texts = model.build_class_texts([f"action number {i}" for i in range(num_classes)]).to(device)
    video, pose = _inputs(model, batch, device)
    labels = torch.randint(0, num_classes, (batch,), device=device)
    params = [p for p in model.parameters() if p.requires_grad]

    def step() -> None:
        with autocast(device, "auto", training=True):
            out = forward(video=video, pose=pose, texts=texts, labels=labels)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    step()
    synchronize(device)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    step_s = (time.perf_counter() - start) / steps
    tflops = flops / step_s / 1e12
    result = StepResult(
        preset, batch, compiled, checkpointing, batch / step_s, step_s, peak_memory_gib(device), tflops,
        tflops / peak_tflops if peak_tflops else None, max(0.0, first - step_s),
    )  # fmt: skip
    print(f"train step: {result}", file=sys.stderr)
    return result


def bench_loader(
    preset: str, data: Path, videos: list[str], workers: list[int], batches: int, batch_size: int
) -> tuple[list[tuple[int, float]], float]:
    """Clips/s of the training data pipeline for each number of loader workers (0 = in this process).

    Poses are extracted into a temporary ``extract-poses`` cache first (not timed), as a user does before training.

    Returns:
        ``(workers, clips/s)`` pairs and the seconds the pose extraction took.
    """
    from pevl.data.datasets import build_dataset
    from pevl.data.pose.extract import extract_poses
    from pevl.engine.loader import make_loader
    from pevl.models.presets import get_config

    model_cfg = get_config(preset)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = [data / "videos" / name for name in videos]
        (root / "train.txt").write_text("".join(f"{p.name} {i}\n" for i, p in enumerate(paths)))
        (root / "classes.txt").write_text("".join(f"{p.stem}\n" for p in paths))
        start = time.perf_counter()
        extract_poses(paths, root / "poses.pkl", cache_dir=root / "cache", progress=False)
        extract_s = time.perf_counter() - start
        dataset = build_dataset(
            "video_list", "train", root=root, train=True, num_video_frames=model_cfg.num_video_frames,
            num_pose_frames=model_cfg.num_pose_frames, image_size=model_cfg.clip.vision.image_size,
            use_video=model_cfg.use_video, use_pose=model_cfg.use_pose, pose_cache_dir=root / "cache",
            video_dir=str(data / "videos"),
        )  # fmt: skip
        for num_workers in workers:
            loader = make_loader(dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                                 persistent_workers=num_workers > 0)  # fmt: skip
            stream = _repeat(loader)
            next(stream)  # start-up (worker processes, first decode) not timed
            start = time.perf_counter()
            clips = sum(len(next(stream)["label"]) for _ in range(batches))
            results.append((num_workers, clips / (time.perf_counter() - start)))
            print(f"loader: {num_workers} workers {results[-1][1]:.2f} clips/s", file=sys.stderr)
            del stream, loader
    return results, extract_s


def _repeat(loader: object):  # noqa: ANN202 -- a generator over epochs of a loader (fresh batches each time)
    while True:
        yield from iterate(loader, "benchmark data loader")  # type: ignore[arg-type]


def render(
    rows: list[StepResult],
    loader: list[tuple[int, float]],
    device: torch.device,
    steps: int,
    num_classes: int,
    peak_tflops: float | None,
    quick: bool,
) -> str:
    """The Markdown section of ``docs/benchmarks.md``."""
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU: {machine()}"
    precision = "bf16 autocast" if device.type == "cuda" else "fp32 (`train.amp: auto` on a CPU)"
    peak = f"{peak_tflops:.0f} TFLOP/s bf16 peak" if peak_tflops else "no known peak: MFU left out"
    lines = [
        "## Training",
        "",
        f"On {where}; {precision}, {peak}. 8 RGB + 32 pose frames at 224 px, {num_classes} class texts encoded every "
        f"step, CLIP frozen; mean of {steps} optimiser steps after one warm-up step. "
        "`python benchmarks/bench_train.py` regenerates it" + (" (`--quick`: a smoke run, not a measurement)" if quick
                                                              else "") + ".",
        "",
        "| preset | batch | compile | act. ckpt | clips/s | s / step | peak mem GiB | TFLOP/s | MFU | compile s |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    for r in rows:
        if r.error:
            lines.append(f"| {r.preset} | {r.batch} | {r.compiled} | {r.checkpointing} | {r.error} |||||")
            continue
        mfu = f"{100 * r.mfu:.1f}%" if r.mfu is not None else "-"
        lines.append(
            f"| {r.preset} | {r.batch} | {'yes' if r.compiled else 'no'} | {'yes' if r.checkpointing else 'no'} | "
            f"{r.clips_per_s:.2f} | {r.step_s:.3f} | {r.peak_gib:.1f} | {r.tflops:.2f} | {mfu} | "
            f"{r.compile_s:.0f} |"
        )
    lines += [
        "",
        "FLOPs per step = 3 x the forward's (`pevl profile`, 2 FLOPs per multiply-add), the convention MFU figures "
        "use; as the CLIP weights are frozen, the backward computes no weight gradients for them and the real work "
        "is nearer 2x the forward, so MFU is flattered by up to 1.5x. Activation checkpointing's recomputation is "
        "not counted.",
    ]
    if device.type != "cuda":
        lines += [
            "",
            "On a CPU the peak memory is the process's peak resident size so far (it only grows). These rows come "
            "from a CPU; on a GPU, `python benchmarks/bench_train.py --presets pevl_vit_b16 vl_vit_b16 "
            "--batch-sizes 32 64 --workers 0 1 2 4 8` (about ten minutes, eight compilations included) fills the "
            "table with bf16 autocast, fused AdamW and the MFU against the GPU's peak.",
        ]
    if loader:
        per_worker = max((rate / w for w, rate in loader if w > 0), default=None)
        single = next((rate for w, rate in loader if w == 0), None)
        lines += [
            "",
            "Data loader, training pipeline (decode + sample, poses from the pose cache, random crop, normalise) on "
            "the Kinetics clips of `../shared/data` (340x256):",
            "",
            "| loader workers | clips/s | clips/s per worker |",
            "|---:|---:|---:|",
        ]
        for workers, rate in loader:
            label = "0 (main process)" if workers == 0 else str(workers)
            lines.append(f"| {label} | {rate:.1f} | {rate / max(workers, 1):.1f} |")
        rate = per_worker or single
        fastest = max((r.clips_per_s for r in rows if not r.error), default=None)
        if rate and fastest:
            lines += [
                "",
                f"At {rate:.1f} clips/s per worker, the fastest training row ({fastest:.2f} clips/s) needs "
                f"{math.ceil(fastest / rate)} loader workers (`data.num_workers`) to stay busy; larger videos "
                "decode slower (see the data pipeline table).",
            ]
    return "\n".join(lines)


def main() -> int:
    """Run the benchmark, print the table and (unless ``--no-write``) update the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["pevl_vit_b16", "vl_vit_b16"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32, 64])
    parser.add_argument("--compile", choices=("both", "on", "off"), default="both", help="torch.compile rows")
    parser.add_argument("--checkpointing", choices=("both", "on", "off"), default="both", help="activation ckpt rows")
    parser.add_argument("--steps", type=int, default=10, help="timed optimiser steps per row")
    parser.add_argument("--classes", type=int, default=100, help="class texts encoded each step")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2, 4, 8], help="loader workers to time")
    parser.add_argument("--loader-batches", type=int, default=20, help="batches timed per loader setting")
    parser.add_argument("--loader-preset", default="pevl_vit_b16", help="whose frame counts the loader produces")
    parser.add_argument("--peak-tflops", type=float, help="the device's peak bf16 TFLOP/s (default: known GPUs)")
    parser.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--quick", action="store_true", help="CPU smoke run: batch 1, 1 step, no compile, 1 video")
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help="the real clips (default: ../shared/data)")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md", help="the report to update")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    videos = list(VIDEOS)
    if args.quick:
        args.batch_sizes, args.steps, args.compile, args.classes = [1], 1, "off", 8
        args.presets = args.presets if "--presets" in sys.argv else ["vl_vit_b16"]
        args.workers, args.loader_batches, videos = [0, 1], 3, videos[:1]
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    peak = device_peak_tflops(device, args.peak_tflops)
    modes = {"both": (False, True), "on": (True,), "off": (False,)}
    rows = []
    for preset in args.presets:
        for batch in args.batch_sizes:
            flops = step_flops(preset, batch, args.classes)
            for compiled, ckpt in itertools.product(modes[args.compile], modes[args.checkpointing]):
                try:
                    rows.append(
                        bench_step(preset, batch, compiled, ckpt, device, args.steps, args.classes, flops, peak)
                    )
                except torch.OutOfMemoryError:
                    rows.append(StepResult(preset, batch, compiled, ckpt, 0, 0, 0, 0, None, 0, "out of memory"))
                finally:
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
    loader: list[tuple[int, float]] = []
    if all((args.data / "videos" / name).is_file() for name in videos):
        loader, _ = bench_loader(args.loader_preset, args.data, videos, args.workers, args.loader_batches, 1)
    table = render(rows, loader, device, args.steps, args.classes, peak, args.quick)
    print(table)
    if not args.no_write:
        write_section(args.output, SECTION, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
