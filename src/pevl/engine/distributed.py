"""Multi-process training: torchrun set-up, feature gathering for contrastive losses, reductions.

``torchrun --nproc-per-node N -m pevl train ...`` runs one process per device (gloo on CPU, NCCL on GPU).
A plain ``pevl train`` is the same code path with a world size of 1: every function here then works without a
process group (gathers return the input, reductions are identities, barriers return at once).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from pevl.errors import PevlError
from pevl.models.losses import all_gather_with_grad  # noqa: F401  (re-exported: the losses own the gather)
from pevl.models.trainable import parameter_owner

DDP_UNUSED_MARKERS = ("Expected to have finished reduction", "did not receive grad")
"""Phrases of DistributedDataParallel's error for a trainable parameter that the loss did not use."""


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


# ---- trainable parameters that the loss does not use ----------------------------------------------------------------


def unused_parameters(model: torch.nn.Module) -> list[str]:
    """Names of the trainable parameters without a gradient after a backward pass (what DDP's reducer checks)."""
    return [name for name, p in unwrap_model(model).named_parameters() if p.requires_grad and p.grad is None]


def unused_parameters_message(names: Sequence[str], model_desc: str, rank: int, world_size: int) -> str:
    """A one-paragraph error naming the parameters the loss did not use, the option behind each, and the model.

    Args:
        names: The unused trainable parameters.
        model_desc: The preset and options of the run (e.g. ``model.preset=pevl_tiny, model.overrides: ...``).
        rank: The process that saw them.
        world_size: Processes in the job.
    """
    owners: dict[str, list[str]] = {}
    for name in names:
        owners.setdefault(parameter_owner(name), []).append(name)
    shown = "; ".join(
        f"{', '.join(group[:6])}{f' and {len(group) - 6} more' if len(group) > 6 else ''} (model option: {option})"
        for option, group in owners.items()
    )
    return (
        f"{len(names)} trainable parameter{'s' if len(names) != 1 else ''} received no gradient from the training "
        f"loss on rank {rank} of {world_size}: {shown}. Model: {model_desc}. DistributedDataParallel needs every "
        "trainable parameter in the loss: this preset/option combination leaves them out, so change the option "
        "named (or freeze_clip), or report the combination as a bug with this message"
    )


def check_gradients(model: torch.nn.Module, model_desc: str, info: DistInfo) -> list[str]:
    """After a synchronised backward pass: fail (several processes) on a trainable parameter without gradient.

    In a single process such a parameter is only waste, and its names are returned for a warning.

    Raises:
        PevlError: Running on several processes and some trainable parameter has no gradient.
    """
    names = unused_parameters(model)
    if names and info.distributed:
        raise PevlError(unused_parameters_message(names, model_desc, info.rank, info.world_size))
    return names


def _names_from_ddp_error(message: str, model: torch.nn.Module) -> list[str]:
    """The parameter names DDP's error lists (by name with TORCH_DISTRIBUTED_DEBUG, by index otherwise)."""
    named = re.search(r"Parameters which did not receive grad for rank \d+: (.+)", message)
    if named:
        return named.group(1).split(", ")
    indexed = re.search(r"Parameter indices which did not receive grad for rank \d+: ([\d ]+)", message)
    if not indexed:
        return []
    trainable = [name for name, p in unwrap_model(model).named_parameters() if p.requires_grad]
    return [trainable[int(i)] for i in indexed.group(1).split() if int(i) < len(trainable)]


@contextlib.contextmanager
def explain_ddp_errors(model: torch.nn.Module, model_desc: str, info: DistInfo) -> Iterator[None]:
    """Turn DistributedDataParallel's "parameters that were not used in producing loss" error into a PevlError.

    The error names the parameters, the model option behind each and the run's preset and options instead of
    PyTorch's generic advice.
    """
    try:
        yield
    except RuntimeError as error:
        text = str(error)
        if not any(marker in text for marker in DDP_UNUSED_MARKERS):
            raise
        names = _names_from_ddp_error(text, model)
        if not names:
            names = ["(unknown: rerun with TORCH_DISTRIBUTED_DEBUG=INFO to see their names)"]
        raise PevlError(unused_parameters_message(names, model_desc, info.rank, info.world_size)) from error


def same_on_every_rank(value: str | None, what: str) -> str | None:
    """Check that every process found the same ``value`` (e.g. the checkpoint to resume from); return it.

    Raises:
        PevlError: The processes disagree (on every rank, so that no process waits for the others); typically a
            work dir that is not on a filesystem shared by all nodes.
    """
    host = socket.gethostname()
    seen = gather_object((value, host))
    if len({v for v, _ in seen}) <= 1:
        return value
    listing = ", ".join(f"rank {r} on {h}: {v or 'none'}" for r, (v, h) in enumerate(seen))
    raise PevlError(
        f"the processes disagree on {what} ({listing}): every node must see the same work dir, so put it on a "
        "filesystem shared by all nodes (or copy the checkpoint to the same path on each node)"
    )
