"""Checkpoints: safetensors weights, weights-only training state, exact resume, key/shape errors, retention, crashes."""

from __future__ import annotations

import random
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pevl.engine import checkpoint as ckpt_module
from pevl.engine.checkpoint import (
    find_best,
    find_latest,
    list_checkpoints,
    load_checkpoint,
    load_model_state,
    restore_training_state,
    save_checkpoint,
)
from pevl.engine.config import OptimSection, RunConfig
from pevl.engine.optim import build_optimizer, build_scheduler
from pevl.engine.rng import capture_rng, restore_rng, seed_everything
from pevl.engine.sampler import ResumableSampler
from pevl.errors import PevlError

CONFIG = RunConfig().to_dict()


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.norm = nn.LayerNorm(8)
        self.drop = nn.Dropout(0.3)
        self.fc2 = nn.Linear(8, 3)
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.fc2(self.drop(self.norm(self.fc1(x).relu())))


class SharedBackbone(nn.Module):
    """Two names for one module, as PeVL's video and pose encoders share the frozen ViT."""

    def __init__(self) -> None:
        super().__init__()
        self.video = nn.Linear(3, 3)
        self.pose = self.video
        self.head = nn.Linear(3, 2)


def save_simple(work_dir, step, **kwargs):
    model = kwargs.pop("model", None) or Net()
    return save_checkpoint(work_dir, model_state=model.state_dict(), epoch=0, step=step, config=CONFIG, **kwargs)


# ---- exact resume ----------------------------------------------------------------------------------------------------

DATA = TensorDataset(torch.randn(12, 4, generator=torch.Generator().manual_seed(1)), torch.arange(12) % 3)
OPTIM = OptimSection(lr=0.05, epochs=3, warmup_epochs=1)


def train(work_dir, stop_at=None, resume=False):
    """A miniature training loop: dropout (torch RNG), Python and numpy noise, shuffled batches, schedule."""
    seed_everything(0)
    model = Net()
    optimizer = build_optimizer(model, OPTIM)
    scheduler = build_scheduler(optimizer, OPTIM, steps_per_epoch=3)
    sampler = ResumableSampler(len(DATA), seed=0)
    # The DataLoader gets its own generator: it draws a base seed on every new iterator, which would
    # otherwise shift the global torch RNG differently in a resumed run.
    loader = DataLoader(DATA, batch_size=4, sampler=sampler, generator=torch.Generator())
    step = 0
    seen = []
    if resume:
        checkpoint = load_checkpoint(work_dir)
        load_model_state(model, checkpoint)
        restore_training_state(checkpoint, optimizer=optimizer, scheduler=scheduler, sampler=sampler)
        step = checkpoint.step
    for epoch in range(sampler.epoch, OPTIM.epochs):
        sampler.set_epoch(epoch)
        for x, y in loader:
            noise = random.random() * 1e-2 + float(np.random.rand()) * 1e-2
            loss = F.cross_entropy(model(x + noise), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            sampler.advance(len(x))
            seen.append(y.tolist())
            step += 1
            if step == stop_at:
                save_checkpoint(
                    work_dir,
                    model_state=model.state_dict(),
                    optimizer=optimizer,
                    scheduler=scheduler,
                    sampler_state=sampler.state_dict(),
                    epoch=epoch,
                    step=step,
                    config=CONFIG,
                )
                return model, seen
    return model, seen


@pytest.mark.parametrize("stop_at", [2, 3, 5])
def test_an_interrupted_run_ends_where_an_uninterrupted_one_would(tmp_path, stop_at):
    reference, reference_batches = train(tmp_path / "a")
    _, first_part = train(tmp_path / "b", stop_at=stop_at)
    torch.manual_seed(123)  # a new process starts with other generator states
    random.seed(123)
    np.random.seed(123)
    resumed, second_part = train(tmp_path / "b", resume=True)
    assert first_part + second_part == reference_batches
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_optimizer_scheduler_and_sampler_state_round_trip(tmp_path):
    model = Net()
    optimizer = build_optimizer(model, OPTIM)
    scheduler = build_scheduler(optimizer, OPTIM, steps_per_epoch=3)
    for _ in range(2):
        model(torch.randn(2, 4)).sum().backward()
        optimizer.step()
        scheduler.step()
    sampler = ResumableSampler(12, seed=4)
    sampler.set_epoch(1)
    sampler.advance(8)
    path = save_checkpoint(
        tmp_path,
        model_state=model.state_dict(),
        optimizer=optimizer,
        scheduler=scheduler,
        sampler_state=sampler.state_dict(),
        epoch=1,
        step=2,
        config=CONFIG,
        metrics={"top1": 0.25},
        extra={"class_names": ["a", "b", "c"]},
    )
    loaded = load_checkpoint(path)
    assert (loaded.epoch, loaded.step, loaded.metrics) == (1, 2, {"top1": 0.25})
    assert loaded.config == CONFIG and loaded.extra == {"class_names": ["a", "b", "c"]}
    assert loaded.sampler_state == sampler.state_dict()
    assert loaded.scheduler_state == scheduler.state_dict()
    original = optimizer.state_dict()
    assert loaded.optimizer_state["param_groups"] == original["param_groups"]
    assert set(loaded.optimizer_state["state"]) == set(original["state"])
    for pid, entries in original["state"].items():
        for key, value in entries.items():
            assert torch.equal(loaded.optimizer_state["state"][pid][key], value)


def test_rng_states_round_trip_losslessly(tmp_path):
    np.random.standard_normal()  # leaves a cached Gaussian in numpy's legacy state
    path = save_simple(tmp_path, 1)
    expected = (random.random(), np.random.standard_normal(), np.random.rand(), torch.rand(3))
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    restore_rng(load_checkpoint(path).rng)
    got = (random.random(), np.random.standard_normal(), np.random.rand(), torch.rand(3))
    assert got[:3] == expected[:3] and torch.equal(got[3], expected[3])


def test_per_rank_rng_states_pick_this_rank(tmp_path):
    torch.manual_seed(1)
    rank0 = capture_rng()
    torch.manual_seed(2)
    rank1 = capture_rng()
    expected_rank1 = torch.rand(2)
    path = save_simple(tmp_path, 1, rng_states=[rank0, rank1])
    restore_rng(load_checkpoint(path).rng, rank=1)
    assert torch.equal(torch.rand(2), expected_rank1)


def test_training_state_is_read_with_weights_only(tmp_path):
    model = Net()
    optimizer = build_optimizer(model, OPTIM)
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    sampler = ResumableSampler(12, seed=4)
    path = save_checkpoint(
        tmp_path,
        model_state=model.state_dict(),
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, OPTIM, steps_per_epoch=3),
        sampler_state=sampler.state_dict(),
        epoch=0,
        step=1,
        config={},
    )
    assert sorted(p.name for p in path.iterdir()) == ["model.safetensors", "state.pt"]
    state = torch.load(path / "state.pt", weights_only=True)  # tensors and plain containers only
    assert set(state) >= {"optimizer", "scheduler", "sampler", "rng"}


