"""Class-balanced training: oversample every class to the size of the largest one (``data.balance_classes``).

Like MMEngine's ``ClassBalancedDataset``, samples of the smaller classes are repeated, so an epoch sees every class
equally often and the loss is not dominated by the largest class. Each repeat is its own index, so it gets its own
temporal sampling and augmentation; the repeats are chosen by a seeded draw, so a resumed run sees the same epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def oversample_classes(samples: Sequence[T], labels: Sequence[int], seed: int = 0) -> list[T]:
    """Every class repeated up to the count of the largest class.

    A class of ``n`` samples when the largest has ``N`` gets each sample ``N // n`` times and ``N % n`` of them
    (a seeded choice) once more. The original order comes first, then the repeats.

    Args:
        samples: The training samples.
        labels: The class index of each sample.
        seed: Seed of the choice of the extra repeats.

    Returns:
        The samples with the repeats appended (unchanged when the classes are already balanced).
    """
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(int(label), []).append(i)
    if not by_class:
        return list(samples)
    largest = max(len(members) for members in by_class.values())
    rng = np.random.default_rng(seed)
    extra: list[int] = []
    for label in sorted(by_class):
        members = by_class[label]
        copies, rest = divmod(largest, len(members))
        extra.extend(members * (copies - 1))
        extra.extend(members[i] for i in sorted(rng.permutation(len(members))[:rest]))
    return list(samples) + [samples[i] for i in extra]


def balance_note(before: Sequence[int], after: Sequence[int]) -> str:
    """One line for the log: class counts before and after oversampling."""
    counts = np.bincount(np.asarray(before, dtype=np.int64))
    return (
        f"data.balance_classes: {len(before)} training samples oversampled to {len(after)} "
        f"({len(counts)} classes of {int(counts.max())}; smallest had {int(counts[counts > 0].min())})"
    )
