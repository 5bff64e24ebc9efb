"""Parameter and FLOP counts of a preset, per module group, computed on the ``meta`` device.

Nothing is allocated: the model is built on ``meta`` and run on ``meta`` tensors under
:class:`torch.utils.flop_counter.FlopCounterMode`, so even ViT-L/14 at 32 + 32 frames is profiled in seconds.
GFLOPs follow the convention of the paper's Table 2 and of fvcore: one multiply-add counts as one FLOP.
The class-text features are computed once and cached at inference, so the text encoder is reported per prompt and
is not part of the per-video total.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pevl.models.presets import create_model
from pevl.models.text_encoder import TextFeatures


@dataclass
class GroupProfile:
    """One row of the profile table."""

    name: str
    params: int
    params_trainable: int
    gflops: float | None  # multiply-adds / 1e9 for one clip (None: no compute of its own)
    note: str = ""


def _count(module: nn.Module | None) -> tuple[int, int]:
    if module is None:
        return 0, 0
    params = list(module.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def _macs(fn: Any) -> tuple[float, Any]:
    with FlopCounterMode(display=False) as counter:
        result = fn()
    return counter.get_total_flops() / 2 / 1e9, result


def profile_model(
    preset: str,
    num_video_frames: int = 8,
    num_pose_frames: int = 32,
    num_classes: int = 400,
    label_tokens: int = 8,
    **overrides: Any,
) -> dict[str, Any]:
    """Profile a preset for one clip.

    Args:
        preset: A name from :func:`pevl.list_models`.
        num_video_frames: T_v.
        num_pose_frames: T_p (a multiple of T_v).
        num_classes: Class texts scored by SGMC (400 = Kinetics-400).
        label_tokens: Tokens per label assumed for the sub-action level.
        **overrides: Other :class:`PeVLConfig` fields.

    Returns:
        ``{"preset", "video_frames", "pose_frames", "num_classes", "params_total", "params_trainable", "gflops",
        "text_gflops_per_prompt", "groups": [...], "flops_convention"}``.
    """
    with torch.device("meta"):
        model = create_model(preset, num_video_frames=num_video_frames, num_pose_frames=num_pose_frames, **overrides)
    cfg = model.config
    image = cfg.clip.vision.image_size
    video = torch.empty(1, cfg.num_video_frames, 3, image, image, device="meta")
    pose = torch.empty(1, cfg.num_pose_frames, cfg.num_joints, cfg.pose_channels, device="meta")

    groups: list[GroupProfile] = []
    visual_params = _count(model.clip.visual)
    groups.append(GroupProfile("CLIP image tower (frozen, shared by g_v and g_p)", *visual_params, None))
    video_tokens = pose_tokens = None
    if model.video_encoder is not None:
        gflops, (video_tokens, _) = _macs(lambda: model.video_encoder(video, model.clip.visual))
        groups.append(
            GroupProfile(
                "video encoder g_v (adapters, temporal embedding)",
                *_count(model.video_encoder),
                gflops,
                "runs the shared ViT",
            )
        )
    if model.pose_encoder is not None:
        gflops, (pose_tokens, _) = _macs(lambda: model.pose_encoder(pose, model.clip.visual))
        groups.append(
            GroupProfile(
                "pose encoder g_p (embedding, adapters)", *_count(model.pose_encoder), gflops, "T-Attn + S-Attn"
            )
        )
    if model.ucmr is not None:

        def run_ucmr() -> tuple[Any, Any]:
            v, p, _ = model.run_ucmr(video_tokens, pose_tokens)  # as inference runs it: no maps
            return v, p

        gflops, (video_tokens, pose_tokens) = _macs(run_ucmr)
        groups.append(GroupProfile(f"UCMR x{cfg.num_ucmr_blocks} (V2P-R, P2V-R)", *_count(model.ucmr), gflops))

    embed_dim = cfg.clip.embed_dim
    length = label_tokens + 2
    text = TextFeatures(
        torch.empty(num_classes, embed_dim, device="meta"),
        torch.empty(num_classes, length, embed_dim, device="meta"),
        torch.ones(num_classes, length, dtype=torch.bool, device="meta"),
        torch.zeros(num_classes, length, dtype=torch.long, device="meta"),
    )

    def run_heads() -> Any:
        video_frames = pose_frames = None
        if video_tokens is not None:
            video_frames = model.video_encoder.frame_features(video_tokens, model.clip.visual)
        if pose_tokens is not None:
            pose_frames, _ = model.pose_encoder.frame_features(pose_tokens, model.clip.visual, pose)
        frames, masks = model.sgmc.stream_frames(video_frames, pose_frames)
        return model.sgmc.similarities(frames, text, masks)

    gflops, _ = _macs(run_heads)
    groups.append(GroupProfile(f"projections + SGMC ({num_classes} classes)", *_count(model.sgmc), gflops))

    tokens = torch.zeros(1, cfg.clip.text.context_length, dtype=torch.long, device="meta")
    text_gflops, _ = _macs(lambda: model.text_encoder(tokens, model.clip.text))
    text_params = _count(model.clip.text)
    adapter_params = _count(model.text_encoder)
    groups.append(
        GroupProfile(
            "text encoder g_t (frozen CLIP text + adapters)",
            text_params[0] + adapter_params[0],
            text_params[1] + adapter_params[1],
            text_gflops,
            "per 77-token prompt; class texts are cached at inference",
        )
    )
    total, trainable = _count(model)
    per_clip = sum(g.gflops for g in groups if g.gflops is not None and not g.name.startswith("text encoder"))
    return {
        "preset": preset,
        "video_frames": cfg.num_video_frames if cfg.use_video else 0,
        "pose_frames": cfg.num_pose_frames if cfg.use_pose else 0,
        "num_classes": num_classes,
        "params_total": total,
        "params_trainable": trainable,
        "gflops": round(per_clip, 2),
        "text_gflops_per_prompt": round(text_gflops, 3),
        "groups": [asdict(g) for g in groups],
        "flops_convention": "multiply-adds (fvcore / paper convention), one clip, one view, text cached",
    }


def format_profile(profile: dict[str, Any]) -> str:
    """A human-readable table of :func:`profile_model` output."""
    lines = [
        f"{profile['preset']}: {profile['video_frames']} video + {profile['pose_frames']} pose frames, "
        f"{profile['num_classes']} classes",
        f"{'module group':<52} {'params':>10} {'trainable':>10} {'GFLOPs':>9}",
        "-" * 84,
    ]
    for g in profile["groups"]:
        gflops = "-" if g["gflops"] is None else f"{g['gflops']:.2f}"
        lines.append(f"{g['name']:<52} {g['params'] / 1e6:>9.2f}M {g['params_trainable'] / 1e6:>9.2f}M {gflops:>9}")
    lines.append("-" * 84)
    lines.append(
        f"{'total (per clip, text cached)':<52} {profile['params_total'] / 1e6:>9.2f}M "
        f"{profile['params_trainable'] / 1e6:>9.2f}M {profile['gflops']:>9.2f}"
    )
    lines.append(f"GFLOPs = {profile['flops_convention']}")
    return "\n".join(lines)
