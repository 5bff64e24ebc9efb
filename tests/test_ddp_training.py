"""Real multi-step distributed training on the CPU (gloo) equals one process with the same global batch.

Two processes of ``torchrun`` train each preset for 4 steps (batch 2 each) with an evaluation after the first epoch,
stop after step 3 and resume; one process trains the same runs uninterrupted with batch 4. DDP promises the same
weights, up to float rounding. The same holds for 2 nodes x 1 process (``torchrun --nnodes 2`` on one machine,
``pevl train`` from the command line).

The runs use SGD: AdamW divides each gradient by the root of its running square, which turns the rounding noise of
near-zero gradients into differences as large as the learning rate; SGD passes gradient differences on unchanged.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pevl
from pevl.engine.checkpoint import list_checkpoints, load_checkpoint

pytestmark = pytest.mark.slow

WORKER = Path(__file__).with_name("ddp_worker.py")
ROOT = Path(__file__).resolve().parents[1]
CASES = [  # (preset, freeze_clip): PeVL, VL, PT and a UCMR ablation, from scratch and frozen
    (preset, freeze) for preset in ("pevl_tiny", "vl_tiny", "pt_tiny", "pevl_no_p2v_tiny") for freeze in (False, True)
]
ATOL = 2e-6  # float32 rounding after 4 SGD steps; the weights move by more than 1e-3 (checked)
LOSS_ATOL = 1e-5


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    src = str(Path(pevl.__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": src + (os.pathsep + path if path else ""), "OMP_NUM_THREADS": "1"}


def _settings(root: Path, preset: str, freeze: bool, batch: int) -> list[str]:
    return [
        f"model.preset={preset}", f"model.overrides.freeze_clip={str(freeze).lower()}",
        "model.overrides.num_video_frames=2", "model.overrides.num_pose_frames=8",
        "data.dataset=synthetic", f"data.root={root}", f"data.batch_size={batch}", "data.num_workers=0",
        "optim.optimizer=sgd", "optim.lr=0.05", "optim.epochs=2", "optim.warmup_epochs=0.5",
        "train.eval_interval=1", "train.log_interval=1", "train.keep_last=0",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def ddp_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 training clips (2 steps of 2 x 2 per epoch) and 4 validation clips."""
    from pevl.data.synthetic import make_synthetic

    root = tmp_path_factory.mktemp("ddp_set")
    make_synthetic(root, num_classes=4, per_class=3, frames=16, size=32, val_fraction=0.34, progress=False)
    assert len((root / "train.txt").read_text().splitlines()) == 8
    return root


class References:
    """Single-process runs with the global batch, trained once per module and on demand."""

    def __init__(self, data: Path, base: Path) -> None:
        self.data, self.base, self.done = data, base, {}

    def __call__(self, preset: str, freeze: bool) -> Path:
        from pevl.engine.config import load_config
        from pevl.engine.train import train

        key = (preset, freeze)
        if key not in self.done:
            work = self.base / f"{preset}_{'frozen' if freeze else 'scratch'}"
            train(load_config(None, _settings(self.data, preset, freeze, batch=4)), work, progress=False)
            self.done[key] = work
        return self.done[key]


@pytest.fixture(scope="module")
def references(ddp_set: Path, tmp_path_factory: pytest.TempPathFactory) -> References:
    return References(ddp_set, tmp_path_factory.mktemp("single_process"))


def _run(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait(proc: subprocess.Popen, timeout: float = 300) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"timed out after {timeout} s:\n{out[-4000:]}")
    assert proc.returncode == 0, out[-6000:]
    return out


