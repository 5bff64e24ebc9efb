"""Helpers of the tests that train: tiny run settings and a few-step training run."""

from __future__ import annotations

from pathlib import Path

# 2 RGB + 8 pose frames of 32 px, batches of 4: a few steps per epoch, seconds in all.
TINY_RUN = [
    "model.preset=pevl_tiny",
    "model.overrides.num_video_frames=2",
    "model.overrides.num_pose_frames=8",
    "data.dataset=synthetic",
    "data.batch_size=4",
    "data.num_workers=0",
    "optim.epochs=2",
    "optim.warmup_epochs=0.5",
    "optim.lr=1e-3",
    "train.log_interval=1",
    "train.save_every_steps=2",
    "train.keep_last=0",
]


def make_training_set(root: Path) -> Path:
    """4 classes x 6 synthetic clips (a third held out) in ``root``: enough for the resume and DDP tests."""
    from pevl.data.synthetic import make_synthetic

    make_synthetic(root, num_classes=4, per_class=6, frames=16, size=32, val_fraction=0.34, progress=False)
    return root


def train_tiny(root: Path, out: Path, preset: str = "pevl_tiny", video_frames: int = 2) -> Path:
    """Train ``preset`` for one epoch on the synthetic set at ``root``; its checkpoint."""
    from pevl.engine.config import load_config
    from pevl.engine.train import train

    cfg = load_config(
        None,
        [f"model.preset={preset}", "data.dataset=synthetic", f"data.root={root}",
         f"model.overrides.num_video_frames={video_frames}", "model.overrides.num_pose_frames=8", "data.batch_size=3",
         "data.num_workers=0", "optim.epochs=1", "optim.warmup_epochs=0", "train.eval_interval=0"],
    )  # fmt: skip
    return train(cfg, out, progress=False).checkpoint
