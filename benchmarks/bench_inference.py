"""Inference speed on this CPU: fp32 against bf16, what ``amp: auto`` picks, and ``pevl predict`` end to end.

* *Presets*: for each real-size preset (random weights: the speed is the same as with CLIP's) one clip of 8 RGB + 32
  pose frames at 224 px is scored against the class texts, whose features are computed once and cached (as
  ``pevl eval`` and ``pevl predict`` do); the text encoding is timed on its own.
* *Precision*: fp32 against bf16 autocast, one clip, timed back to back in alternation (so that other work on the
  machine weighs on both alike) for the tiny presets, the pose + text config at JHMDB width
  (``configs/pose_text_pyskl.yaml`` with ``benchmarks/jhmdb_pose_text.py``'s model) and ``pevl_vit_b16``, next to
  what ``amp: auto`` resolves to (:func:`pevl.engine.builder.resolve_amp`).
* *Compile*: today's path (bf16 autocast over fp32 weights) against bf16 weights, eager and through
  ``torch.compile`` with inductor freezing, for ``pevl_vit_b16``: speed, compile time, and the largest difference of
  the class probabilities.
* *predict*: the whole ``pevl predict`` command (interpreter, imports, checkpoint, decoding, BlazePose, 400 class
  texts, model) on ``k400_clean_and_jerk.mp4`` with the Kinetics-400 labels, run twice from an empty cache,
  against the model's own forward time.
* The preparation of a real video (decoding, sampling, BlazePose on the 32 pose frames, crops), and, when the
  ``openai-clip`` distribution is installed (the test extra), the bare ViT-B/16 image tower against OpenAI's
  reference ``model.py``.

Prints Markdown and writes it into ``docs/benchmarks.md`` between the ``<!-- bench:inference -->`` markers (presets,
preparation, backbone) and the ``<!-- bench:inference-speed -->`` ones (precision, compile, predict).

    python benchmarks/bench_inference.py [--presets pevl_vit_b16 vl_vit_b16 pevl_vit_l14] [--classes 400]
        [--skip presets precision compile predict preparation backbone] [--no-write]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from _report import SHARED_DATA, machine, write_section
from pevl.engine.builder import resolve_amp
from pevl.models.clip import VisionTransformer
from pevl.models.pevl import PeVL
from pevl.models.presets import create_model, get_config
from pevl.models.prompts import ClassTexts

ROOT = Path(__file__).resolve().parents[1]
SECTION = "inference"
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Best wall time of ``repeat`` calls after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench_precision(
    model: PeVL, video: Tensor | None, pose: Tensor | None, texts: ClassTexts, dtype: torch.dtype | None, repeat: int
) -> tuple[float, float]:
    """Seconds to encode the class texts once, and to score one clip against their cached features."""

    def context() -> torch.autocast:
        return torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None)

    def encode_texts() -> None:
        with torch.no_grad(), context():
            model.text_encoder.encode(texts.tokens, texts.word_mask, texts.phrase_index, model.clip.text)

    with torch.no_grad(), context():
        features = model.encode_class_texts(texts)

    def score() -> None:
        with torch.no_grad(), context():
            model(video=video, pose=pose, texts=features)

    return timed(encode_texts, 1), timed(score, repeat)


def bench_preset(preset: str, num_classes: int, repeat: int) -> list[dict]:
    """Rows (one per precision) of seconds per clip and per encoding of ``num_classes`` class texts."""
    model = create_model(preset).eval()
    cfg = model.config
    size = cfg.clip.vision.image_size
    video = torch.randn(1, cfg.num_video_frames, 3, size, size) if cfg.use_video else None
    pose = None
    if cfg.use_pose:
        pose = torch.cat([torch.rand(1, cfg.num_pose_frames, cfg.num_joints, 2) * 2 - 1,
                          torch.ones(1, cfg.num_pose_frames, cfg.num_joints, 1)], dim=-1)  # fmt: skip
    texts = model.build_class_texts([f"action number {i}" for i in range(num_classes)])
    rows = []
    for name, dtype in PRECISIONS.items():
        text_s, clip_s = bench_precision(model, video, pose, texts, dtype, repeat)
        rows.append({"preset": preset, "precision": name, "clip_s": clip_s, "text_s": text_s})
        print(f"{preset} {name}: {clip_s:.2f} s/clip, {num_classes} class texts {text_s:.2f} s", file=sys.stderr)
    return rows


def bench_backbone(frames: int, repeat: int) -> dict[str, dict[str, float]] | None:
    """Seconds for ``frames`` images through our ViT-B/16 tower and OpenAI's reference one, per precision.

    Returns None when OpenAI's reference code (the ``openai-clip`` distribution) is not installed.
    """
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from reference_clip import reference_model_module  # needs pytest, which the test extra installs
    except ImportError:
        return None
    finally:
        sys.path.pop(0)
    import pytest

    try:
        reference_module = reference_model_module()
    except pytest.skip.Exception:  # openai-clip is not installed
        return None
    vision = get_config("vl_vit_b16").clip.vision
    towers = {
        "pevl": VisionTransformer(vision, embed_dim=512).eval(),
        "openai": reference_module.VisionTransformer(
            input_resolution=vision.image_size, patch_size=vision.patch_size, width=vision.width,
            layers=vision.layers, heads=vision.heads, output_dim=512,
        ).eval(),
    }  # fmt: skip
    images = torch.randn(frames, 3, vision.image_size, vision.image_size)
    result: dict[str, dict[str, float]] = {}
    for precision, dtype in PRECISIONS.items():
        for name, tower in towers.items():

            def run(tower: torch.nn.Module = tower, dtype: torch.dtype | None = dtype) -> None:
                with torch.no_grad(), torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                    tower(images)

            result.setdefault(precision, {})[name] = timed(run, repeat)
        print(f"ViT-B/16 tower {precision}: {result[precision]}", file=sys.stderr)
    return result


def bench_preparation(video: Path, repeat: int) -> float:
    """Seconds to turn a real video into model inputs, BlazePose included (no pose cache)."""
    from pevl.apps.inference import prepare_clip

    cfg = get_config("pevl_vit_b16")
    with tempfile.TemporaryDirectory() as empty_cache:  # no cached poses: BlazePose runs every time
        previous = os.environ.get("PEVL_CACHE")
        os.environ["PEVL_CACHE"] = empty_cache

        def prepare() -> object:
            shutil.rmtree(Path(empty_cache) / "clip_poses", ignore_errors=True)
            return prepare_clip(video, cfg, pose_cache_dir=empty_cache)

        try:
            return timed(prepare, repeat)
        finally:
            if previous is None:
                os.environ.pop("PEVL_CACHE", None)
            else:
                os.environ["PEVL_CACHE"] = previous


# ---- fp32 against bf16, and what `amp: auto` picks ------------------------------------------------------------------

TINY_WORKLOADS = ("pevl_tiny", "vl_tiny", "pt_tiny")
JHMDB = "pose_text_pyskl (JHMDB width)"


def jhmdb_model() -> PeVL:
    """The model of ``configs/pose_text_pyskl.yaml`` at the width ``benchmarks/jhmdb_pose_text.py`` trains."""
    from jhmdb_pose_text import DEFAULTS
    from pevl.engine.builder import model_config
    from pevl.engine.config import load_config

    cfg = load_config(ROOT / "configs" / "pose_text_pyskl.yaml", [o for o in DEFAULTS if o.startswith("model.")])
    return PeVL(model_config(cfg))


def clip_inputs(model: PeVL, batch: int = 1) -> tuple[Tensor | None, Tensor | None]:
    """Random model inputs of one clip: CLIP-normalised-like frames and keypoints in [-1, 1] with score 1."""
    cfg = model.config
    size = cfg.clip.vision.image_size
    video = torch.randn(batch, cfg.num_video_frames, 3, size, size) if cfg.use_video else None
    pose = None
    if cfg.use_pose:
        xy = torch.rand(batch, cfg.num_pose_frames, cfg.num_joints, 2) * 2 - 1
        rest = torch.ones(batch, cfg.num_pose_frames, cfg.num_joints, cfg.pose_channels - 2)
        pose = torch.cat([xy, rest], dim=-1)
    return video, pose


def alternating(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Best wall time of each function over ``repeat`` rounds that call them in turn (after one warm-up each)."""
    rounds = alternating_rounds(fns, repeat)
    return {name: min(r[name] for r in rounds) for name in fns}


