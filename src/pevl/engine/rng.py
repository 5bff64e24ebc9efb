"""Random generator states of a process: seeding, and lossless snapshots for exact resumption."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng() -> dict[str, Any]:
    """Snapshot this process's Python, numpy, torch and CUDA generator states.

    The snapshot is made of tensors, numbers, strings and plain containers only (numpy's key array becomes a
    tensor), so ``torch.save`` writes it and ``torch.load(weights_only=True)`` reads it back losslessly.
    """
    numpy_state = np.random.get_state(legacy=False)
    numpy_state["state"] = {
        "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
        "pos": int(numpy_state["state"]["pos"]),
    }
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": numpy_state,
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = list(torch.cuda.get_rng_state_all())
    return states


def restore_rng(states: Mapping[str, Any] | Sequence[Mapping[str, Any]], rank: int = 0) -> None:
    """Restore generator states from :func:`capture_rng` (or a per-rank list of them).

    Args:
        states: One snapshot, or one per rank as saved by :func:`save_checkpoint`.
        rank: This process's rank; with a list, ``states[rank % len(states)]`` is used (a run resumed on a
            different number of processes cannot be replayed exactly anyway).
    """
    if not isinstance(states, Mapping):
        if not states:
            return
        states = states[rank % len(states)]
    if "python" in states:
        random.setstate(states["python"])
    if "numpy" in states:
        numpy_state = dict(states["numpy"])
        key = numpy_state["state"]["key"]
        key = key.numpy() if isinstance(key, torch.Tensor) else np.asarray(key)
        numpy_state["state"] = {"key": key.astype(np.uint32), "pos": int(numpy_state["state"]["pos"])}
        np.random.set_state(numpy_state)
    if "torch" in states:
        torch.set_rng_state(states["torch"].cpu())
    if "cuda" in states and torch.cuda.is_available():
        cuda_states = list(states["cuda"])
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