class _Payload:
    target = None

    def __reduce__(self):
        return (open, (str(_Payload.target), "w"))


def test_a_state_file_that_would_run_code_is_refused(tmp_path):
    path = save_simple(tmp_path, 1)
    _Payload.target = tmp_path / "ran"
    torch.save({"format": "pevl-checkpoint", "rng": _Payload()}, path / "state.pt")
    with pytest.raises(PevlError, match=r"state\.pt: corrupt checkpoint state") as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value)
    assert not _Payload.target.exists()


# ---- the model file --------------------------------------------------------------------------------------------------


def test_model_file_alone_is_enough_to_rebuild(tmp_path):
    model = Net()
    path = save_simple(tmp_path / "run", 7, model=model, extra={"class_names": ["x", "y", "z"]})
    lone = tmp_path / "release" / "model.safetensors"
    lone.parent.mkdir()
    shutil.copy(path / "model.safetensors", lone)
    loaded = load_checkpoint(lone)
    assert loaded.config == CONFIG and loaded.step == 7
    assert loaded.extra["class_names"] == ["x", "y", "z"]
    assert loaded.optimizer_state is None and loaded.rng is None
    fresh = Net()
    load_model_state(fresh, loaded)
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(PevlError, match="no training state"):
        restore_training_state(loaded, optimizer=build_optimizer(fresh, OPTIM))


def test_every_way_of_naming_a_checkpoint_works(tmp_path):
    first = save_simple(tmp_path, 1, is_best=True)
    second = save_simple(tmp_path, 2)
    assert load_checkpoint(second).path == second
    assert load_checkpoint(second / "model.safetensors").path == second
    assert load_checkpoint(tmp_path).path == second  # a work dir: its latest
    assert load_checkpoint(tmp_path / "checkpoints").path == second
    assert load_checkpoint(tmp_path / "checkpoints" / "latest").path == second
    assert load_checkpoint(tmp_path / "checkpoints" / "best").path == first
    assert find_best(tmp_path) == first


def test_shared_modules_are_restored_under_both_names(tmp_path):
    model = SharedBackbone()
    path = save_simple(tmp_path, 1, model=model)
    loaded = load_checkpoint(path)
    assert set(loaded.model_state) == set(model.state_dict())
    fresh = SharedBackbone()
    load_model_state(fresh, loaded)
    assert torch.equal(fresh.pose.weight, model.video.weight)
    assert fresh.pose is fresh.video