def _records(work: Path) -> tuple[dict[int, dict], dict[int, dict]]:
    train, val = {}, {}
    for line in (work / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        (val if any(k.startswith("val/") for k in record) else train)[record["step"]] = record
    return train, val


def assert_same_training(single: Path, multi: Path) -> float:
    """Same weights at the end of each epoch, same losses at each step, same validation metrics; the max weight gap."""
    by_step = {load_checkpoint(p).step: p for p in list_checkpoints(multi)}
    gaps = []
    for path in list_checkpoints(single):
        expected = load_checkpoint(path)
        got = load_checkpoint(by_step[expected.step])
        assert got.epoch == expected.epoch and got.model_state.keys() == expected.model_state.keys()
        gaps.append(max((got.model_state[k] - v).abs().max().item() for k, v in expected.model_state.items()))
        assert gaps[-1] <= ATOL, f"step {expected.step}: weights differ by {gaps[-1]:.3g}"
    first, last = (load_checkpoint(p).model_state for p in list_checkpoints(single)[:2])
    moved = max((last[k] - v).abs().max().item() for k, v in first.items())
    assert moved > 500 * ATOL  # the comparison is not vacuous: training changed the weights
    single_train, single_val = _records(single)
    multi_train, multi_val = _records(multi)
    assert sorted(single_train) == sorted(multi_train) == [1, 2, 3, 4]
    for step, record in single_train.items():
        for key, value in record.items():
            if key.startswith("loss"):
                assert multi_train[step][key] == pytest.approx(value, abs=LOSS_ATOL), (step, key)
        assert multi_train[step]["lr"] == pytest.approx(record["lr"])
    assert single_val.keys() <= multi_val.keys()  # the interrupted run also evaluated where it stopped
    for step, record in single_val.items():
        assert {k: v for k, v in multi_val[step].items() if k.startswith("val/")} == {
            k: v for k, v in record.items() if k.startswith("val/")
        }
        assert record["val/num_samples"] == 4
    return max(gaps)


def test_two_processes_train_every_kind_of_model_like_one(ddp_set, references, tmp_path):
    runs = [
        {"work_dir": str(tmp_path / f"{p}_{f}"), "settings": _settings(ddp_set, p, f, batch=2), "stop_at": 3}
        for p, f in CASES
    ]
    broken = {"work_dir": str(tmp_path / "broken"), "settings": _settings(ddp_set, "pt_tiny", False, batch=2)}
    broken["unfreeze"] = ["clip.logit_scale", "clip.visual.pos_embed"]  # what an older rule left trainable
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"runs": [*runs, broken]}))
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    proc = _run([*launcher, str(WORKER), str(plan)])
    try:
        for case in CASES:  # meanwhile, the single-process runs
            references(*case)
    finally:
        out = _wait(proc)
    assert out.count("resuming from") == len(CASES)  # rank 0 says it
    for rank in (0, 1):  # a parameter no loss uses stops training with its name, option, preset and overrides
        error = Path(f"{broken['work_dir']}.rank{rank}.error").read_text()
        assert error.startswith(f"2 trainable parameters received no gradient from the training loss on rank {rank} ")
        assert "clip.logit_scale, clip.visual.pos_embed (model option: freeze_clip)" in error
        assert "model.preset=pt_tiny, model.overrides: freeze_clip=False" in error
    for (preset, freeze), run in zip(CASES, runs, strict=True):
        assert_same_training(references(preset, freeze), Path(run["work_dir"]))


