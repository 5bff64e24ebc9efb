"""The pose encoder g_p: 2D keypoints through the *shared* frozen CLIP ViT blocks with three adapters (Fig. 2b).

Keypoints ``[B, T_p, J, 3]`` (x, y in [-1, 1] and the detection score) are embedded by a learnable linear layer plus a
joint embedding ``[J, D]`` and a temporal embedding ``[T_p, D]``. Every CLIP block then runs

1. **T-Attn**: tokens reshaped to ``J x T_p``, attention along time, added through the T-Adapter;
2. **S-Attn**: tokens reshaped to ``T_p x J``, attention across the joints of a frame, with the S-Adapter;
3. the MLP with the MLP-Adapter in parallel.

T-Attn and S-Attn use the same frozen attention weights as the video encoder: the blocks are passed in, not copied,
which saves a whole ViT of memory. ``temporal_attention=False`` drops T-Attn (Table 3 ablation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from pevl.data.pose.layouts import COCO17_PARENT
from pevl.models.adapters import PoseBlockAdapters
from pevl.models.clip import Block, VisionTransformer
from pevl.models.config import PeVLConfig
from pevl.models.embeddings import resize_temporal_embed

MOTION_SCALE = 10.0
"""Joint displacements between sampled frames are ~0.01-0.1 in normalised coordinates; x10 puts them on the scale of
the positions before the shared linear embedding."""


def normalize_per_clip(pose: Tensor) -> Tensor:
    """Centre and scale each clip's skeleton (missing joints stay at zero).

    The mean of the detected joints over all frames moves to the origin, and their root-mean-square distance from
    it becomes 0.5.

    Args:
        pose: Keypoints ``[B, T, J, C]`` with the score in channel 2.

    Returns:
        The same shape, x and y replaced.
    """
    xy, score = pose[..., :2], pose[..., 2:]
    present = (pose[..., 2:3] > 0).to(pose.dtype)
    count = present.sum(dim=(1, 2), keepdim=True).clamp_min(1)
    centre = (xy * present).sum(dim=(1, 2), keepdim=True) / count
    offset = (xy - centre) * present
    spread = (offset.pow(2).sum(dim=-1, keepdim=True).sum(dim=(1, 2), keepdim=True) / count).sqrt().clamp_min(1e-3)
    return torch.cat([0.5 * offset / spread, score], dim=-1)


class PoseEmbedding(nn.Module):
    """Learnable embedding of keypoints: ``linear(x, y, score[, dx, dy]) + joint_embed[j] + temporal_embed[t]``.

    With ``bones`` (a reconstruction choice, like PYSKL's bone stream), each joint also carries the vector from its
    parent joint in :data:`~pevl.data.pose.layouts.COCO17_PARENT` (zero where either is missing), giving every token
    the local limb geometry a per-joint embedding cannot see.

    ``normalize="clip"`` (a reconstruction choice, like PYSKL's per-clip pre-normalisation) first centres and scales
    each clip's skeleton (:func:`normalize_per_clip`), making the pose stream blind to where the person is in the
    frame and how large; ``"crop"`` keeps the coordinates of the RGB crop ([-1, 1] spans it), the paper's setting.
    With ``motion`` (a reconstruction choice, like PYSKL's joint-motion stream), each joint also carries its
    displacement from the previous frame (zero at the first frame and wherever either frame misses the joint), which
    lets the frozen attention blocks see movement directly instead of having to difference positions themselves.

    Args:
        channels: Values per joint in the input (3: x, y, score).
        num_joints: J.
        num_frames: T_p the temporal embedding is trained for (resampled for other lengths).
        width: Output token width D.
        motion: Add the displacement channels.
        normalize: ``"crop"`` or ``"clip"``.
        bones: Add the bone-vector channels (COCO-17 only).
    """

    def __init__(
        self,
        channels: int,
        num_joints: int,
        num_frames: int,
        width: int,
        motion: bool = True,
        normalize: str = "crop",
        bones: bool = False,
    ) -> None:
        super().__init__()
        if bones and num_joints != len(COCO17_PARENT):
            raise ValueError(f"pose_bones needs the COCO-17 layout, not {num_joints} joints")
        self.motion = motion
        self.normalize = normalize
        self.bones = bones
        self.proj = nn.Linear(channels + (2 if motion else 0) + (2 if bones else 0), width)
        self.joint_embed = nn.Parameter(0.02 * torch.randn(num_joints, width))
        self.temporal_embed = nn.Parameter(0.02 * torch.randn(num_frames, width))

    @classmethod
    def from_config(cls, cfg: PeVLConfig, width: int) -> PoseEmbedding:
        """The embedding a model config asks for (``pose_*`` fields), with tokens of ``width``."""
        return cls(
            cfg.pose_channels, cfg.num_joints, cfg.num_pose_frames, width, cfg.pose_motion, cfg.pose_normalize,
            cfg.pose_bones,
        )  # fmt: skip

    def forward(self, pose: Tensor) -> Tensor:
        """Embed keypoints ``[B, T, J, C]`` into tokens ``[B, T, J, D]``."""
        pose = pose.to(self.proj.weight.dtype)
        if self.normalize == "clip":
            pose = normalize_per_clip(pose)
        xy, present = pose[..., :2], (pose[..., 2:3] > 0).to(pose.dtype)
        extra = []
        if self.motion:
            step = (xy[:, 1:] - xy[:, :-1]) * present[:, 1:] * present[:, :-1]
            extra.append(MOTION_SCALE * F.pad(step, (0, 0, 0, 0, 1, 0)))
        if self.bones:
            parent = list(COCO17_PARENT)
            extra.append((xy - xy[:, :, parent]) * present * present[:, :, parent])
        pose = torch.cat([pose, *extra], dim=-1)
        temporal = resize_temporal_embed(self.temporal_embed, pose.shape[1])
        x = self.proj(pose)
        return x + self.joint_embed.to(x.dtype) + temporal[:, None].to(x.dtype)


class PoseEncoder(nn.Module):
    """Embedding and adapters of g_p on the CLIP backbone; the frozen ViT is passed in at call time.

    Args:
        cfg: The model configuration.
    """

    def __init__(self, cfg: PeVLConfig) -> None:
        super().__init__()
        width = cfg.clip.vision.width
        self.scale = cfg.mlp_adapter_scale
        self.temporal_attention = cfg.temporal_attention
        self.use_ln_pre = cfg.pose_ln_pre
        self.grad_checkpointing = cfg.grad_checkpointing
        self.embed = PoseEmbedding.from_config(cfg, width)
        self.adapters = nn.ModuleList(
            PoseBlockAdapters(width, cfg.adapter_ratio, cfg.temporal_attention) for _ in range(cfg.clip.vision.layers)
        )

    def _block(
        self, block: Block, adapters: PoseBlockAdapters, x: Tensor, need_weights: bool
    ) -> tuple[Tensor, Tensor | None]:
        b, t, j, d = x.shape
        if self.temporal_attention:
            xt = x.transpose(1, 2).reshape(b * j, t, d)  # T-Attn: J x T_p sequences of length T_p
            attn_out, _ = block.attn(block.ln_1(xt))
            x = x + adapters.t_adapter(attn_out).view(b, j, t, d).transpose(1, 2)
        xs = x.reshape(b * t, j, d)  # S-Attn: T_p x J sequences of length J
        attn_out, probs = block.attn(block.ln_1(xs), need_weights=need_weights)
        xs = xs + adapters.s_adapter(attn_out)
        h = block.ln_2(xs)
        xs = xs + block.mlp(h) + self.scale * adapters.mlp_adapter(h)
        return xs.view(b, t, j, d), probs

    def forward(
        self, pose: Tensor, visual: VisionTransformer, need_weights: bool = False
    ) -> tuple[Tensor, list[Tensor]]:
        """Encode keypoints into joint tokens.

        Args:
            pose: ``[B, T_p, J, 3]`` keypoints (x, y in [-1, 1], score).
            visual: The CLIP image tower whose blocks are shared with the video encoder.
            need_weights: Also return each block's S-Attn probabilities ``[B*T_p, heads, J, J]``.

        Returns:
            Tokens ``[B, T_p, J, D]`` and the attention maps (empty unless asked for).
        """
        if pose.dim() != 4:
            raise ValueError(f"pose must be [B, T, J, C], got shape {list(pose.shape)}")
        x = self.embed(pose)
        if self.use_ln_pre:
            x = visual.ln_pre(x)
        maps = []
        for block, adapters in zip(visual.blocks, self.adapters, strict=True):
            if self.grad_checkpointing and self.training and not need_weights:
                x, probs = checkpoint(self._block, block, adapters, x, False, use_reentrant=False)
            else:
                x, probs = self._block(block, adapters, x, need_weights)
            if probs is not None:
                maps.append(probs)
        return x, maps

    @staticmethod
    def frame_features(tokens: Tensor, visual: VisionTransformer) -> Tensor:
        """Project joint tokens and average over joints: ``[B, T, J, D] -> [B, T, E]``."""
        return visual.head(tokens).mean(dim=2)