def alternating_rounds(fns: dict[str, Callable[[], object]], repeat: int) -> list[dict[str, float]]:
    """Wall times of ``repeat`` rounds, each calling every function once in turn (after one warm-up each)."""
    for fn in fns.values():
        fn()
    rounds = []
    for _ in range(repeat):
        times = {}
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name] = time.perf_counter() - start
        rounds.append(times)
    return rounds


def bench_amp(name: str, model: PeVL, num_classes: int, repeat: int) -> dict:
    """fp32 against bf16 autocast for one clip of ``model``, and what ``amp: auto`` picks on this machine."""
    model.eval()
    video, pose = clip_inputs(model)
    texts = model.build_class_texts([f"action number {i}" for i in range(num_classes)])
    features = {}
    for precision, dtype in PRECISIONS.items():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
            features[precision] = model.encode_class_texts(texts)
            model.train(False)  # drop the in-model cache so that the other precision encodes its own

    def score(precision: str) -> Callable[[], object]:
        def run() -> object:
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                return model(video=video, pose=pose, texts=features[precision])

        return run

    rounds = alternating_rounds({precision: score(precision) for precision in PRECISIONS}, repeat)
    times = {precision: min(r[precision] for r in rounds) for precision in PRECISIONS}
    ratios = sorted(r["fp32"] / r["bf16"] for r in rounds)
    width = model.config.clip.vision.width
    auto = resolve_amp(torch.device("cpu"), "auto", training=False, width=width)
    row = {"workload": name, "width": width, "fp32_s": times["fp32"], "bf16_s": times["bf16"],
           "speedup": ratios[len(ratios) // 2], "auto": "bf16" if auto is not None else "fp32"}  # fmt: skip
    print(f"{name}: {row}", file=sys.stderr)
    return row


# ---- bf16 weights and torch.compile against today's autocast path ---------------------------------------------------


def cast_image_tower(model: PeVL, dtype: torch.dtype) -> None:
    """Store the CLIP image tower's linear and convolution weights in ``dtype`` (what autocast casts them to)."""
    visual = model.clip.visual
    for module in visual.modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            module.to(dtype)
    visual.proj.data = visual.proj.data.to(dtype)


def bench_compile(preset: str, num_classes: int, repeat: int) -> dict:
    """bf16 autocast over fp32 weights against bf16 image-tower weights (eager, and compiled with inductor freezing)."""
    import torch._inductor.config as inductor_config

    model = create_model(preset).eval()
    video, pose = clip_inputs(model)
    texts = model.build_class_texts([f"action number {i}" for i in range(num_classes)])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        features = model.encode_class_texts(texts)
    half = copy.deepcopy(model)
    cast_image_tower(half, torch.bfloat16)
    half_inputs = {"video": video, "pose": pose}

    def autocast_path() -> Tensor:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return model(video=video, pose=pose, texts=features).logits.float().softmax(-1)

    def eager_bf16() -> Tensor:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return half(**half_inputs, texts=features).logits.float().softmax(-1)

    inductor_config.freezing = True
    compiled = torch.compile(half)

    def compiled_bf16() -> Tensor:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return compiled(**half_inputs, texts=features).logits.float().softmax(-1)

    start = time.perf_counter()
    compiled_bf16()
    compile_s = time.perf_counter() - start
    reference = autocast_path()
    diffs = {"bf16 CLIP weights": (eager_bf16() - reference).abs().max().item(),
             "bf16 CLIP weights + compile": (compiled_bf16() - reference).abs().max().item()}  # fmt: skip
    same_top1 = {"bf16 CLIP weights": bool(eager_bf16().argmax() == reference.argmax()),
                 "bf16 CLIP weights + compile": bool(compiled_bf16().argmax() == reference.argmax())}  # fmt: skip
    paths = {"autocast": autocast_path, "bf16 CLIP weights": eager_bf16, "bf16 CLIP weights + compile": compiled_bf16}
    times = alternating(paths, repeat)
    result = {"preset": preset, "times": times, "compile_s": compile_s, "max_diff": diffs, "same_top1": same_top1}
    print(f"compile: {result}", file=sys.stderr)
    return result


# ---- `pevl predict`, the whole command ------------------------------------------------------------------------


def predict_forward_seconds(checkpoint: Path, repeat: int = 2) -> float:
    """Best time of one warm forward of a clip as ``pevl predict`` runs it (its precision, texts encoded)."""
    from pevl.engine.builder import load_trained_model

    model = load_trained_model(checkpoint).model
    width = model.config.clip.vision.width
    dtype = resolve_amp(torch.device("cpu"), "auto", training=False, width=width)
    video, pose = clip_inputs(model)
    context = torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None)
    with torch.no_grad(), context:
        features = model.encode_class_texts(model.build_class_texts(["a", "b"]))

    def forward() -> None:
        with torch.no_grad(), torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            model(video=video, pose=pose, texts=features)

    return timed(forward, repeat)


def bench_predict(preset: str, video: Path, labels: Path, forward_s: float | None = None) -> dict:
    """Run ``pevl predict`` twice (empty text cache first) on a ``preset`` checkpoint with random weights."""
    from pevl.engine.checkpoint import save_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        model = create_model(preset)
        extra = {"classes": [], "model_config": model.config.to_dict()}
        checkpoint = save_checkpoint(
            Path(tmp) / "run", model_state=model.state_dict(), epoch=0, step=0, config={}, extra=extra, keep_last=0
        )
        del model
        if forward_s is None:
            forward_s = predict_forward_seconds(checkpoint)
        env = {**os.environ, "PEVL_CACHE": str(Path(tmp) / "cache")}
        command = [sys.executable, "-m", "pevl", "predict", str(video), "--checkpoint", str(checkpoint),
                   "--labels", str(labels), "--json"]  # fmt: skip
        runs = []
        for _ in range(2):
            start = time.perf_counter()
            # A limit on the wait: a stuck `pevl predict` fails the benchmark instead of hanging it.
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=True, timeout=1800)
            wall = time.perf_counter() - start
            runs.append({"wall_s": wall, **json.loads(done.stdout)})
            print(f"predict: {wall:.2f} s {runs[-1]['seconds']}", file=sys.stderr)
    return {"preset": preset, "runs": runs, "forward_s": forward_s}


