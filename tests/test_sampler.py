"""ResumableSampler: DistributedSampler's order and sharding, plus an exact mid-epoch resume."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from pevl.engine.sampler import ResumableSampler
from pevl.errors import PevlError


@pytest.mark.parametrize("num_samples", [1, 7, 10, 12])
@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("drop_last", [False, True])
def test_same_indices_as_torch_distributed_sampler(num_samples, world_size, shuffle, drop_last):
    dataset = list(range(num_samples))
    for rank in range(world_size):
        ours = ResumableSampler(num_samples, shuffle, seed=3, rank=rank, world_size=world_size, drop_last=drop_last)
        reference = DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=3, drop_last=drop_last
        )
        for epoch in (0, 1, 5):
            ours.set_epoch(epoch)
            reference.set_epoch(epoch)
            assert list(ours) == list(reference)
        assert len(ours) == len(reference)


def test_each_epoch_is_a_new_deterministic_permutation():
    sampler = ResumableSampler(50, seed=1)
    first = list(sampler)
    assert sorted(first) == list(range(50))
    assert list(ResumableSampler(50, seed=1)) == first
    sampler.set_epoch(1)
    assert list(sampler) != first
    assert list(ResumableSampler(50, seed=2)) != first


def test_shards_are_equal_and_cover_the_dataset():
    shards = [list(ResumableSampler(11, seed=0, rank=r, world_size=4)) for r in range(4)]
    assert {len(s) for s in shards} == {3}
    assert set().union(*shards) == set(range(11))
    assert sum(len(s) for s in shards) == 12  # one index repeated as padding


def test_resume_yields_exactly_the_remaining_indices():
    uninterrupted = ResumableSampler(20, seed=5)
    uninterrupted.set_epoch(2)
    full = list(uninterrupted)

    sampler = ResumableSampler(20, seed=5)
    sampler.set_epoch(2)
    sampler.advance(4)
    sampler.advance(4)
    state = sampler.state_dict()
    assert (state["epoch"], state["consumed"]) == (2, 8)

    resumed = ResumableSampler(20, seed=5)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # the loop calls this at the top of the resumed epoch: position is kept
    assert list(resumed) == full[8:]
    assert len(resumed) == 20 and resumed.remaining == 12

    resumed.set_epoch(3)  # the next epoch starts from its beginning
    uninterrupted.set_epoch(3)
    assert list(resumed) == list(uninterrupted)


def test_position_counts_what_was_trained_not_what_was_prefetched():
    dataset = TensorDataset(torch.arange(16))
    sampler = ResumableSampler(16, seed=0)
    loader = DataLoader(dataset, batch_size=4, sampler=sampler)
    seen = []
    for step, (batch,) in enumerate(loader):
        if step == 2:
            break  # interrupted before this batch was trained on
        seen += batch.tolist()
        sampler.advance(len(batch))
    resumed = ResumableSampler(16, seed=0)
    resumed.load_state_dict(sampler.state_dict())
    rest = [i for (batch,) in DataLoader(dataset, batch_size=4, sampler=resumed) for i in batch.tolist()]
    assert seen + rest == list(ResumableSampler(16, seed=0))


def test_resume_on_another_world_size_skips_the_consumed_prefix():
    ranks = [ResumableSampler(24, seed=0, rank=r, world_size=2) for r in range(2)]
    for sampler in ranks:
        sampler.advance(6)  # 12 samples consumed over both ranks
    state = ranks[0].state_dict()
    new_ranks = [ResumableSampler(24, seed=0, rank=r, world_size=3) for r in range(3)]
    for sampler in new_ranks:
        sampler.load_state_dict(state)
    remaining = sorted(i for sampler in new_ranks for i in sampler)
    full = list(ResumableSampler(24, seed=0))
    assert remaining == sorted(full[12:])


def test_state_from_another_dataset_or_seed_is_refused():
    state = ResumableSampler(10, seed=0).state_dict()
    with pytest.raises(PevlError, match="10 samples, the dataset now has 12"):
        ResumableSampler(12, seed=0).load_state_dict(state)
    with pytest.raises(PevlError, match="seed"):
        ResumableSampler(10, seed=1).load_state_dict(state)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="rank"):
        ResumableSampler(10, rank=2, world_size=2)
    with pytest.raises(ValueError, match="advance"):
        ResumableSampler(10).advance(-1)
    sampler = ResumableSampler(10)
    sampler.advance(25)
    assert sampler.remaining == 0 and list(sampler) == []