def test_two_nodes_of_one_process_from_the_command_line(ddp_set, references, tmp_path):
    """``torchrun --nnodes 2 --node-rank N`` twice on one machine (the README's multi-node recipe), then resume."""
    work = tmp_path / "two_nodes"
    settings = _settings(ddp_set, "pevl_tiny", False, batch=2)
    config = ROOT / "configs" / "synthetic_pevl_tiny.yaml"

    def launch(port: int, *extra: str) -> list[subprocess.Popen]:
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1"]
        rendezvous = ["--master-addr", "127.0.0.1", "--master-port", str(port)]
        pevl_train = ["-m", "pevl", "train", "--work-dir", str(work), "--no-progress", *extra]
        return [_run([*torchrun, "--node-rank", str(node), *rendezvous, *pevl_train]) for node in (0, 1)]

    first = launch(_free_port(), "-c", str(config), "--set", *settings, "train.max_steps=3")
    outputs = [_wait(p) for p in first]
    assert "trained 1 epochs, 3 steps" in outputs[0]
    second = launch(_free_port(), "--resume", "--set", "train.max_steps=null")  # the work dir's config.yaml
    reference = references("pevl_tiny", False)
    outputs = [_wait(p) for p in second]
    assert "resuming from" in outputs[0] and "step 3" in outputs[0]
    assert "trained 2 epochs, 4 steps" in outputs[0]
    assert "trained" not in outputs[1]  # only the main process reports
    assert_same_training(reference, work)


def test_the_comparison_sees_a_one_percent_change(ddp_set, references, tmp_path):
    """The weight tolerance is tight: one process with a 1% larger learning rate is not the same training."""
    from pevl.engine.config import load_config
    from pevl.engine.train import train

    work = tmp_path / "other_lr"
    train(load_config(None, [*_settings(ddp_set, "vl_tiny", True, batch=4), "optim.lr=0.0505"]), work, progress=False)
    with pytest.raises(AssertionError, match="weights differ"):
        assert_same_training(references("vl_tiny", True), work)


def test_one_process_warns_about_a_parameter_no_loss_uses(ddp_set, tmp_path, monkeypatch, capsys):
    import pevl.models.pevl as pevl_model
    from pevl.engine.config import load_config
    from pevl.engine.train import train

    rule = pevl_model.set_trainable

    def also_logit_scale(model, cfg):
        rule(model, cfg)
        model.clip.logit_scale.requires_grad_(True)

    monkeypatch.setattr(pevl_model, "set_trainable", also_logit_scale)
    settings = [*_settings(ddp_set, "vl_tiny", False, batch=4), "train.max_steps=2", "train.eval_interval=0"]
    assert train(load_config(None, settings), tmp_path / "run", progress=False).steps == 2  # harmless here
    err = capsys.readouterr().err
    warning = "warning: trainable parameters without a gradient from the loss: clip.logit_scale (model.preset=vl_tiny"
    assert err.count(warning) == 1  # once, not at every step


def test_checkpoint_where_the_unused_logit_scale_trained_still_resumes(ddp_set, tmp_path, monkeypatch, capsys):
    """Runs saved when CLIP's logit scale was trainable resume, with the Adam moments of everything else."""
    import pevl.models.pevl as pevl_model
    from pevl.engine.config import load_config
    from pevl.engine.train import Trainer, train

    rule = pevl_model.set_trainable
    settings = [*_settings(ddp_set, "vl_tiny", False, batch=4), "optim.optimizer=adamw", "train.eval_interval=0"]
    with monkeypatch.context() as patch:
        patch.setattr(pevl_model, "set_trainable", lambda m, c: (rule(m, c), m.clip.logit_scale.requires_grad_(True)))
        saved = train(load_config(None, [*settings, "train.max_steps=1"]), tmp_path / "run", progress=False).checkpoint
    old = load_checkpoint(saved).optimizer_state
    assert "clip.logit_scale" in old["param_groups"][-1]["param_names"]
    trainer = Trainer(load_config(None, settings), tmp_path / "run", resume=True, progress=False)
    assert "note: optimizer state of clip.logit_scale not restored: it no longer trains" in capsys.readouterr().err
    proj = trainer.model.clip.visual.proj
    group = next(g for g in old["param_groups"] if "clip.visual.proj" in g["param_names"])
    expected = old["state"][group["params"][group["param_names"].index("clip.visual.proj")]]["exp_avg"]
    torch.testing.assert_close(trainer.optimizer.state[proj]["exp_avg"], expected)
    assert trainer.model.clip.logit_scale not in trainer.optimizer.state
    assert trainer.run().steps == 4