def render(
    rows: list[dict],
    num_classes: int,
    prep_s: float | None,
    repeat: int,
    backbone: dict[str, dict[str, float]] | None = None,
    frames: int = 8,
) -> str:
    """The Markdown section of ``docs/benchmarks.md``."""
    lines = [
        "## Inference",
        "",
        f"One clip (8 RGB + 32 pose frames, 224 px) on this machine ({machine()}), best of {repeat} after a warm-up; "
        "random weights (same speed as CLIP's). "
        "`python benchmarks/bench_inference.py` regenerates it.",
        "",
        f"| preset | precision | s / clip | clips / s | {num_classes} class texts, s (once per label list) |",
        "|---|---|---:|---:|---:|",
    ]
    fp32 = {r["preset"]: r["clip_s"] for r in rows if r["precision"] == "fp32"}
    for r in rows:
        speedup = f" ({fp32[r['preset']] / r['clip_s']:.1f}x)" if r["precision"] != "fp32" else ""
        lines.append(
            f"| {r['preset']} | {r['precision']}{speedup} | {r['clip_s']:.2f} | {1 / r['clip_s']:.2f} | "
            f"{r['text_s']:.2f} |"
        )
    if backbone is not None:
        lines += [
            "",
            f"The bare ViT-B/16 image tower on {frames} frames against OpenAI's reference `model.py` (same shapes, "
            "random weights), frames/s:",
            "",
            "| precision | pevl | OpenAI reference | ratio |",
            "|---|---:|---:|---:|",
        ]
        for precision, times in backbone.items():
            lines.append(
                f"| {precision} | {frames / times['pevl']:.1f} | {frames / times['openai']:.1f} | "
                f"{times['openai'] / times['pevl']:.2f} |"
            )
        lines += [
            "",
            "What bf16 autocast gains depends on the CPU: with AVX512-bf16 alone about 2x, with AMX-bf16 (Intel "
            "Sapphire Rapids and later) OpenAI's tower goes from 8.1 to 30.2 frames/s on 2 cores, with the same "
            "embeddings.",
        ]
    if prep_s is not None:
        b16 = next((r["clip_s"] for r in rows if r["preset"] == "pevl_vit_b16" and r["precision"] == "bf16"), None)
        lines += [
            "",
            f"Preparing a real video for the model (`k400_clean_and_jerk.mp4`, 340x256, 10 s: probe, sample, decode, "
            f"BlazePose on the 32 pose frames, centre crop): {prep_s:.2f} s.",
        ]
        if b16 is not None:
            text = next(r["text_s"] for r in rows if r["preset"] == "pevl_vit_b16" and r["precision"] == "bf16")
            lines.append(
                f"`pevl predict` with ViT-B/16 PeVL in bf16 is then about {prep_s:.1f} + {text:.1f} (texts) + "
                f"{b16:.1f} (clip) = {prep_s + text + b16:.1f} s plus loading the checkpoint."
            )
    return "\n".join(lines)


