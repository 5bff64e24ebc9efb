"""A seeded per-class validation share for datasets that come without a split.

A class folder of one's own videos, a single MMAction2 list or a skeleton pickle without splits has no
validation split; validating on the training clips would report a flattering accuracy without a word. Instead a
share of each class (``val_fraction``, default 0.2, at least one clip of every class with two or more) is held out
as ``val`` / ``test`` with a seeded draw (``split_seed``, default 0), the rest is ``train``; a warning says so
once, and the dataset's ``split_note`` (written to ``train.log`` and to ``pevl eval``'s ``metrics.json``) says how
the split was made.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from pevl.errors import PevlError

HOLDOUT_OPTIONS = frozenset({"val_fraction", "split_seed"})
"""Dataset options of the hold-out: ``val_fraction`` (default 0.2) and ``split_seed`` (default 0)."""

HELD_OUT_SPLITS = ("val", "test")
"""Split names that read the held-out share (``test`` is ``val``); ``train`` reads the rest."""

_ANNOUNCED: set[tuple[str, float, int]] = set()  # hold-outs already reported (train and val build the same one)

T = TypeVar("T")


def holdout_settings(source: str | Path, options: dict[str, Any]) -> tuple[float, int]:
    """``(val_fraction, split_seed)`` from the dataset options, checked.

    Raises:
        PevlError: A fraction outside (0, 1) or a seed that is not an integer, naming ``source``.
    """
    try:
        fraction = float(options.get("val_fraction", 0.2))
        seed = int(options.get("split_seed", 0))
    except (TypeError, ValueError):
        raise PevlError(f"{source}: val_fraction must be a number and split_seed an integer") from None
    if not 0.0 < fraction < 1.0:
        raise PevlError(f"{source}: has no splits: val_fraction must be in (0, 1) to hold some out, got {fraction}")
    return fraction, seed


def held_out_keys(items: Sequence[tuple[str, int]], fraction: float, seed: int) -> set[str]:
    """The keys held out: ``round(fraction * n)`` of each class's ``n`` (at least 1, never all), seeded.

    Args:
        items: ``(key, label)`` of every sample; the draw depends on the keys, not on their order.
        fraction: Share of each class to hold out.
        seed: Seed of the draw.
    """
    by_label: dict[int, list[str]] = {}
    for key, label in items:
        by_label.setdefault(int(label), []).append(str(key))
    rng = np.random.default_rng(seed)
    held: set[str] = set()
    for label in sorted(by_label):
        keys = sorted(by_label[label])
        count = min(len(keys) - 1, max(1, round(fraction * len(keys)))) if len(keys) > 1 else 0
        held.update(keys[i] for i in rng.permutation(len(keys))[:count])
    return held


def hold_out(
    source: str | Path,
    samples: Sequence[T],
    keys: Sequence[str],
    labels: Sequence[int],
    split: str,
    options: dict[str, Any],
    what: str = "samples",
) -> tuple[list[T], str]:
    """The ``split`` of a dataset without splits, and the note that says how it was made.

    Args:
        source: The folder or file the samples come from (named in the warning).
        samples: Every sample, in the dataset's order.
        keys: A stable name of each sample (its path relative to the dataset).
        labels: The class index of each sample.
        split: ``train``, ``val`` or ``test`` (``test`` reads the same share as ``val``).
        options: Dataset options (``val_fraction``, ``split_seed``).
        what: What the samples are called in messages (``videos``, ``annotations``).

    Returns:
        The samples of the split, in their order, and a one-line note for the run's log.

    Raises:
        PevlError: Another split name, or bad ``val_fraction`` / ``split_seed``.
    """
    if split != "train" and split not in HELD_OUT_SPLITS:
        raise PevlError(f"{source}: has no splits, so no split {split!r}: use train, val or test (held out)")
    fraction, seed = holdout_settings(source, options)
    held = held_out_keys(list(zip(keys, labels, strict=True)), fraction, seed)
    if held:
        note = (
            f"{source} has no splits: {len(held)} of its {len(samples)} {what} ({100 * fraction:.0f}% of each "
            f"class, seed {seed}) are held out as val/test, the other {len(samples) - len(held)} are train "
            "(data.options.val_fraction / split_seed change this)"
        )
    else:
        note = (
            f"{source} has no splits and too few {what} ({len(samples)}) to hold any out: every split is all of "
            "them, so a validation on it is on the training clips"
        )
    announced = (str(Path(source).resolve()), fraction, seed)
    if announced not in _ANNOUNCED:
        _ANNOUNCED.add(announced)
        print(f"warning: {note}", file=sys.stderr)
    if not held:
        return list(samples), note
    wanted_held = split != "train"
    return [s for s, key in zip(samples, keys, strict=True) if (key in held) == wanted_held], note
