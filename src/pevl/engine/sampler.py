"""A distributed sampler that can stop mid-epoch and resume exactly where it stopped."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch.utils.data import Sampler

from pevl.errors import PevlError


class ResumableSampler(Sampler[int]):
    """Deterministic per-epoch shuffling, equal shards per rank, and a resumable position.

    Like ``torch.utils.data.DistributedSampler``: the epoch's permutation comes from ``seed + epoch``; without
    ``drop_last`` it is padded by repeating its start so that every rank gets the same number of samples
    (evaluation code must drop the repeats, see :func:`pevl.engine.distributed.gather_by_index`); with
    ``drop_last`` the tail is dropped instead. Rank ``r`` takes every ``world_size``-th index from ``r``.

    The training loop reports progress with :meth:`advance` (samples this rank has finished: the DataLoader
    prefetches, so what the sampler has handed out is not what has been trained on). :meth:`state_dict`
    records the epoch and that position; after :meth:`load_state_dict` the next iteration yields exactly the
    indices an uninterrupted run would still have seen in that epoch.

    Args:
        num_samples: Dataset length.
        shuffle: Shuffle every epoch (evaluation uses ``False``).
        seed: Base seed, the same on every rank.
        rank: This process's rank.
        world_size: Number of processes.
        drop_last: Drop the tail instead of padding so that shards are equal.
    """

    def __init__(
        self,
        num_samples: int,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ) -> None:
        if num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not valid for world_size {world_size}")
        self.num_samples = int(num_samples)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        self.consumed = 0  # samples of this rank's shard already trained on in `epoch`

    @property
    def num_samples_per_rank(self) -> int:
        """Samples each rank sees in a full epoch (the same on every rank)."""
        if self.drop_last:
            return self.num_samples // self.world_size
        return -(-self.num_samples // self.world_size)

    @property
    def total_size(self) -> int:
        """Indices handed out per epoch over all ranks (dataset length after padding or dropping)."""
        return self.num_samples_per_rank * self.world_size

    @property
    def remaining(self) -> int:
        """Samples of this rank's shard not yet consumed in the current epoch."""
        return self.num_samples_per_rank - self.consumed

    def epoch_indices(self, epoch: int | None = None) -> list[int]:
        """The whole (padded or truncated) index order of an epoch over all ranks."""
        epoch = self.epoch if epoch is None else epoch
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(self.seed + epoch)
            order = torch.randperm(self.num_samples, generator=generator).tolist()
        else:
            order = list(range(self.num_samples))
        if self.total_size <= len(order):
            return order[: self.total_size]
        padding = self.total_size - len(order)
        repeats = -(-padding // len(order))
        return order + (order * repeats)[:padding]

    def shard(self, epoch: int | None = None) -> list[int]:
        """This rank's full list of indices for an epoch."""
        return self.epoch_indices(epoch)[self.rank : self.total_size : self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.shard()[self.consumed :])

    def __len__(self) -> int:
        # The full shard, not what is left, so that len(DataLoader) keeps meaning "batches per epoch".
        return self.num_samples_per_rank

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch to iterate; moving to another epoch starts it from its beginning.

        Setting the epoch a resumed sampler is already in keeps its position, so a loop can call
        ``set_epoch(epoch)`` at the top of every epoch, resumed or not.
        """
        if epoch != self.epoch:
            self.epoch = int(epoch)
            self.consumed = 0

    def advance(self, count: int) -> None:
        """Record that this rank has finished ``count`` more samples of the current epoch."""
        if count < 0:
            raise ValueError(f"cannot advance by {count}")
        self.consumed = min(self.consumed + int(count), self.num_samples_per_rank)

    def state_dict(self) -> dict[str, Any]:
        """Epoch and position, plus what is needed to check that a resumed run uses the same data."""
        return {
            "epoch": self.epoch,
            "consumed": self.consumed,
            "consumed_total": self.consumed * self.world_size,
            "num_samples": self.num_samples,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "world_size": self.world_size,
            "drop_last": self.drop_last,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from :meth:`state_dict`.

        With a different number of processes the position is converted through the global count of consumed
        samples (exact when it divides evenly); the permutation itself does not depend on the world size.

        Raises:
            PevlError: The state belongs to a dataset of another length, or another seed or shuffle setting.
        """
        if int(state["num_samples"]) != self.num_samples:
            raise PevlError(
                f"cannot resume: the checkpoint's sampler covered {state['num_samples']} samples, "
                f"the dataset now has {self.num_samples}"
            )
        for key in ("seed", "shuffle"):
            if key in state and state[key] != getattr(self, key):
                raise PevlError(
                    f"cannot resume: the checkpoint's sampler used {key}={state[key]!r}, "
                    f"this run uses {getattr(self, key)!r}"
                )
        self.epoch = int(state["epoch"])
        if int(state.get("world_size", self.world_size)) == self.world_size:
            consumed = int(state["consumed"])
        else:
            consumed = int(state.get("consumed_total", 0)) // self.world_size
        self.consumed = min(max(consumed, 0), self.num_samples_per_rank)
