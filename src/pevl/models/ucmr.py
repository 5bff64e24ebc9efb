"""The UCMR block: Unsymmetrical Cross-Modality Refinement of video and pose tokens (reconstruction).

Each video frame t is paired with its window of ``w = T_p / T_v`` pose frames (temporal alignment). Within a window:

* **V2P-R** (visual-enriched pose refinement): the window's ``w * 17`` pose tokens plus one learnable **background
  token** are GroupViT-style grouping tokens. An assignment attention with the softmax taken over the *groups* splits
  every image patch among the joints and the background; each pose token gathers the patches assigned to it:
  ``P' = P + MLP(LN(A V))``. The argmax of the assignment per patch is Fig. 9.
* **P2V-R** (pose-guided visual refinement): the frame's [cls] and patch tokens attend to the refined pose tokens,
  ``X' = X + s * Adapter(CrossAttn(q = LN(X), kv = LN(P')))``. Its attention over joints is Fig. 8.

Both refinements start as the identity (zero-initialised last layers), so a model with UCMR starts where the plain
encoders are. It is "unsymmetrical" because the two directions use different mechanisms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pevl.models.adapters import Adapter
from pevl.models.clip import LayerNorm
from pevl.models.config import PeVLConfig


class CrossAttention(nn.Module):
    """Multi-head attention of queries over a separate key/value sequence.

    Args:
        dim: Token width.
        heads: Number of heads.
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, context: Tensor, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """Attend from ``x`` ``[B, Lq, D]`` over ``context`` ``[B, Lk, D]``.

        Returns:
            The projected output and, with ``need_weights``, the attention *logits* ``[B, h, Lq, Lk]`` (their softmax
            over the last axis is the attention; figures also normalise them over the queries).
        """
        b, lq, d = x.shape
        lk = context.shape[1]
        head_dim = d // self.heads
        q = self.q(x).view(b, lq, self.heads, head_dim).transpose(1, 2)
        k, v = self.kv(context).view(b, lk, 2, self.heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if need_weights:
            logits = (q * head_dim**-0.5) @ k.transpose(-2, -1)
            out = logits.softmax(dim=-1) @ v
        else:
            logits = None
            out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, lq, d)), logits


class V2PRefinement(nn.Module):
    """V2P-R: pose tokens (and a background token) group the image patches and gather what they cover.

    Args:
        dim: Token width D.
        background_token: Add the learnable background group (17 + 1 grouping tokens per pose frame).
        mlp_ratio: Hidden width of the MLP applied to the gathered features.
        hard: Straight-through one-hot assignment (GroupViT's hard assignment) instead of the soft one.
        assign_eps: ``A / (sum over patches of A + eps)`` normaliser of the gathering weights.
    """

    def __init__(
        self,
        dim: int,
        background_token: bool = True,
        mlp_ratio: float = 4.0,
        hard: bool = False,
        assign_eps: float = 1.0,
    ) -> None:
        super().__init__()
        self.hard = hard
        self.assign_eps = assign_eps
        self.background = nn.Parameter(0.02 * torch.randn(dim)) if background_token else None
        self.norm_groups = LayerNorm(dim)
        self.norm_patches = LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.norm_gathered = LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, pose: Tensor, patches: Tensor) -> tuple[Tensor, Tensor]:
        """Refine pose tokens with the patches of their frame.

        Args:
            pose: Pose tokens of a window ``[B', G, D]`` (G = w * J).
            patches: Image patch tokens of the paired frame ``[B', N, D]``.

        Returns:
            Refined pose tokens ``[B', G, D]`` and the assignment ``[B', G (+1), N]``: for every patch, its split
            among the groups (sums to one over groups; the background is the last group).
        """
        groups = pose
        if self.background is not None:
            background = self.background.to(pose.dtype).expand(pose.shape[0], 1, -1)
            groups = torch.cat([pose, background], dim=1)
        patches_n = self.norm_patches(patches)
        q = self.q(self.norm_groups(groups))
        k = self.k(patches_n)
        logits = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
        assign = logits.softmax(dim=1)  # over groups: every patch is split among joints and background
        if self.hard:
            index = assign.argmax(dim=1, keepdim=True)
            one_hot = torch.zeros_like(assign).scatter_(1, index, 1.0)
            assign = one_hot + assign - assign.detach()
        weights = assign / (assign.sum(dim=-1, keepdim=True) + self.assign_eps)
        gathered = weights @ self.v(patches_n)
        refined = pose + self.mlp(self.norm_gathered(gathered[:, : pose.shape[1]]))
        return refined, assign


