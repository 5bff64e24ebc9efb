"""Distributed training functions: the single-process path, and two real gloo processes on 127.0.0.1."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from pevl.engine.distributed import (
    DistInfo,
    all_gather_with_grad,
    all_reduce_mean,
    barrier,
    check_gradients,
    cleanup,
    explain_ddp_errors,
    gather_by_index,
    gather_object,
    init_distributed,
    is_main_process,
    maybe_no_sync,
    same_on_every_rank,
    unused_parameters,
    unwrap_model,
    wrap_ddp,
)
from pevl.engine.sampler import ResumableSampler
from pevl.errors import PevlError

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def no_torchrun(monkeypatch):
    for name in TORCHRUN_VARS:
        monkeypatch.delenv(name, raising=False)


def test_single_process_is_world_size_one(no_torchrun):
    info = init_distributed()
    assert info == DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), backend=None)
    assert info.is_main and not info.distributed and is_main_process()
    x = torch.randn(3, 2, requires_grad=True)
    assert all_gather_with_grad(x) is x
    assert all_reduce_mean(2.5) == 2.5
    assert gather_object({"a": 1}) == [{"a": 1}]
    barrier()
    model = nn.Linear(2, 2)
    assert wrap_ddp(model, info) is model and unwrap_model(model) is model
    with maybe_no_sync(model, sync=False):
        pass
    assert same_on_every_rank("a/b", "the checkpoint") == "a/b"
    cleanup()


class HalfUsed(nn.Module):
    """A model one of whose trainable parameters the loss never uses (like CLIP's logit scale in PeVL)."""

    def __init__(self) -> None:
        super().__init__()
        self.used = nn.Linear(3, 2)
        self.unused = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.used(x).square().mean()


TWO = DistInfo(rank=1, world_size=2, local_rank=1, device=torch.device("cpu"), backend="gloo")
MODEL = "model.preset=pt_tiny, model.overrides: freeze_clip=False"


def test_unused_parameters_are_named_with_their_option_and_the_model(no_torchrun):
    model = HalfUsed()
    model(torch.randn(4, 3)).backward()
    assert unused_parameters(model) == ["unused.weight", "unused.bias"]
    # One process: only returned for a warning.
    assert check_gradients(model, MODEL, init_distributed()) == ["unused.weight", "unused.bias"]
    with pytest.raises(PevlError) as caught:
        check_gradients(model, MODEL, TWO)
    message = str(caught.value)
    assert message.startswith("2 trainable parameters received no gradient from the training loss on rank 1 of 2: ")
    assert "unused.weight, unused.bias (model option: the model code)" in message and MODEL in message
    model.unused.requires_grad_(False)
    assert check_gradients(model, MODEL, TWO) == []


@pytest.mark.parametrize(
    ("ddp_message", "named"),
    [
        ("Expected to have finished reduction in the prior iteration ... Parameter indices which did not receive grad "
         "for rank 1: 0 1", "clip.logit_scale, clip.visual.cls_token (model option: freeze_clip)"),
        ("Expected to have finished reduction ...\nParameters which did not receive grad for rank 1: clip.logit_scale"
         "\nParameter indices which did not receive grad for rank 1: 0",
         "clip.logit_scale (model option: freeze_clip)"),
        ("Expected to have finished reduction in the prior iteration", "TORCH_DISTRIBUTED_DEBUG=INFO"),
    ],
)  # fmt: skip
def test_ddp_error_becomes_one_that_names_the_parameters(ddp_message, named):
    from pevl.models.presets import create_model

    model = create_model("pt_tiny", freeze_clip=False)
    for param in (model.clip.logit_scale, model.clip.visual.cls_token):
        param.requires_grad_(True)  # what an older version left trainable
    with pytest.raises(PevlError, match="received no gradient") as caught:
        with explain_ddp_errors(model, MODEL, TWO):
            raise RuntimeError(ddp_message)
    assert named in str(caught.value) and MODEL in str(caught.value)
    with pytest.raises(RuntimeError, match="out of memory"):  # other errors pass through unchanged
        with explain_ddp_errors(model, MODEL, TWO):
            raise RuntimeError("CUDA out of memory")


def test_single_process_gather_by_index_restores_dataset_order(no_torchrun):
    rows = gather_by_index([2, 0, 1, 2], np.array([[20.0], [0.0], [10.0], [20.0]]), num_samples=3)
    np.testing.assert_array_equal(rows, [[0.0], [10.0], [20.0]])
    with pytest.raises(ValueError, match="distinct indices"):
        gather_by_index([0, 1], np.zeros((2, 1)), num_samples=3)


def test_bad_torchrun_environment(no_torchrun, monkeypatch):
    monkeypatch.setenv("RANK", "first")
    with pytest.raises(PevlError, match="RANK='first' is not an integer"):
        init_distributed()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(PevlError, match="MASTER_ADDR is not set"):
        init_distributed()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    info = init_distributed(backend="gloo")
    result: dict = {"rank": info.rank, "world_size": info.world_size, "backend": info.backend}

    # Features of different lengths per rank (a smaller last batch): rank r holds r + 2 rows of value r.
    local = torch.full((rank + 2, 3), float(rank), requires_grad=True)
    gathered = all_gather_with_grad(local)
    result["gathered"] = gathered.detach().tolist()
    weights = torch.arange(gathered.numel(), dtype=torch.float32).reshape(gathered.shape)
    (gathered * weights).sum().backward()
    result["grad"] = local.grad.tolist()  # the local rows receive the sum of both ranks' gradients

    result["mean_float"] = all_reduce_mean(float(rank))
    result["mean_tensor"] = all_reduce_mean(torch.tensor([rank, 2.0 * rank])).tolist()
    result["objects"] = gather_object({"rank": rank})

    # Evaluation: each rank scores its padded shard; rows come back in dataset order without padding.
    sampler = ResumableSampler(5, shuffle=True, seed=3, rank=rank, world_size=world_size)
    indices = list(sampler)
    scores = np.array([[10.0 * i, -i] for i in indices])
    result["eval"] = gather_by_index(indices, scores, num_samples=5).tolist()

    # DDP with gradient accumulation equals one process on the whole batch.
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    reference = nn.Linear(3, 2)
    reference.load_state_dict(model.state_dict())
    ddp = wrap_ddp(model, info)
    data = torch.randn(8, 3, generator=torch.Generator().manual_seed(1))
    shard = data[rank::world_size]
    for micro, batch in enumerate(shard.split(2)):
        with maybe_no_sync(ddp, sync=micro == 1):
            (ddp(batch).square().mean() / 2).backward()
    reference(data).square().mean().backward()
    result["ddp_grad_matches"] = all(
        torch.allclose(p.grad, q.grad, atol=1e-6)
        for p, q in zip(unwrap_model(ddp).parameters(), reference.parameters(), strict=True)
    )

    # A parameter the loss does not use: DDP's own error on the second step, turned into one naming it.
    half = wrap_ddp(HalfUsed(), info)
    result["unused_error"] = None
    try:
        with explain_ddp_errors(half, "model.preset=test", info):
            for _ in range(2):
                half(torch.randn(2, 3)).backward()
    except PevlError as error:
        result["unused_error"] = str(error)

    # Processes that see different checkpoints fail together, with a hint about shared work dirs.
    result["agree"] = same_on_every_rank("ckpt", "the checkpoint")
    try:
        same_on_every_rank("ckpt" if rank == 0 else None, "the checkpoint to resume from")
    except PevlError as error:
        result["disagree"] = str(error)
    barrier()
    cleanup()
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))


