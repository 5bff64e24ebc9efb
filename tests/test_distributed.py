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
    cleanup,
    gather_by_index,
    gather_object,
    init_distributed,
    is_main_process,
    maybe_no_sync,
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
    cleanup()


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