def render_precision(rows: list[dict], repeat: int) -> str:
    """The fp32 / bf16 / ``auto`` table."""
    lines = [
        "### Precision: fp32 against bf16, and what `amp: auto` picks",
        "",
        f"One clip, the class texts already encoded; {max(repeat, 50)} rounds (ViT-B/16: {repeat}), each timing fp32 "
        "then bf16 back to back, in one "
        "run (other work was running on the machine: compare within a row). `auto` on a CPU uses bf16 for inference "
        "when the CPU has native bf16 (AVX512-BF16, AMX-BF16, Arm BF16) and the image tower is at least 256 wide "
        "(`pevl.engine.builder.resolve_amp`); it always keeps fp32 for CPU training.",
        "",
        "| workload | width | fp32 ms (best) | bf16 ms (best) | bf16 speed-up (median of rounds) | `auto` picks "
        "| faster one? |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        faster = "bf16" if r["speedup"] > 1 else "fp32"
        ok = "yes" if faster == r["auto"] else f"no ({abs(r['speedup'] - 1) * 100:.0f}% apart)"
        lines.append(
            f"| {r['workload']} | {r['width']} | {1e3 * r['fp32_s']:.1f} | {1e3 * r['bf16_s']:.1f} | "
            f"{r['speedup']:.2f}x | {r['auto']} | {ok} |"
        )
    return "\n".join(lines)


def render_compile(result: dict, repeat: int) -> str:
    """The compile table."""
    times = result["times"]
    base = times["autocast"]
    lines = [
        f"### bf16 weights and `torch.compile` ({result['preset']}, one clip)",
        "",
        f"Best of {repeat}, timed in alternation; probabilities compared with bf16 autocast over fp32 weights. "
        "*bf16 CLIP weights*: the image tower's linear and convolution weights stored in bf16, still under autocast "
        "(what autocast casts them to on every call). "
        f"Compiling (inductor, `freezing=True`) took {result['compile_s']:.0f} s.",
        "",
        "| path | s / clip | speed-up | max abs. probability diff. | same top-1 |",
        "|---|---:|---:|---:|---|",
        f"| bf16 autocast, fp32 weights | {base:.2f} | 1.00x | 0 | yes |",
    ]
    for name in ("bf16 CLIP weights", "bf16 CLIP weights + compile"):
        lines.append(
            f"| {name} | {times[name]:.2f} | {base / times[name]:.2f}x | {result['max_diff'][name]:.1e} | "
            f"{'yes' if result['same_top1'][name] else 'no'} |"
        )
    saved = base - times["bf16 CLIP weights + compile"]
    if saved > 0:
        lines += [
            "",
            f"`pevl predict` keeps the autocast path: compiling costs as much as {result['compile_s'] / saved:.0f} "
            "clips' worth of what it saves, which a one-shot command never earns back.",
        ]
    return "\n".join(lines)


def render_predict(result: dict) -> str:
    """The ``pevl predict`` end-to-end table."""
    first, second = result["runs"]
    stages = ["load", "decode", "pose", "texts", "model"]
    lines = [
        f"### `pevl predict` end to end ({result['preset']}, 400 labels)",
        "",
        "`pevl predict k400_clean_and_jerk.mp4 --labels label_map_k400.txt` on a checkpoint with random weights, "
        "run twice from an empty cache; *wall* is the whole process (interpreter start and imports included), "
        "the stages are what `--verbose` prints. The first run estimates the poses (BlazePose) and encodes the 400 "
        "texts; the second reads both from `$PEVL_CACHE` (`clip_poses`, `texts`). In both, the checkpoint is "
        "memory-mapped into a model built "
        "without random initialisation (no copy), and the NaN check of the weights sums each tensor once.",
        "",
        "| run | wall s | " + " | ".join(f"{s} s" for s in stages) + " | wall / model | precision |",
        "|---|---:|" + "---:|" * len(stages) + "---:|---|",
    ]
    for label, run in (("first", first), ("second (texts and poses cached)", second)):
        cells = " | ".join(f"{run['seconds'].get(s, 0.0):.2f}" for s in stages)
        ratio = run["wall_s"] / max(run["seconds"].get("model", 0.0), 1e-9)
        lines.append(f"| {label} | {run['wall_s']:.2f} | {cells} | {ratio:.2f}x | {run.get('precision', '?')} |")
    forward = result["forward_s"]
    if forward:
        lines += [
            "",
            f"The model's own forward as `pevl predict` runs it (one clip, its precision, texts encoded, warm) takes "
            f"{forward:.2f} s here, measured in the same run: the "
            f"second command takes {second['wall_s'] / forward:.1f}x that, the first {first['wall_s'] / forward:.1f}x. "
            "*wall / model* divides each command by its own model stage, timed in the same process: the steadier "
            "ratio where other work shares the CPU.",
        ]
    return "\n".join(lines)


def main() -> int:
    """Run the benchmark, print the tables and (unless ``--no-write``) update ``docs/benchmarks.md``.

    The preset table (with the preparation and the backbone comparison) goes to the ``inference`` section, the
    precision, compile and ``pevl predict`` tables to ``inference-speed``; each is written as soon as its part ends.
    """
    parts = ("presets", "precision", "compile", "predict", "preparation", "backbone")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["pevl_vit_b16", "vl_vit_b16", "pevl_vit_l14"])
    parser.add_argument("--classes", type=int, default=400, help="class texts scored (Kinetics-400: 400)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip", nargs="*", default=[], choices=parts, help="parts not to run")
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help="the real clips (default: ../shared/data)")
    parser.add_argument("--no-write", action="store_true", help="print only, do not update docs/benchmarks.md")
    args = parser.parse_args()
    torch.manual_seed(0)
    report = ROOT / "docs" / "benchmarks.md"
    video = args.data / "videos" / "k400_clean_and_jerk.mp4"
    labels = args.data / "labels" / "kinetics400" / "label_map_k400.txt"

    if "presets" not in args.skip:
        rows = [row for preset in args.presets for row in bench_preset(preset, args.classes, args.repeat)]
        prep_s = bench_preparation(video, args.repeat) if video.is_file() and "preparation" not in args.skip else None
        backbone = bench_backbone(8, args.repeat) if "backbone" not in args.skip else None
        table = render(rows, args.classes, prep_s, args.repeat, backbone)
        print(table)
        if not args.no_write:
            write_section(report, SECTION, table)

    sections = [
        "## Inference: precision, compilation and `pevl predict` end to end\n\n"
        f"On {machine()}; load average {os.getloadavg()[0]:.0f} when the run started (other work on the machine "
        "makes absolute times several times the idle ones: compare within a table). "
        "`python benchmarks/bench_inference.py --skip presets preparation backbone` regenerates it."
    ]

    def publish(body: str) -> None:
        sections.append(body)
        print(body)
        if not args.no_write:
            write_section(report, SECTION + "-speed", "\n\n".join(sections))

    kept = previous_parts(report)  # a skipped part keeps the table of an earlier run
    amp_rows: list[dict] = []
    if "precision" in args.skip and "precision" in kept:
        publish(kept["precision"])
    if "precision" not in args.skip:
        models: dict[str, Callable[[], PeVL]] = {name: (lambda n=name: create_model(n)) for name in TINY_WORKLOADS}
        models[JHMDB] = jhmdb_model
        models["pevl_vit_b16"] = lambda: create_model("pevl_vit_b16")
        for name, build in models.items():
            repeat = args.repeat if name == "pevl_vit_b16" else max(args.repeat, 50)
            amp_rows.append(bench_amp(name, build(), args.classes, repeat))
        publish(render_precision(amp_rows, args.repeat))
    if "predict" not in args.skip and video.is_file() and labels.is_file():
        publish(render_predict(bench_predict("pevl_vit_b16", video, labels)))
    elif "predict" in kept:
        publish(kept["predict"])
    if "compile" not in args.skip:
        publish(render_compile(bench_compile("pevl_vit_b16", args.classes, args.repeat), args.repeat))
    elif "compile" in kept:
        publish(kept["compile"])
    return 0


PART_HEADINGS = {"precision": "### Precision", "compile": "### bf16 weights", "predict": "### `pevl predict`"}


def previous_parts(report: Path) -> dict[str, str]:
    """The precision / compile / predict tables already in the report's ``inference-speed`` section, by part."""
    if not report.is_file():
        return {}
    text = report.read_text(encoding="utf-8")
    begin, end = f"<!-- bench:{SECTION}-speed -->", f"<!-- /bench:{SECTION}-speed -->"
    if begin not in text or end not in text:
        return {}
    body = text.split(begin, 1)[1].split(end, 1)[0]
    parts = {}
    for chunk in body.split("\n### ")[1:]:
        chunk = "### " + chunk.strip()
        for part, heading in PART_HEADINGS.items():
            if chunk.startswith(heading):
                parts[part] = chunk
    return parts


if __name__ == "__main__":
    sys.exit(main())
