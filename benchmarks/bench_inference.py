"""Inference speed of the real-size presets on this CPU: fp32 against bf16 autocast, and what `pevl predict` spends.

For each preset (random weights: the speed is the same as with CLIP's) one clip of 8 RGB + 32 pose frames at 224 px
is scored against the class texts, whose features are computed once and cached (as ``pevl eval`` and ``pevl predict``
do); the text encoding is timed on its own. The preparation of a real video (decoding, sampling, BlazePose on the 32
pose frames, crops) is timed on ``k400_clean_and_jerk.mp4``. When the ``openai-clip`` distribution is installed (the
test extra), the bare ViT-B/16 image tower is also timed against OpenAI's reference ``model.py`` on the same frames.
Prints a Markdown table and writes it into ``docs/benchmarks.md`` between the ``<!-- bench:inference -->`` markers.

    python benchmarks/bench_inference.py [--presets pevl_vit_b16 vl_vit_b16 pevl_vit_l14] [--classes 400] [--no-write]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from _report import SHARED_DATA, machine, write_section
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
        return timed(lambda: prepare_clip(video, cfg, pose_cache_dir=empty_cache), repeat)


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


def main() -> int:
    """Run the benchmark, print the table and (unless ``--no-write``) update ``docs/benchmarks.md``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["pevl_vit_b16", "vl_vit_b16", "pevl_vit_l14"])
    parser.add_argument("--classes", type=int, default=400, help="class texts scored (Kinetics-400: 400)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help="the real clips (default: ../shared/data)")
    parser.add_argument("--no-write", action="store_true", help="print only, do not update docs/benchmarks.md")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = [row for preset in args.presets for row in bench_preset(preset, args.classes, args.repeat)]
    video = args.data / "videos" / "k400_clean_and_jerk.mp4"
    prep_s = bench_preparation(video, args.repeat) if video.is_file() else None
    backbone = bench_backbone(8, args.repeat)
    table = render(rows, args.classes, prep_s, args.repeat, backbone)
    print(table)
    if not args.no_write:
        write_section(ROOT / "docs" / "benchmarks.md", SECTION, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
