"""A refused work dir under torchrun: every rank exits at once with rank 0's line (two gloo processes on the CPU)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pevl.engine.workdir import LOCK_FILE, _process_start

TINY = ["model.preset=pevl_tiny", "data.dataset=synthetic", "data.num_workers=0", "train.max_steps=1"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(work: Path, data: Path, timeout: float = 120.0) -> list[subprocess.CompletedProcess]:
    """``pevl train`` as two ranks of one job (what torchrun starts), each stopped after ``timeout`` s."""
    port = _free_port()
    argv = [sys.executable, "-m", "pevl", "train", "--no-progress", "--work-dir", str(work), "--set", *TINY,
            f"data.root={data}"]  # fmt: skip
    base = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    ranks = [
        subprocess.Popen(argv, env={**base, "RANK": str(r), "LOCAL_RANK": str(r)}, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for r in range(2)
    ]  # fmt: skip
    done = []
    deadline = time.monotonic() + timeout
    try:
        for rank in ranks:
            out, err = rank.communicate(timeout=max(1.0, deadline - time.monotonic()))
            done.append(subprocess.CompletedProcess(rank.args, rank.returncode, out, err))
    finally:
        for rank in ranks:
            if rank.poll() is None:
                rank.kill()
                rank.wait(timeout=30)
    return done


def _holds_a_run(work: Path) -> str:
    work.mkdir()
    (work / "config.yaml").write_text("model: {}\n")
    (work / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    return f"{work}: holds a run (config.yaml, metrics.jsonl); continue it with --resume"


def _locked_by_this_process(work: Path) -> str:
    work.mkdir()
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "start": _process_start(os.getpid()), "since": "x"}
    (work / LOCK_FILE).write_text(json.dumps(holder))
    return f"another training run uses this work dir: process {os.getpid()} on {socket.gethostname()}"


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("refusal", [_holds_a_run, _locked_by_this_process], ids=["holds a run", "live lock"])
def test_every_rank_exits_with_rank_0s_refusal(tmp_path, refusal) -> None:
    work = tmp_path / "run"
    expected = refusal(work)
    before = sorted(p.name for p in work.iterdir())
    ranks = _torchrun(work, tmp_path / "data")
    lines = [[line for line in r.stderr.splitlines() if line.strip()] for r in ranks]
    for rank, rank_lines in zip(ranks, lines, strict=True):
        assert rank.returncode == 2, rank.stderr
        assert len(rank_lines) == 1 and rank_lines[0].startswith("pevl: error: ") and expected in rank_lines[0]
    assert lines[0] == lines[1]  # the same line from every rank
    assert sorted(p.name for p in work.iterdir()) == before  # nothing written, the lock left to its holder