def test_missing_unexpected_and_misshaped_keys_are_named(tmp_path):
    path = save_simple(tmp_path, 1)
    model_file = path / "model.safetensors"

    class Renamed(Net):
        def __init__(self) -> None:
            super().__init__()
            self.classifier = self.fc2
            del self.fc2

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - not called
            return self.classifier(x)

    with pytest.raises(PevlError) as err:
        load_model_state(Renamed(), load_checkpoint(path))
    assert str(err.value) == (
        f"{model_file}: missing model key 'classifier.weight' (and 1 more); the checkpoint has 'fc2.weight'"
    )

    class Smaller(Net):
        def __init__(self) -> None:
            super().__init__()
            del self.norm

    with pytest.raises(PevlError, match=r"unexpected model key 'norm\.bias' \(and 1 more\)"):
        load_model_state(Smaller(), load_checkpoint(path))
    missing, unexpected = load_model_state(Smaller(), load_checkpoint(path), strict=False)
    assert (missing, sorted(unexpected)) == ([], ["norm.bias", "norm.weight"])

    class Wider(Net):
        def __init__(self) -> None:
            super().__init__()
            self.fc2 = nn.Linear(8, 5)

    with pytest.raises(PevlError) as err:
        load_model_state(Wider(), load_checkpoint(path), strict=False)
    assert str(err.value) == (
        f"{model_file}: model key 'fc2.weight' has shape [3, 8] in the checkpoint but [5, 8] in the model"
    )


def test_unreadable_files_give_one_line_errors(tmp_path):
    with pytest.raises(PevlError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nothing")
    with pytest.raises(PevlError, match="no checkpoint found"):
        load_checkpoint(tmp_path)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(PevlError, match=r"garbage\.safetensors: not a readable safetensors file"):
        load_checkpoint(garbage)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(PevlError, match=r"foreign\.safetensors: not a pevl checkpoint"):
        load_checkpoint(foreign)
    path = save_simple(tmp_path / "run", 1)
    (path / "state.pt").write_bytes(b"PK truncated")
    with pytest.raises(PevlError, match=r"state\.pt: corrupt checkpoint state"):
        load_checkpoint(path)


# ---- retention, pointers and crash safety ----------------------------------------------------------------------------


def test_keeps_the_last_checkpoints_plus_best(tmp_path):
    paths = [save_simple(tmp_path, step, keep_last=2, is_best=(step == 2)) for step in range(1, 6)]
    assert list_checkpoints(tmp_path) == [paths[1], paths[3], paths[4]]
    assert find_latest(tmp_path) == paths[4]
    assert find_best(tmp_path) == paths[1]
    newer_best = save_simple(tmp_path, 6, keep_last=2, is_best=True)
    assert list_checkpoints(tmp_path) == [paths[4], newer_best]  # the old best is no longer protected


def test_keep_last_zero_keeps_everything(tmp_path):
    for step in range(1, 5):
        save_simple(tmp_path, step, keep_last=0)
    assert len(list_checkpoints(tmp_path)) == 4


def test_saving_twice_at_one_step_replaces_the_older_save(tmp_path):
    first = save_simple(tmp_path, 3, metrics={"top1": 0.1})
    second = save_simple(tmp_path, 3, metrics={"top1": 0.2})
    assert second != first and not first.exists()
    assert load_checkpoint(tmp_path).metrics == {"top1": 0.2}


def test_a_crash_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    good = save_simple(tmp_path, 1)
    before = load_checkpoint(tmp_path).model_state

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt_module, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        save_simple(tmp_path, 2)
    monkeypatch.undo()
    assert find_latest(tmp_path) == good
    assert [p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")] == []
    after = load_checkpoint(tmp_path).model_state
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_leftovers_of_a_killed_save_are_ignored_then_cleaned(tmp_path):
    good = save_simple(tmp_path, 1)
    leftover = tmp_path / "checkpoints" / ".tmp-epoch_0000_step_000000002-abc"
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"partial")
    assert find_latest(tmp_path) == good
    save_simple(tmp_path, 3)
    assert not leftover.exists()


def test_a_stale_latest_pointer_falls_back_to_the_newest_checkpoint(tmp_path):
    save_simple(tmp_path, 1)
    newest = save_simple(tmp_path, 2, keep_last=0)
    (tmp_path / "checkpoints" / "latest").write_text("epoch_0000_step_000000099\n")
    assert find_latest(tmp_path) == newest
    assert find_latest(tmp_path / "empty") is None
