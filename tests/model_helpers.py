"""Helpers of the model tests: random trained-looking weights and inputs with missing people."""

from __future__ import annotations

import torch

from pevl.models.pevl import PeVL
from pevl.models.presets import create_model

LABELS = [
    "forward takeoff, 1 somersault, piked",
    "back takeoff, 2 somersaults, tuck",
    "reverse takeoff, 1.5 somersaults, straight",
    "inward takeoff, 2.5 somersaults, free position",
]


@torch.no_grad()
def randomize(model: PeVL, seed: int = 0, std: float = 0.05) -> PeVL:
    """Move every trainable parameter off its init, so that zero-initialised adapters and refinements act.

    A model at its identity init hides wrong wiring (an adapter whose output is dropped changes nothing while it is
    zero); tests of the architecture run on weights that look trained.
    """
    gen = torch.Generator().manual_seed(seed)
    for _, param in sorted(model.named_parameters()):
        if param.requires_grad and param.is_floating_point():
            param.add_(std * torch.randn(param.shape, generator=gen))
    return model


def tiny_model(name: str = "pevl_tiny", seed: int = 0, **overrides: object) -> PeVL:
    """A randomised tiny preset in eval mode."""
    torch.manual_seed(seed)
    return randomize(create_model(name, **overrides), seed).eval()


def clip_inputs(model: PeVL, batch: int = 3, seed: int = 0, missing: float = 0.0) -> dict[str, torch.Tensor | None]:
    """Random video and pose clips for ``model``; a ``missing`` fraction of joints gets score 0."""
    cfg = model.config
    gen = torch.Generator().manual_seed(seed)
    size = cfg.clip.vision.image_size
    video = torch.randn(batch, cfg.num_video_frames, 3, size, size, generator=gen)
    pose = torch.rand(batch, cfg.num_pose_frames, cfg.num_joints, 3, generator=gen) * 2 - 1
    pose[..., 2] = 0.3 + 0.7 * torch.rand(pose.shape[:3], generator=gen)
    if missing:
        lost = torch.rand(pose.shape[:3], generator=gen) < missing
        pose[..., 2] = torch.where(lost, torch.zeros_like(pose[..., 2]), pose[..., 2])
    return {"video": video if cfg.use_video else None, "pose": pose if cfg.use_pose else None}
