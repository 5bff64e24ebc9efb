"""The pose encoder g_p: 2D keypoints through the *shared* frozen CLIP ViT blocks with three adapters (Fig. 2b).

Keypoints ``[B, T_p, J, 3]`` (x, y in [-1, 1] and the detection score) are embedded by a learnable linear layer plus a
joint embedding ``[J, D]`` and a temporal embedding ``[T_p, D]``. Every CLIP block then runs

1. **T-Attn**: tokens reshaped to ``J x T_p``, attention along time, added through the T-Adapter;
2. **S-Attn**: tokens reshaped to ``T_p x J``, attention across the joints of a frame, with the S-Adapter;
3. the MLP with the MLP-Adapter in parallel.

T-Attn and S-Attn use the same frozen attention weights as the video encoder: the blocks are passed in, not copied,
which saves a whole ViT of memory. ``temporal_attention=False`` drops T-Attn (Table 3 ablation).

**Missing people.** A joint with score 0 (nobody detected) is no token: it is masked as a key in T-Attn and S-Attn,
left out of the joint mean of its frame, and its coordinates reach no other token (the motion and bone channels of
its neighbours are zero where it is missing). A frame with no joint has no feature (:meth:`PoseEncoder.frame_features`
returns zeros and a false frame mask for it).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pevl.models.adapters import PoseBlockAdapters, run_adapted_blocks, spatial_step
from pevl.models.clip import Block, VisionTransformer, resize_temporal_embed
from pevl.models.config import PeVLConfig

MOTION_SCALE = 10.0
"""Joint displacements between sampled frames are ~0.01-0.1 in normalised coordinates; x10 puts them on the scale of
the positions before the shared linear embedding."""
EMBED_INIT_STD = 0.3
"""Initial standard deviation of the joint and temporal embeddings: that of the coordinate projection's output."""


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
    parent joint in ``parents`` (zero where either is missing), giving every token the local limb geometry a per-joint
    embedding cannot see.

    ``normalize="clip"`` (a reconstruction choice, like PYSKL's per-clip pre-normalisation) first centres and scales
    each clip's skeleton (:func:`normalize_per_clip`), making the pose stream blind to where the person is in the
    frame and how large; ``"crop"`` keeps the coordinates of the RGB crop ([-1, 1] spans it), the paper's setting.
    With ``motion`` (a reconstruction choice, like PYSKL's joint-motion stream), each joint also carries its
    displacement from the previous frame (zero at the first frame and wherever either frame misses the joint), which
    lets the frozen attention blocks see movement directly instead of having to difference positions themselves.

    Initial scales: the coordinate projection of inputs in [-1, 1] gives tokens of standard deviation ~0.3 per
    channel (``nn.Linear``'s default init), so the joint and temporal embeddings start at that scale too (and the
    projection's bias at zero, since a bias shared by every token only makes them alike). At the usual 0.02 they
    were ~13x smaller, and the frozen attention first saw near-identical tokens (cosine 0.97-0.99 between the
    joints of one frame).

    Args:
        channels: Values per joint in the input (3: x, y, score).
        num_joints: J.
        num_frames: T_p the temporal embedding is trained for (resampled for other lengths).
        width: Output token width D.
        motion: Add the displacement channels.
        normalize: ``"crop"`` or ``"clip"``.
        bones: Add the bone-vector channels.
        parents: Parent index of each joint (needed with ``bones``; the COCO-17 tree for the model's layout).
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
        parents: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if bones and (parents is None or len(parents) != num_joints):
            raise ValueError(f"pose_bones needs the parent of each of the {num_joints} joints")
        self.motion = motion
        self.normalize = normalize
        self.parents = list(parents) if bones and parents is not None else None
        self.proj = nn.Linear(channels + (2 if motion else 0) + (2 if bones else 0), width)
        nn.init.zeros_(self.proj.bias)
        self.joint_embed = nn.Parameter(EMBED_INIT_STD * torch.randn(num_joints, width))
        self.temporal_embed = nn.Parameter(EMBED_INIT_STD * torch.randn(num_frames, width))

    @classmethod
    def from_config(cls, cfg: PeVLConfig, width: int) -> PoseEmbedding:
        """The embedding a model config asks for (``pose_*`` fields), with tokens of ``width``."""
        return cls(
            cfg.pose_channels, cfg.num_joints, cfg.num_pose_frames, width, cfg.pose_motion, cfg.pose_normalize,
            cfg.pose_bones, cfg.joint_parents,
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
        if self.parents is not None:
            parent = self.parents
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

    def _step(
        self,
        block: Block,
        adapters: PoseBlockAdapters,
        x: Tensor,
        need_weights: bool,
        time_mask: Tensor | None = None,
        joint_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """One block of g_p: T-Attn (unless ablated), then S-Attn and the MLP, on tokens ``[B, T, J, D]``."""
        if self.temporal_attention:
            x = self.temporal_attention_step(block, adapters, x, time_mask)
        return self.spatial_step(block, adapters, x, need_weights, joint_mask)

    @staticmethod
    def temporal_attention_step(
        block: Block, adapters: PoseBlockAdapters, x: Tensor, time_mask: Tensor | None = None
    ) -> Tensor:
        """T-Attn: each joint attends along time (``J x T_p`` sequences), added through the T-Adapter.

        Args:
            block: The frozen block.
            adapters: Its adapters.
            x: Tokens ``[B, T, J, D]``.
            time_mask: ``[B * J, T]`` true where the joint was detected, or ``None`` when all were.
        """
        b, t, j, d = x.shape
        xt = x.transpose(1, 2).reshape(b * j, t, d)
        attn_out, _ = block.attn(block.ln_1(xt), key_mask=time_mask)
        return x + adapters.t_adapter(attn_out).view(b, j, t, d).transpose(1, 2)

    def spatial_step(
        self,
        block: Block,
        adapters: PoseBlockAdapters,
        x: Tensor,
        need_weights: bool = False,
        joint_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """S-Attn across the joints of each frame (``T_p x J`` sequences) and the MLP, both adapted.

        Args:
            block: The frozen block.
            adapters: Its adapters.
            x: Tokens ``[B, T, J, D]``.
            need_weights: Return the S-Attn probabilities ``[B*T, heads, J, J]``.
            joint_mask: ``[B * T, J]`` true where the joint was detected, or ``None`` when all were.
        """
        b, t, j, d = x.shape
        xs, probs = spatial_step(
            block, adapters, x.reshape(b * t, j, d), need_weights, mlp_scale=self.scale, key_mask=joint_mask
        )
        return xs.view(b, t, j, d), probs

    def forward(
        self, pose: Tensor, visual: VisionTransformer, need_weights: bool = False
    ) -> tuple[Tensor, list[Tensor]]:
        """Encode keypoints into joint tokens.

        Args:
            pose: ``[B, T_p, J, 3]`` keypoints (x, y in [-1, 1], score; score 0 = not detected).
            visual: The CLIP image tower whose blocks are shared with the video encoder.
            need_weights: Also return each block's S-Attn probabilities ``[B*T_p, heads, J, J]``.

        Returns:
            Tokens ``[B, T_p, J, D]`` (those of missing joints are never read) and the attention maps.
        """
        if pose.dim() != 4:
            raise ValueError(f"pose must be [B, T, J, C], got shape {list(pose.shape)}")
        x = self.embed(pose)
        if self.use_ln_pre:
            x = visual.ln_pre(x)
        b, t, j, _ = x.shape
        present = joint_presence(pose)  # always passed: checking whether all joints are there would sync a GPU
        time_mask = present.transpose(1, 2).reshape(b * j, t)
        joint_mask = present.reshape(b * t, j)
        step = partial(self._step, time_mask=time_mask, joint_mask=joint_mask)
        checkpointing = self.grad_checkpointing and self.training
        return run_adapted_blocks(visual.blocks, self.adapters, x, step, need_weights, checkpointing)

    @staticmethod
    def frame_features(tokens: Tensor, visual: VisionTransformer, pose: Tensor) -> tuple[Tensor, Tensor]:
        """Project joint tokens and average over the detected joints of each frame.

        Args:
            tokens: ``[B, T, J, D]`` from :meth:`forward`.
            visual: The CLIP image tower (its ``ln_post`` and projection).
            pose: The keypoints the tokens came from (their scores say which joints were detected).

        Returns:
            Frame features ``[B, T, E]`` (zero for a frame with no detected joint) and the frame mask ``[B, T]``.
        """
        return masked_joint_mean(visual.head(tokens), pose)


def joint_presence(pose: Tensor) -> Tensor:
    """``[B, T, J]`` true where a joint was detected (score > 0)."""
    return pose[..., 2] > 0


def masked_joint_mean(features: Tensor, pose: Tensor) -> tuple[Tensor, Tensor]:
    """Mean of per-joint features ``[B, T, J, E]`` over each frame's detected joints, and the frame mask ``[B, T]``."""
    present = joint_presence(pose).to(features.dtype).unsqueeze(-1)
    count = present.sum(dim=2)
    mean = (features * present).sum(dim=2) / count.clamp_min(1.0)
    return mean, count.squeeze(-1) > 0
