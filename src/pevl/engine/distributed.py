"""Multi-process training: torchrun set-up, feature gathering for contrastive losses, reductions.

``torchrun --nproc-per-node N -m pevl train ...`` runs one process per device (gloo on CPU, NCCL on GPU).
A plain ``pevl train`` is the same code path with a world size of 1: every function here then works without a
process group (gathers return the input, reductions are identities, barriers return at once).
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from pevl.errors import PevlError
from pevl.models.losses import all_gather_with_grad  # noqa: F401  (re-exported: the losses own the gather)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int  # global rank, 0 .. world_size - 1
    world_size: int  # number of processes
    local_rank: int  # rank on this machine (the GPU index)
    device: torch.device  # device this process computes on
    backend: str | None  # "gloo", "nccl", or None without a process group

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that logs and saves."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when a process group with more than one process is running."""
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise PevlError(f"environment variable {name}={value!r} is not an integer (set by torchrun)") from None


def is_initialized() -> bool:
    """Whether a process group is running."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_initialized() else 0


def get_world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if is_initialized() else 1


def is_main_process() -> bool:
    """True on rank 0 (and in a single-process run)."""
    return get_rank() == 0


def init_distributed(backend: str | None = None, timeout_minutes: float = 30.0) -> DistInfo:
    """Join the process group described by torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``).

    Without those variables, or with ``WORLD_SIZE=1``, no process group is created.

    Args:
        backend: Force a backend; default ``nccl`` when CUDA is available, else ``gloo``.
        timeout_minutes: How long collectives wait for a slow rank before failing.

    Returns:
        This process's rank, world size, local rank, device and backend.
    """
    cuda = torch.cuda.is_available()
    if is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
        local_rank = _env_int("LOCAL_RANK", rank)
        device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
        return DistInfo(rank, world_size, local_rank, device, dist.get_backend())
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if world_size < 1 or not 0 <= rank < world_size:
        raise PevlError(f"invalid torchrun environment: RANK={rank}, WORLD_SIZE={world_size}")
    if cuda:
        if local_rank >= torch.cuda.device_count():
            raise PevlError(f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} GPUs are visible")
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world_size == 1:
        return DistInfo(0, 1, local_rank, device, None)
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name):
            raise PevlError(f"WORLD_SIZE={world_size} but {name} is not set: launch with torchrun")
    backend = backend or ("nccl" if cuda else "gloo")
    kwargs: dict[str, Any] = {}
    if backend == "nccl":
        kwargs["device_id"] = device
    dist.init_process_group(
        backend=backend,
        init_method="env://",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(minutes=timeout_minutes),
        **kwargs,
    )
    return DistInfo(rank, world_size, local_rank, device, backend)


def cleanup() -> None:
    """Leave the process group, if any."""
    if is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every process (no-op in a single process)."""
    if is_initialized() and get_world_size() > 1:
        dist.barrier()


def all_reduce_mean(value: torch.Tensor | float) -> torch.Tensor | float:
    """Average a tensor or number over ranks (for logging losses and metrics).

    Returns:
        The mean, of the same kind as ``value`` (a float for a number).
    """
    if get_world_size() == 1:
        return value
    if isinstance(value, torch.Tensor):
        reduced = value.detach().clone()
        dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
        return reduced / get_world_size()
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.tensor(float(value), dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return float(tensor.item()) / get_world_size()


def gather_object(obj: Any) -> list[Any]:
    """Collect a picklable object from every rank, in rank order, on every rank.

    Only for trusted in-job data (the objects travel between this job's own processes).
    """
    if get_world_size() == 1:
        return [obj]
    gathered: list[Any] = [None] * get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def gather_by_index(indices: Sequence[int] | np.ndarray, values: np.ndarray, num_samples: int) -> np.ndarray:
    """Gather per-rank evaluation rows and put them back in dataset order, dropping sampler padding.

    Args:
        indices: Dataset index of each local row (from the sampler).
        values: Local rows ``[n_local, ...]`` (e.g. class scores).
        num_samples: Dataset length.

    Returns:
        ``[num_samples, ...]`` rows ordered by dataset index.

    Raises:
        ValueError: Some dataset index was never evaluated, or lengths disagree.
    """
    indices = np.asarray(indices, dtype=np.int64)
    values = np.asarray(values)
    if len(indices) != len(values):
        raise ValueError(f"{len(indices)} indices for {len(values)} rows")
    parts = gather_object((indices, values))
    all_indices = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, dtype=np.int64)
    all_values = np.concatenate([p[1] for p in parts]) if parts else values
    _, first = np.unique(all_indices, return_index=True)
    if len(first) != num_samples or (num_samples and (all_indices.min() < 0 or all_indices.max() >= num_samples)):
        raise ValueError(f"gathered {len(first)} distinct indices for a dataset of {num_samples} samples")
    order = all_indices[first].argsort()
    return all_values[first[order]]


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def wrap_ddp(model: torch.nn.Module, info: DistInfo, find_unused_parameters: bool = False) -> torch.nn.Module:
    """Wrap ``model`` (already on ``info.device``) in DistributedDataParallel when running on several processes."""
    if not info.distributed:
        return model
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=device_ids, find_unused_parameters=find_unused_parameters
    )


@contextlib.contextmanager
def maybe_no_sync(model: torch.nn.Module, sync: bool) -> Iterator[None]:
    """Skip DDP's gradient all-reduce on accumulation micro-steps (``sync=False``); sync on the last one.

    Gradient accumulation: run the first ``grad_accum_steps - 1`` backward passes under
    ``maybe_no_sync(model, False)`` and the last one with ``sync=True``, then step the optimiser.
    """
    if not sync and isinstance(model, torch.nn.parallel.DistributedDataParallel):
        with model.no_sync():
            yield
    else:
        yield
