"""The learning-rate schedule of a resumed run follows the run's length; a warm-up longer than the run is clamped."""

from __future__ import annotations

import math

import pytest
import torch

from pevl.engine.config import OptimSection, load_config
from pevl.engine.optim import WarmupCosineScheduler, build_optimizer, build_scheduler, warmup_note


class Toy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(3, 3))


def run_steps(cfg: OptimSection, steps_per_epoch: int, steps: int, state: dict | None = None):
    optimizer = build_optimizer(Toy(), cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch)
    if state is not None:
        scheduler.load_state_dict(state)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return scheduler, lrs


def test_a_longer_resumed_run_decays_over_its_new_length():
    short = OptimSection(lr=1.0, epochs=2, warmup_epochs=0)
    old, _ = run_steps(short, steps_per_epoch=4, steps=8)  # the whole 2-epoch run: ends near 0
    assert old.get_last_lr()[0] == pytest.approx(0.0, abs=1e-9)
    longer = OptimSection(lr=1.0, epochs=3, warmup_epochs=0)
    resumed, lrs = run_steps(longer, steps_per_epoch=4, steps=4, state=old.state_dict())
    fresh, fresh_lrs = run_steps(longer, steps_per_epoch=4, steps=12)
    assert lrs == pytest.approx(fresh_lrs[8:])  # exactly the 3-epoch curve from step 8 on
    assert min(lrs) > 0.0 and lrs[0] == pytest.approx(0.5 * (1 + math.cos(math.pi * 8 / 12)))
    assert resumed.total_steps == 12 and resumed.last_epoch == 12
    note = resumed.describe_rebuild()
    assert note is not None and "saved for 8 steps" in note and "this run's 12" in note


def test_an_unchanged_resume_is_not_rebuilt():
    cfg = OptimSection(lr=1.0, epochs=3, warmup_epochs=1)
    first, _ = run_steps(cfg, steps_per_epoch=4, steps=5)
    resumed, lrs = run_steps(cfg, steps_per_epoch=4, steps=7, state=first.state_dict())
    _, fresh = run_steps(cfg, steps_per_epoch=4, steps=12)
    assert resumed.describe_rebuild() is None and lrs == pytest.approx(fresh[5:])


def test_a_warmup_longer_than_the_run_is_clamped_with_a_note():
    cfg = load_config(None, ["optim.epochs=1"]).optim  # the default warm-up is 2 epochs
    assert cfg.warmup_epochs > cfg.epochs
    scheduler, lrs = run_steps(cfg, steps_per_epoch=5, steps=5)
    assert scheduler.warmup_steps == 5 and lrs == pytest.approx([cfg.lr * (s + 1) / 5 for s in range(5)])
    note = warmup_note(cfg)
    assert note is not None and note.startswith("note: optim.warmup_epochs=2 is longer than the run")
    assert warmup_note(OptimSection(epochs=3, warmup_epochs=1)) is None


def test_the_scheduler_still_refuses_an_empty_run():
    optimizer = build_optimizer(Toy(), OptimSection())
    with pytest.raises(ValueError):
        WarmupCosineScheduler(optimizer, total_steps=0, warmup_steps=0)


@pytest.mark.slow
def test_train_resumed_with_more_epochs_never_trains_at_zero(synthetic_set, tmp_path, capsys):
    """``--resume`` with optim.epochs 2 -> 3: epoch 3 trains at a positive learning rate and the log says why."""
    from pevl.engine.logger import read_metrics
    from pevl.engine.train import train
    from train_helpers import TINY_RUN

    base = [*TINY_RUN, f"data.root={synthetic_set}", "train.eval_interval=0", "optim.warmup_epochs=0"]
    work = tmp_path / "run"
    train(load_config(None, base), work, progress=False)
    train(load_config(None, [*base, "optim.epochs=3"]), work, resume=True, progress=False)
    records = [r for r in read_metrics(work / "metrics.jsonl") if "lr" in r and r.get("epoch") == 3]
    # A record's lr is the one the next step uses: only the run's very last one may be 0.
    assert len(records) == 3 and all(r["lr"] > 1e-5 for r in records[:-1])
    assert "rebuilt for this run's" in capsys.readouterr().err
    assert "rebuilt for this run's" in (work / "train.log").read_text()