@pytest.mark.slow
def test_two_gloo_processes(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    expected_rows = [[0.0] * 3] * 2 + [[1.0] * 3] * 3
    for rank, result in enumerate(results):
        assert (result["rank"], result["world_size"], result["backend"]) == (rank, 2, "gloo")
        assert result["gathered"] == expected_rows
        offset = 0 if rank == 0 else 2
        # Both ranks computed the same loss on the gathered rows: each local row gets the gradient twice.
        expected_grad = 2 * np.arange(15, dtype=float).reshape(5, 3)[offset : offset + rank + 2]
        np.testing.assert_array_equal(result["grad"], expected_grad)
        assert result["mean_float"] == 0.5
        assert result["mean_tensor"] == [0.5, 1.0]
        assert result["objects"] == [{"rank": 0}, {"rank": 1}]
        assert result["eval"] == [[10.0 * i, -i] for i in range(5)]
        assert result["ddp_grad_matches"]
        assert "unused.weight, unused.bias (model option: the model code)" in result["unused_error"]
        assert "model.preset=test" in result["unused_error"]
        assert result["agree"] == "ckpt"
        assert "disagree on the checkpoint to resume from (rank 0 on " in result["disagree"]
        assert ": ckpt, rank 1 on " in result["disagree"] and "shared by all nodes" in result["disagree"]
