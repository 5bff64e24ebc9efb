"""`pevl train --resume [CHECKPOINT]` and the plain-text train.log of a work dir."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pevl.cli import main as cli_main
from pevl.engine.checkpoint import find_latest, list_checkpoints, load_checkpoint
from train_helpers import TINY_RUN, make_training_set

pytestmark = pytest.mark.slow  # each test trains a tiny model a few times

# 4 classes x 4 training clips, 2 RGB + 8 pose frames of 32 px: 4 steps per epoch, 8 in all.
@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    return make_training_set(tmp_path_factory.mktemp("synthetic"))


def pevl_train(root: Path, *args: str, extra: tuple[str, ...] = ()) -> int:
    return cli_main(["train", "--no-progress", *args, "--set", *TINY_RUN, f"data.root={root}", *extra])


def weights(work_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(find_latest(work_dir) / "model.safetensors"))


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resume_from_a_given_checkpoint(synthetic_root, tmp_path, capsys):
    straight = tmp_path / "straight"
    assert pevl_train(synthetic_root, "--work-dir", str(straight)) == 0
    step_4 = next(p for p in list_checkpoints(straight) if load_checkpoint(p).step == 4)

    # --resume CHECKPOINT: a checkpoint of another run, continued in a new work dir, ends where that run ended.
    branch = tmp_path / "branch"
    assert pevl_train(synthetic_root, "--work-dir", str(branch), "--resume", str(step_4)) == 0
    assert f"resuming from {step_4}" in capsys.readouterr().out
    assert load_checkpoint(branch).step == 8
    assert_same_weights(weights(straight), weights(branch))

    # --resume CHECKPOINT alone: the work dir and config are the checkpoint's run's.
    step_6 = next(p for p in list_checkpoints(straight) if load_checkpoint(p).step == 6)
    assert cli_main(["train", "--no-progress", "--resume", str(step_6)]) == 0
    assert load_checkpoint(straight).step == 8
    assert_same_weights(weights(branch), weights(straight))


def test_resume_errors_are_one_line(synthetic_root, tmp_path, capsys):
    assert pevl_train(synthetic_root, "--work-dir", str(tmp_path / "w"), "--resume", str(tmp_path / "nothing")) == 2
    err = capsys.readouterr().err
    assert err.startswith("pevl: error: ") and "nothing: checkpoint not found" in err and err.count("\n") == 1
    assert pevl_train(synthetic_root, "--work-dir", str(tmp_path / "empty"), "--resume") == 2
    err = capsys.readouterr().err
    assert err == f"pevl: error: {tmp_path / 'empty' / 'config.yaml'}: not found; give --config FILE to resume with\n"


LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d - pevl - INFO - ")


def test_train_log_is_plain_text_beside_metrics_and_appended_on_resume(synthetic_root, tmp_path):
    work = tmp_path / "run"
    assert pevl_train(synthetic_root, "--work-dir", str(work), extra=("train.max_steps=6",)) == 0
    log = work / "train.log"
    assert log.is_file() and (work / "metrics.jsonl").is_file()
    first = log.read_text().splitlines()
    assert first and all(LINE.match(line) for line in first)
    train_lines = [line for line in first if "Epoch(train)" in line]
    assert len(train_lines) == 6  # log_interval=1: one line per step
    assert "Epoch(train) [1][1/4]  step: 1  lr: " in train_lines[0]
    assert "Epoch(train) [2][2/4]  step: 6  lr: " in train_lines[-1]
    assert all(re.search(r"  eta: \d+:\d\d:\d\d  time: \d+\.\d{3}  loss: \d+\.\d{4}", line) for line in train_lines)
    val_lines = [line for line in first if "Epoch(val)" in line]
    assert len(val_lines) == 2 and re.search(r"Epoch\(val\) \[1\]  step: 4  top1: \d\.\d{4}  top5: ", val_lines[0])

    assert pevl_train(synthetic_root, "--work-dir", str(work), "--resume", extra=("train.max_steps=null",)) == 0
    after = log.read_text().splitlines()
    assert after[: len(first)] == first  # appended, never rewritten
    added = after[len(first) :]
    assert "resumed from" in added[0] and "step 6" in added[0]
    assert [line.split("step: ")[1].split()[0] for line in added if "Epoch(train)" in line] == ["7", "8"]
