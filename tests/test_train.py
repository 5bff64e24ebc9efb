"""Training, evaluation and resuming: one CPU, two processes, interrupted and killed runs give the same result."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pevl.cli import main as cli_main
from pevl.engine.checkpoint import find_latest, list_checkpoints, load_checkpoint
from pevl.engine.config import load_config
from pevl.engine.evaluate import run_evaluation
from pevl.engine.logger import read_metrics
from pevl.engine.train import train
from train_helpers import TINY_RUN, make_training_set


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    return make_training_set(tmp_path_factory.mktemp("synthetic"))


def run_config(root: Path, *extra: str):
    return load_config(None, [*TINY_RUN, f"data.root={root}", *extra])


def env_one_thread() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def final_weights(work_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(find_latest(work_dir) / "model.safetensors"))


@pytest.mark.slow
def test_a_tiny_run_trains_evaluates_and_writes_everything(synthetic_root, tmp_path):
    result = train(run_config(synthetic_root), tmp_path / "run", progress=False)
    assert result.epochs_completed == 2 and result.steps == 8  # 16 training clips / 4 per batch x 2 epochs
    assert not result.interrupted and 0.0 <= result.metrics["top1"] <= 1.0
    assert (tmp_path / "run" / "config.yaml").is_file()
    records = read_metrics(tmp_path / "run")
    assert [r["step"] for r in records if "loss" in r] == list(range(1, 9))
    assert any("val/top1" in r for r in records)
    checkpoint = load_checkpoint(result.checkpoint)
    assert checkpoint.config["data"]["root"] == str(synthetic_root)  # the resolved config travels with the weights
    assert checkpoint.extra["classes"] and checkpoint.extra["model_config"]["num_pose_frames"] == 8
    # Frozen CLIP: only adapters and the new modules changed.
    first = load_file(str(list_checkpoints(tmp_path / "run")[0] / "model.safetensors"))
    last = final_weights(tmp_path / "run")
    assert torch.equal(first["clip.visual.blocks.0.attn.qkv.weight"], last["clip.visual.blocks.0.attn.qkv.weight"])
    assert not torch.equal(first["sgmc.fusion.weight"], last["sgmc.fusion.weight"])

    evaluation = run_evaluation(result.checkpoint, views="2x1", out_dir=tmp_path / "eval", progress=False)
    assert evaluation.metrics["views"] == "2x1" and evaluation.metrics["num_samples"] == 8
    for name in ("metrics.json", "per_class.csv", "confusion.csv", "confusion.png", "scores.npy"):
        assert (tmp_path / "eval" / name).is_file(), name


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_weights(synthetic_root, tmp_path, capsys):
    cfg = run_config(synthetic_root)
    train(cfg, tmp_path / "straight", progress=False)
    # Stop after 3 steps (mid-epoch), then resume to the end.
    partial = train(run_config(synthetic_root, "train.max_steps=3"), tmp_path / "resumed", progress=False)
    assert partial.steps == 3
    capsys.readouterr()
    resumed = train(cfg, tmp_path / "resumed", resume=True, progress=False)
    assert resumed.steps == 8
    # The resumed run's config differs from the checkpoint's in exactly the step limit, and says so.
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: resuming")]
    assert len(warnings) == 1 and warnings[0].endswith("differs in train.max_steps"), warnings
    straight, again = final_weights(tmp_path / "straight"), final_weights(tmp_path / "resumed")
    assert straight.keys() == again.keys()
    for key in straight:
        assert torch.equal(straight[key], again[key]), key


@pytest.mark.slow
def test_persistent_loader_workers_see_every_epoch_and_train_like_no_workers(synthetic_root, tmp_path):
    # Workers keep their own copy of the dataset across epochs; each index carries its epoch so that the
    # augmentation of every epoch is drawn as in the main process.
    train(run_config(synthetic_root, "data.options.flip_prob=0.5"), tmp_path / "main", progress=False)
    with_workers = run_config(synthetic_root, "data.options.flip_prob=0.5", "data.num_workers=1")
    train(with_workers, tmp_path / "w", progress=False)
    inline, workers = final_weights(tmp_path / "main"), final_weights(tmp_path / "w")
    for key in inline:
        assert torch.equal(inline[key], workers[key]), key


def test_an_index_carries_its_epoch_to_the_dataset(synthetic_root):
    from pevl.engine.builder import build_dataset, model_config
    from pevl.engine.sampler import ResumableSampler
    from pevl.engine.train import EpochIndices

    cfg = run_config(synthetic_root, "data.options.flip_prob=0.5")
    dataset = build_dataset(cfg, model_config(cfg), "train", train=True)
    sampler = ResumableSampler(len(dataset), shuffle=True, seed=3)
    sampler.set_epoch(2)
    tagged = list(EpochIndices(sampler))
    assert [i for _, i in tagged] == list(sampler) and {e for e, _ in tagged} == {2}
    dataset.set_epoch(0)  # what a worker's stale copy would hold
    item = dataset[tagged[0]]
    dataset.set_epoch(2)
    expected = dataset[tagged[0][1]]
    assert torch.equal(item["pose"], expected["pose"])
    # ... and the epoch matters: the items of epoch 0 are drawn differently.
    assert any(not torch.equal(dataset[(0, i)]["pose"], dataset[(2, i)]["pose"]) for i in range(len(dataset)))


@pytest.mark.slow
def test_sigkill_and_resume_gives_the_same_final_weights(synthetic_root, tmp_path):
    command = [
        sys.executable,
        "-m",
        "pevl",
        "train",
        "--no-progress",
        "--set",
        *TINY_RUN,
        f"data.root={synthetic_root}",
    ]
    subprocess.run([*command, "--work-dir", str(tmp_path / "straight")], check=True, env=env_one_thread(),
                   capture_output=True)  # fmt: skip
    killed_dir = tmp_path / "killed"
    process = subprocess.Popen([*command, "--work-dir", str(killed_dir)], env=env_one_thread(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while find_latest(killed_dir) is None and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    latest = find_latest(killed_dir)
    assert latest is not None and load_checkpoint(latest).step < 8, "the run should die before finishing"
    subprocess.run([*command, "--work-dir", str(killed_dir), "--resume"], check=True, env=env_one_thread(),
                   capture_output=True)  # fmt: skip
    straight, resumed = final_weights(tmp_path / "straight"), final_weights(killed_dir)
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


@pytest.mark.slow
def test_two_processes_give_the_losses_of_one_with_the_same_global_batch(synthetic_root, tmp_path):
    common = ["--no-progress", "--set", *TINY_RUN, f"data.root={synthetic_root}", "train.eval_interval=0"]
    subprocess.run([sys.executable, "-m", "pevl", "train", *common, "--work-dir", str(tmp_path / "one")],
                   check=True, env=env_one_thread(), capture_output=True)  # fmt: skip
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", f"--master-port={free_port()}",
                "-m", "pevl", "train"]  # fmt: skip
    done = subprocess.run([*torchrun, *common, "data.batch_size=2", "--work-dir", str(tmp_path / "two")],
                          env=env_one_thread(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    one = [r for r in read_metrics(tmp_path / "one") if "loss" in r]
    two = [r for r in read_metrics(tmp_path / "two") if "loss" in r]
    assert [r["step"] for r in one] == [r["step"] for r in two] == list(range(1, 9))
    for a, b in zip(one, two, strict=True):
        for term in [k for k in a if k.startswith("loss")]:
            assert b[term] == pytest.approx(a[term], rel=1e-4, abs=1e-5), (a["step"], term)


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert cli_main(["train", "--set", "optim.lrr=1", "--work-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "pevl: error: --set optim.lrr=1: unknown config key 'optim.lrr' (did you mean 'optim.lr'?)"
    assert cli_main(["eval", "--checkpoint", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pevl: error:") and "missing" in err and "\n" not in err


@pytest.mark.slow
def test_metrics_jsonl_is_valid_json_per_line(synthetic_root, tmp_path):
    train(run_config(synthetic_root, "optim.epochs=1"), tmp_path / "run", progress=False)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert lines and all(isinstance(json.loads(line), dict) for line in lines)
