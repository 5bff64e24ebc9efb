"""Loader workers start safely and never hang silently (the fork-after-threads deadlock, stuck workers)."""

from __future__ import annotations

import os
import time

import pytest
import torch

from pevl.engine.config import load_config
from pevl.engine.loader import iterate, make_loader, start_method
from pevl.errors import PevlError


class Stuck(torch.utils.data.Dataset):
    """Sample 0 never comes back: a deadlocked worker."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> torch.Tensor:
        if index == 0:
            time.sleep(3600)
        return torch.zeros(2)


class Pids(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor([os.getpid()])


def test_workers_never_start_with_fork() -> None:
    loader = make_loader(Pids(), batch_size=2, num_workers=2)
    assert loader.multiprocessing_context.get_start_method() in ("forkserver", "spawn")
    assert loader.timeout > 0
    assert make_loader(Pids(), batch_size=2, num_workers=0).timeout == 0  # no worker, nothing to wait for
    with pytest.raises(PevlError, match="worker_start"):
        start_method("fork")
    with pytest.raises(PevlError, match="data.worker_start"):
        load_config(None, ["data.worker_start=fork"])


@pytest.mark.timeout(120)
def test_a_stuck_worker_is_an_error_naming_it() -> None:
    loader = make_loader(Stuck(), batch_size=1, num_workers=1, worker_timeout=3)
    batches = iterate(loader, "test loader")
    with pytest.raises(PevlError) as caught:
        list(batches)
    message = str(caught.value)
    assert message.startswith("test loader: worker process(es) ") and "no batch for 3 s" in message
    assert "\n" not in message and "unknown" not in message  # the worker's pid is named


def test_a_stuck_decoder_is_an_error_naming_the_video() -> None:
    from pevl.data.pose.base import _prefetched

    def frames():
        yield 1
        time.sleep(3600)  # a decoder that never returns
        yield 2

    stream = _prefetched(frames(), source="clip.mp4", timeout=0.5)
    assert next(stream) == 1
    with pytest.raises(PevlError, match=r"^clip.mp4: the decoder gave no frame for 0.5 s"):
        next(stream)


def test_batches_come_from_worker_processes_in_order() -> None:
    loader = make_loader(Pids(), batch_size=2, num_workers=2, worker_timeout=60)
    pids = [int(p) for batch in iterate(loader) for p in batch.flatten()]
    assert len(pids) == 4 and os.getpid() not in pids


def test_training_and_evaluation_loaders_use_the_configured_start(monkeypatch, synthetic_set, tmp_path) -> None:
    import pevl.engine.evaluate as evaluate_module
    import pevl.engine.train as train_module

    made = []

    def spy(*args, **kwargs):
        made.append((kwargs["num_workers"], kwargs["worker_start"], kwargs["worker_timeout"]))
        return make_loader(*args, **{**kwargs, "num_workers": 0})

    monkeypatch.setattr(train_module, "make_loader", spy)
    monkeypatch.setattr(evaluate_module, "make_loader", spy)
    overrides = [
        "model.preset=pevl_tiny", "model.overrides.num_video_frames=2", "model.overrides.num_pose_frames=8",
        f"data.root={synthetic_set}", "data.batch_size=4", "data.num_workers=2", "data.worker_start=spawn",
        "data.worker_timeout=77", "optim.epochs=1", "optim.warmup_epochs=0", "train.max_steps=1",
        "train.eval_interval=1",
    ]  # fmt: skip
    train_module.train(load_config(None, overrides), tmp_path / "run", progress=False)
    assert made == [(2, "spawn", 77.0), (2, "spawn", 77.0)]  # the training loader, then the evaluation one
