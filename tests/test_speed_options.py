"""Speed options: what ``amp: auto`` resolves to, the on-disk class-text cache, zero-copy checkpoint loading, and the
training switches for GPUs (fused AdamW, ``train.compile``), all checked on the CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pevl.apps.text_cache import (
    DamagedEntry,
    TextFeatureCache,
    load_text_features,
    text_cache_key,
    weights_identity,
)
from pevl.engine import builder
from pevl.engine.builder import (
    BF16_MIN_WIDTH,
    cpuinfo_has_bf16,
    load_trained_model,
    resolve_amp,
    skip_random_init,
)
from pevl.engine.checkpoint import MODEL_FILE, save_checkpoint
from pevl.engine.config import OptimSection, RunConfig, load_config
from pevl.engine.optim import build_optimizer
from pevl.errors import PevlError
from pevl.models.presets import create_model

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
LABELS = ["clean and jerk", "tai chi", "archery"]
ROOT = Path(__file__).resolve().parents[1]


# ---- amp: auto ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_resolves_as_documented(monkeypatch, native):
    monkeypatch.setattr(builder, "cpu_has_native_bf16", lambda: native)
    wide, narrow = 768, 64
    # CPU training: always fp32.
    assert resolve_amp(CPU, "auto", training=True, width=wide) is None
    # CPU inference: bf16 only for wide towers on CPUs with native bf16.
    assert resolve_amp(CPU, "auto", training=False, width=wide) == (torch.bfloat16 if native else None)
    assert resolve_amp(CPU, "auto", training=False, width=BF16_MIN_WIDTH) == (torch.bfloat16 if native else None)
    assert resolve_amp(CPU, "auto", training=False, width=BF16_MIN_WIDTH - 1) is None
    assert resolve_amp(CPU, "auto", training=False, width=narrow) is None
    # GPUs: bf16 for training and inference, whatever the width.
    for training in (True, False):
        assert resolve_amp(CUDA, "auto", training=training, width=narrow) == torch.bfloat16
    # Explicit modes are obeyed.
    assert resolve_amp(CPU, "bf16", training=True, width=narrow) == torch.bfloat16
    assert resolve_amp(CUDA, "off", training=False) is None
    assert resolve_amp(CUDA, "fp16", training=True) == torch.float16
    with pytest.raises(PevlError, match="fp16 needs a GPU"):
        resolve_amp(CPU, "fp16", training=False)


def test_autocast_context_follows_the_resolution(monkeypatch):
    monkeypatch.setattr(builder, "cpu_has_native_bf16", lambda: True)
    with builder.autocast(CPU, "auto", training=False, width=768):
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")
    with builder.autocast(CPU, "auto", training=False, width=64):
        assert not torch.is_autocast_enabled("cpu")


def test_cpu_bf16_flags_are_read_from_cpuinfo():
    zen4 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n"
    sapphire = "flags\t\t: avx512f amx_bf16 amx_tile\n"
    graviton3 = "Features\t: fp asimd sve bf16 i8mm\n"
    skylake = "flags\t\t: fpu avx2 avx512f avx512bw avx512_vnni\n"
    assert cpuinfo_has_bf16(zen4) and cpuinfo_has_bf16(sapphire) and cpuinfo_has_bf16(graviton3)
    assert not cpuinfo_has_bf16(skylake) and not cpuinfo_has_bf16("")


# ---- the class-text cache -------------------------------------------------------------------------------------------


def _save_tiny(work_dir: Path, seed: int, preset: str = "vl_tiny") -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(seed)
    model = create_model(preset).eval()
    path = save_checkpoint(
        work_dir,
        model_state=model.state_dict(),
        epoch=0,
        step=0,
        config={},
        extra={"classes": LABELS, "model_config": model.config.to_dict()},
        keep_last=0,
    )
    return path, model


@pytest.fixture()
def tiny_checkpoint(tmp_path) -> tuple[Path, torch.nn.Module]:
    """A vl_tiny checkpoint directory and the model it holds."""
    return _save_tiny(tmp_path / "run", seed=0)


def test_cached_texts_equal_fresh_ones_and_are_hit_the_second_time(tiny_checkpoint, tmp_path):
    path, model = tiny_checkpoint
    cache = TextFeatureCache(path / MODEL_FILE, tmp_path / "texts")
    fresh, hit = cache.get_or_encode(model, LABELS, None, None)
    assert not hit and len(list((tmp_path / "texts").glob("*.safetensors"))) == 1
    again, hit = TextFeatureCache(path / MODEL_FILE, tmp_path / "texts").get_or_encode(model, LABELS, None, None)
    assert hit
    for name in ("sentence", "words", "word_mask", "phrase_index"):
        assert torch.equal(getattr(again, name), getattr(fresh, name)), name
    # Another label list, another precision, or coarse types: other entries, never the first one.
    for labels, coarse, dtype in ((LABELS[:2], None, None), (LABELS, None, torch.bfloat16), (LABELS, ["a"] * 3, None)):
        features, hit = cache.get_or_encode(model, labels, coarse, dtype)
        assert not hit and features.sentence.shape[0] == len(labels)
    assert len(list((tmp_path / "texts").glob("*.safetensors"))) == 4


def test_key_covers_labels_order_prompt_context_and_precision():
    base = ("w", LABELS, None, "coarse", 77, None)
    key = text_cache_key(*base)
    assert key == text_cache_key(*base)
    changed = [
        ("w2", LABELS, None, "coarse", 77, None),
        ("w", list(reversed(LABELS)), None, "coarse", 77, None),
        ("w", [*LABELS[:2], "archery "], None, "coarse", 77, None),
        ("w", LABELS, ["gym"] * 3, "coarse", 77, None),
        ("w", LABELS, None, "action", 77, None),
        ("w", LABELS, None, "coarse", 32, None),
        ("w", LABELS, None, "coarse", 77, torch.bfloat16),
    ]
    assert len({text_cache_key(*args) for args in changed} | {key}) == len(changed) + 1


def test_a_rewritten_checkpoint_invalidates_its_texts(tmp_path):
    work = tmp_path / "run"
    path, old_model = _save_tiny(work, seed=0)
    model_file = path / MODEL_FILE
    old, _ = TextFeatureCache(model_file, tmp_path / "texts").get_or_encode(old_model, LABELS, None, None)
    identity = weights_identity(model_file)
    # Same place, same size, new weights: what a user gets by training again into the same work dir.
    new_path, new_model = _save_tiny(tmp_path / "other", seed=1)
    os.replace(new_path / MODEL_FILE, model_file)
    assert weights_identity(model_file) != identity
    features, hit = TextFeatureCache(model_file, tmp_path / "texts").get_or_encode(new_model, LABELS, None, None)
    assert not hit and not torch.allclose(features.sentence, old.sentence)


def test_a_damaged_entry_is_a_miss_and_is_replaced(tiny_checkpoint, tmp_path):
    path, model = tiny_checkpoint
    cache = TextFeatureCache(path / MODEL_FILE, tmp_path / "texts")
    cache.get_or_encode(model, LABELS, None, None)
    entry = next((tmp_path / "texts").glob("*.safetensors"))
    key = entry.stem
    assert load_text_features(entry, "another key") is None  # an entry answers only to its own key
    entry.write_bytes(b"\x00garbage")
    with pytest.raises(DamagedEntry, match="unreadable"):
        load_text_features(entry, key)
    _, hit = cache.get_or_encode(model, LABELS, None, None)
    assert not hit and load_text_features(entry, key) is not None
    assert len(cache.warnings) == 1 and str(entry) in cache.warnings[0] and "encoded again" in cache.warnings[0]


# ---- loading without copies ------------------------------------------------------------------------------------------


def test_loaded_model_uses_the_checkpoint_weights_exactly(tiny_checkpoint):
    path, model = tiny_checkpoint
    loaded = load_trained_model(path).model
    expected = model.state_dict()
    got = loaded.state_dict()
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    assert {n: p.requires_grad for n, p in loaded.named_parameters()} == flags
    assert not loaded.training


def test_skip_random_init_restores_torch_init_even_on_error():
    normal = torch.nn.init.normal_
    with pytest.raises(RuntimeError), skip_random_init():
        assert torch.nn.init.normal_ is not normal
        raise RuntimeError("boom")
    assert torch.nn.init.normal_ is normal
    layer = torch.nn.Linear(4, 4)
    assert layer.weight.abs().sum() > 0  # initialised again


def test_predict_reads_cached_texts_the_second_time(tiny_checkpoint, tmp_path, shared_data):
    from pevl.apps.inference import predict_video

    path, _ = tiny_checkpoint
    video = shared_data / "videos" / "k400_tai_chi.mp4"
    runs = [predict_video(video, path, top_k=3, text_cache_dir=tmp_path / "texts") for _ in range(2)]
    assert [r["texts_cached"] for r in runs] == [False, True]
    assert runs[0]["top_k"] == runs[1]["top_k"]
    assert set(runs[0]["seconds"]) >= {"load", "decode", "texts", "model"}


def test_clip_poses_are_estimated_once_per_video_and_frames(tmp_path, shared_data, monkeypatch):
    import pevl.data.pose.base as pose_base
    from pevl.apps.inference import predict_video

    path, _ = _save_tiny(tmp_path / "run", seed=0, preset="pevl_tiny")
    video = shared_data / "videos" / "k400_clean_and_jerk.mp4"
    first = predict_video(video, path, top_k=3, text_cache_dir=tmp_path / "texts")
    assert len(list((Path(os.environ["PEVL_CACHE"]) / "clip_poses").glob("*.npz"))) >= 1

    def no_estimator(*args: object, **kwargs: object) -> None:
        raise AssertionError("the poses were estimated again")

    monkeypatch.setattr(pose_base, "create_extractor", no_estimator)
    second = predict_video(video, path, top_k=3, text_cache_dir=tmp_path / "texts")
    assert second["top_k"] == first["top_k"] and second["pose_source"] == first["pose_source"] == "extracted"
    assert second["person_detected_fraction"] == first["person_detected_fraction"]


def test_clip_pose_entries_follow_the_video_frames_and_backend(tmp_path):
    import numpy as np

    from pevl.apps.pose_clip_cache import clip_pose_path, read_clip_poses, write_clip_poses

    video = tmp_path / "clip.mp4"
    video.write_bytes(b"one")
    frames = np.arange(4)
    entry = clip_pose_path(video, frames, "mediapipe", tmp_path / "cache")
    assert entry == clip_pose_path(video, frames.copy(), "mediapipe", tmp_path / "cache")
    others = {clip_pose_path(video, frames + 1, "mediapipe", tmp_path / "cache"),
              clip_pose_path(video, frames, "rtmlib", tmp_path / "cache")}  # fmt: skip
    assert entry not in others and len(others) == 2
    keypoint, score = np.random.rand(4, 17, 2).astype(np.float32), np.random.rand(4, 17).astype(np.float32)
    write_clip_poses(entry, keypoint, score)
    got = read_clip_poses(entry, 4)
    assert got is not None and np.array_equal(got[0], keypoint) and np.array_equal(got[1], score)
    assert read_clip_poses(entry, 5) is None  # another clip length
    os.utime(video, ns=(0, 10**9))  # the video changed (a rewrite with the same size)
    assert clip_pose_path(video, frames, "mediapipe", tmp_path / "cache") != entry
    entry.write_bytes(b"not an npz")
    assert read_clip_poses(entry, 4) is None
    assert clip_pose_path(tmp_path / "missing.mp4", frames, "mediapipe") is None


# ---- training switches ----------------------------------------------------------------------------------------------


def test_adamw_is_fused_only_on_gpus():
    model = torch.nn.Linear(3, 3)
    optimizer = build_optimizer(model, OptimSection())
    assert not optimizer.defaults.get("fused")
    assert RunConfig().train.compile is False
    assert load_config(None, ["train.compile=true"]).train.compile is True


@pytest.mark.slow
def test_train_compile_sends_the_training_forward_through_torch_compile(tmp_path, monkeypatch):
    from pevl.data.synthetic import make_synthetic
    from pevl.engine.train import train

    compiled: list[torch.nn.Module] = []

    def fake_compile(module: torch.nn.Module, *args: object, **kwargs: object) -> torch.nn.Module:
        compiled.append(module)
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    root = tmp_path / "synthetic"
    make_synthetic(root, num_classes=2, per_class=3, frames=8, size=32, val_fraction=0.34, progress=False)
    overrides = [
        "model.preset=vl_tiny", "data.dataset=synthetic", f"data.root={root}", "model.overrides.num_video_frames=2",
        "data.batch_size=2", "data.num_workers=0", "optim.epochs=1", "optim.warmup_epochs=0",
        "train.eval_interval=0", "train.max_steps=1",
    ]  # fmt: skip
    result = train(load_config(None, [*overrides, "train.compile=true"]), tmp_path / "on", progress=False)
    assert result.steps == 1 and len(compiled) == 1
    train(load_config(None, overrides), tmp_path / "off", progress=False)
    assert len(compiled) == 1  # off by default


@pytest.mark.slow
def test_bench_train_quick_mode_writes_its_table(tmp_path):
    out = tmp_path / "benchmarks.md"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_train.py"), "--quick", "--output", str(out)],
        check=True,
        env=env,
        cwd=ROOT,
        timeout=1200,
    )
    text = out.read_text()
    assert "<!-- bench:train -->" in text and "clips/s" in text and "MFU" in text
