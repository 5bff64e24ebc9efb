"""Shared fixtures: the real data beside the project, and deterministic seeding."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _shared_data_dir() -> Path:
    override = os.environ.get("PEVL_SHARED_DATA")
    return Path(override) if override else SHARED_DATA


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real videos, skeletons and label files at ``../shared/data``.

    Skips with the reason when the folder is absent (a user's clone); fails instead when
    ``PEVL_REQUIRE_SHARED_DATA=1`` (CI), so the real-data tests can never silently vanish.
    """
    root = _shared_data_dir()
    if not (root / "SOURCES.md").is_file():
        reason = f"real test data not found at {root} (set PEVL_SHARED_DATA to its location)"
        if os.environ.get("PEVL_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(reason + " but PEVL_REQUIRE_SHARED_DATA=1")
        pytest.skip(reason)
    return root


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """What commands cache on disk (encoded class texts, poses) goes to a temporary folder, not ``~/.cache/pevl``."""
    if os.environ.get("PEVL_CACHE"):
        yield
        return
    os.environ["PEVL_CACHE"] = str(tmp_path_factory.mktemp("pevl_cache"))
    try:
        yield
    finally:
        os.environ.pop("PEVL_CACHE", None)


@pytest.fixture(autouse=True)
def _seed_and_threads() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def synthetic_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic dive set (3 classes x 4 clips of 16 frames at 32 px), read-only for the tests."""
    from pevl.data.synthetic import make_synthetic

    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic(root, num_classes=3, per_class=4, frames=16, size=32, val_fraction=0.25, progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_checkpoint(synthetic_set: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny PeVL checkpoint (2 RGB + 8 pose frames) trained a few steps on :func:`synthetic_set`, and the set."""
    from train_helpers import train_tiny

    return train_tiny(synthetic_set, tmp_path_factory.mktemp("run"), "pevl_tiny"), synthetic_set