class P2VRefinement(nn.Module):
    """P2V-R: frame tokens attend to the refined pose tokens of their window through an adapter.

    Args:
        dim: Token width D.
        heads: Cross-attention heads.
        adapter_ratio: Bottleneck ratio of the adapter.
        scale: s in ``X' = X + s * Adapter(CrossAttn(LN(X), LN(P')))``.
    """

    def __init__(self, dim: int, heads: int, adapter_ratio: float = 0.25, scale: float = 0.5) -> None:
        super().__init__()
        self.scale = scale
        self.norm_frames = LayerNorm(dim)
        self.norm_pose = LayerNorm(dim)
        self.attn = CrossAttention(dim, heads)
        self.adapter = Adapter(dim, adapter_ratio, skip=False)

    def forward(self, frames: Tensor, pose: Tensor, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """Refine frame tokens ``[B', 1+N, D]`` with pose tokens ``[B', G, D]``; logits ``[B', h, 1+N, G]``."""
        out, logits = self.attn(self.norm_frames(frames), self.norm_pose(pose), need_weights=need_weights)
        return frames + self.scale * self.adapter(out), logits


@dataclass
class UCMRMaps:
    """Attention maps of one UCMR block (for the figures)."""

    assignment: Tensor | None  # [B, T_v, w*J (+1), N] V2P-R grouping of patches (background last)
    p2v: Tensor | None  # [B, T_v, heads, 1+N, w*J] P2V-R attention of frame tokens over joints (rows sum to one)
    p2v_patches: Tensor | None = None  # [B, T_v, heads, w*J, N] the same logits normalised over the image patches


class UCMRBlock(nn.Module):
    """One UCMR block: temporal alignment, then V2P-R, then P2V-R on the refined pose tokens.

    Args:
        cfg: The model configuration (``p2v`` / ``v2p`` switch the two parts).
    """

    def __init__(self, cfg: PeVLConfig) -> None:
        super().__init__()
        dim = cfg.clip.vision.width
        heads = cfg.ucmr_heads or cfg.clip.vision.heads
        self.v2p = (
            V2PRefinement(dim, cfg.background_token, cfg.v2p_mlp_ratio, cfg.v2p_hard_assignment, cfg.v2p_assign_eps)
            if cfg.v2p
            else None
        )
        self.p2v = P2VRefinement(dim, heads, cfg.adapter_ratio, cfg.p2v_scale) if cfg.p2v else None

    def forward(self, video: Tensor, pose: Tensor, need_weights: bool = False) -> tuple[Tensor, Tensor, UCMRMaps]:
        """Refine both token sets.

        Args:
            video: Frame tokens ``[B, T_v, 1+N, D]`` ([cls] first).
            pose: Joint tokens ``[B, T_p, J, D]``, T_p a multiple of T_v.
            need_weights: Also return the P2V-R attention probabilities.

        Returns:
            Refined video tokens, refined pose tokens and the block's maps.
        """
        b, tv, n1, d = video.shape
        tp, j = pose.shape[1], pose.shape[2]
        if tp % tv:
            raise ValueError(f"{tp} pose frames cannot be split into windows for {tv} video frames")
        frames = video.reshape(b * tv, n1, d)
        windows = pose.reshape(b * tv, (tp // tv) * j, d)  # frame t <-> pose frames [t*w, (t+1)*w)
        assignment = p2v_probs = p2v_patches = None
        if self.v2p is not None:
            windows, assignment = self.v2p(windows, frames[:, 1:])
            assignment = assignment.view(b, tv, *assignment.shape[1:])
        if self.p2v is not None:
            frames, logits = self.p2v(frames, windows, need_weights=need_weights)
            if logits is not None:
                p2v_probs = logits.softmax(dim=-1).view(b, tv, *logits.shape[1:])
                p2v_patches = (
                    logits[:, :, 1:].transpose(-2, -1).softmax(dim=-1).view(b, tv, logits.shape[1], -1, n1 - 1)
                )
        return frames.view(b, tv, n1, d), windows.view(b, tp, j, d), UCMRMaps(assignment, p2v_probs, p2v_patches)
