"""One rule for the checkpoint every command reads from a work dir: best when the run validated, else latest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pevl.engine.checkpoint import save_checkpoint
from pevl.engine.checkpoint_choice import choose_checkpoint, split_choice
from pevl.errors import PevlError

ROOT = Path(__file__).resolve().parents[1]


def fake_run(work: Path, best_epoch: int | None, epochs: int = 3) -> dict[int, Path]:
    """Checkpoints of epochs 1..epochs, ``best`` pointing at ``best_epoch`` (none when ``None``)."""
    state = {"w": torch.zeros(2)}
    return {
        epoch: save_checkpoint(work, model_state=state, epoch=epoch, step=10 * epoch, config={}, keep_last=0,
                               is_best=epoch == best_epoch)
        for epoch in range(1, epochs + 1)
    }  # fmt: skip


def test_a_validated_run_means_its_best_checkpoint(tmp_path, capsys):
    saved = fake_run(tmp_path / "run", best_epoch=1)
    assert choose_checkpoint(tmp_path / "run") == saved[1]
    err = capsys.readouterr().err
    assert err.startswith(f"checkpoint: {saved[1]} (best") and "run:latest" in err


def test_latest_and_best_are_asked_for_by_suffix(tmp_path, capsys):
    saved = fake_run(tmp_path / "run", best_epoch=2)
    assert choose_checkpoint(f"{tmp_path / 'run'}:latest") == saved[3]
    assert choose_checkpoint(f"{tmp_path / 'run'}:best") == saved[2]
    assert "latest, as asked" in capsys.readouterr().err


def test_a_run_without_validation_means_its_latest(tmp_path, capsys):
    saved = fake_run(tmp_path / "run", best_epoch=None)
    assert choose_checkpoint(tmp_path / "run") == saved[3]
    assert "the run has no validation" in capsys.readouterr().err
    with pytest.raises(PevlError, match="no best checkpoint"):
        choose_checkpoint(f"{tmp_path / 'run'}:best")


def test_anything_but_a_work_dir_is_read_as_given(tmp_path, capsys):
    saved = fake_run(tmp_path / "run", best_epoch=1)
    assert choose_checkpoint(saved[3]) == saved[3]
    assert choose_checkpoint(saved[3] / "model.safetensors") == saved[3] / "model.safetensors"
    assert capsys.readouterr().err == ""  # nothing was chosen, nothing is announced
    with pytest.raises(PevlError, match="needs a work dir"):
        choose_checkpoint(f"{saved[3]}:latest")


def test_a_path_really_named_like_a_choice_is_kept(tmp_path):
    odd = tmp_path / "run:latest"
    odd.mkdir()
    assert split_choice(odd) == (odd, None)
    assert split_choice(f"{tmp_path}/x:best") == (tmp_path / "x", "best")


def test_an_empty_work_dir_is_an_error(tmp_path):
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    with pytest.raises(PevlError, match="no checkpoint"):
        choose_checkpoint(tmp_path / "run")


@pytest.mark.slow
def test_eval_predict_explain_and_export_read_the_same_checkpoint(synthetic_set, tmp_path):
    """A 2-epoch run whose best epoch is not its last: every command reads the best one and says so."""
    from pevl.engine.config import load_config
    from pevl.engine.train import train
    from train_helpers import TINY_RUN

    work = tmp_path / "run"
    cfg = load_config(None, [*TINY_RUN, f"data.root={synthetic_set}", "train.save_every_steps=0"])
    train(cfg, work, progress=False)
    from pevl.engine.checkpoint import list_checkpoints

    first, *_, last = list_checkpoints(work)
    (work / "checkpoints" / "best").write_text(first.name + "\n")  # the best epoch is not the last one
    best, latest = first.name, (work / "checkpoints" / "latest").read_text().strip()
    assert latest == last.name != best
    video = next((synthetic_set / "videos").rglob("*.mp4"))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    commands = {
        "eval": ["eval", "-k", str(work), "--json"],
        "predict": ["predict", str(video), "-k", str(work), "--json", "--pose-file", str(synthetic_set / "poses.pkl")],
        "explain": ["explain", str(video), "-k", str(work), "--out", str(tmp_path / "explain")],
        "export": ["export", str(work), "--format", "onnx", "--out", str(tmp_path / "model.onnx")],
    }
    for name, args in commands.items():
        done = subprocess.run([sys.executable, "-m", "pevl", *args], env=env, capture_output=True, text=True,
                              timeout=600)  # fmt: skip
        assert done.returncode == 0, f"{name}: {done.stderr}"
        assert f"checkpoint: {work / 'checkpoints' / best} (best" in done.stderr, name
    done = subprocess.run([sys.executable, "-m", "pevl", "predict", str(video), "-k", f"{work}:latest", "--json",
                           "--pose-file", str(synthetic_set / "poses.pkl")],
                          env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert json.loads(done.stdout)["checkpoint"].endswith(latest)
