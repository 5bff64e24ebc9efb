"""The UCMR block: Unsymmetrical Cross-Modality Refinement of video and pose tokens (reconstruction).

Each video frame t is paired with its window of ``w = T_p / T_v`` pose frames ``[t*w, (t+1)*w)`` (temporal
alignment). Within a window:

* **V2P-R** (visual-enriched pose refinement): for *each* pose frame of the window, its 17 joint tokens plus one
  learnable **background token** are GroupViT-style grouping tokens (17 + 1 groups, as Fig. 9 says, whatever
  ``T_p / T_v``). An assignment attention with the softmax taken over those 18 groups splits every image patch of
  the paired RGB frame among the joints and the background; each pose token gathers the patches assigned to it:
  ``P' = P + MLP(LN(A V))``. The argmax of the assignment per patch is Fig. 9.
* **P2V-R** (pose-guided visual refinement): the frame's [cls] and patch tokens attend to the refined pose tokens of
  the window, ``X' = X + s * Adapter(CrossAttn(q = LN(X), kv = LN(P')))``. Its attention over joints is Fig. 8.

A joint with score 0 (not detected) is never a V2P-R group and never a P2V-R key; a window with no detected joint
leaves its frame's tokens unchanged.

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
from pevl.models.clip import LayerNorm, attention_key_mask
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

    def forward(
        self, x: Tensor, context: Tensor, need_weights: bool = False, key_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Attend from ``x`` ``[B, Lq, D]`` over ``context`` ``[B, Lk, D]``.

        ``key_mask`` ``[B, Lk]`` (true = may be attended to) leaves keys out; see
        :func:`pevl.models.clip.attention_key_mask` for rows with no valid key.

        Returns:
            The projected output and, with ``need_weights``, the attention *logits* ``[B, h, Lq, Lk]`` (their softmax
            over the last axis is the attention; figures also normalise them over the queries).
        """
        b, lq, d = x.shape
        lk = context.shape[1]
        head_dim = d // self.heads
        q = self.q(x).view(b, lq, self.heads, head_dim).transpose(1, 2)
        k, v = self.kv(context).view(b, lk, 2, self.heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        mask = None if key_mask is None else attention_key_mask(key_mask)
        if need_weights:
            logits = (q * head_dim**-0.5) @ k.transpose(-2, -1)
            if mask is not None:
                logits = logits.masked_fill(~mask, float("-inf"))
            out = logits.softmax(dim=-1) @ v
        else:
            logits = None
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
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

    def forward(self, pose: Tensor, patches: Tensor, present: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Refine the pose tokens of each pose frame with the patches of its paired RGB frame.

        Args:
            pose: Pose tokens of the windows ``[B', w, J, D]``: ``w`` pose frames paired with each RGB frame.
            patches: Image patch tokens of the paired RGB frames ``[B', N, D]``.
            present: ``[B', w, J]`` true for detected joints (``None``: all); missing joints are no group.

        Returns:
            Refined pose tokens ``[B', w, J, D]`` and the assignment ``[B', w, J (+1), N]``: for every pose frame and
            patch, the patch's split among that frame's groups (sums to one over the groups; the background is the
            last group; a missing joint gets nothing).
        """
        groups = pose
        if self.background is not None:
            background = self.background.to(pose.dtype).expand(*pose.shape[:2], 1, -1)
            groups = torch.cat([pose, background], dim=2)
        patches_n = self.norm_patches(patches)
        q = self.q(self.norm_groups(groups))  # [B', w, G, D]
        k = self.k(patches_n)  # [B', N, D]
        logits = torch.einsum("bwgd,bnd->bwgn", q, k) / math.sqrt(q.shape[-1])
        if present is not None:
            valid = present
            if self.background is not None:
                valid = torch.cat([present, present.new_ones(*present.shape[:2], 1)], dim=2)
            # A pose frame with no group at all (nobody, no background token) gets all-zero assignments below.
            empty = ~valid.any(dim=2, keepdim=True)
            logits = logits.masked_fill(~(valid | empty).unsqueeze(-1), float("-inf"))
        assign = logits.softmax(dim=2)  # over the frame's groups: every patch is split among joints and background
        if self.hard:
            index = assign.argmax(dim=2, keepdim=True)
            one_hot = torch.zeros_like(assign).scatter_(2, index, 1.0)
            assign = one_hot + assign - assign.detach()
        if present is not None:  # a frame with no group at all assigns nothing (not everything to joint 0)
            assign = assign * (~empty).unsqueeze(-1).to(assign.dtype)
        weights = assign / (assign.sum(dim=-1, keepdim=True) + self.assign_eps)
        gathered = torch.einsum("bwgn,bnd->bwgd", weights, self.v(patches_n))
        refined = pose + self.mlp(self.norm_gathered(gathered[:, :, : pose.shape[2]]))
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

    def forward(
        self, frames: Tensor, pose: Tensor, need_weights: bool = False, present: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Refine frame tokens ``[B', 1+N, D]`` with pose tokens ``[B', G, D]``; logits ``[B', h, 1+N, G]``.

        ``present`` ``[B', G]`` marks the detected joints (``None``: all); the others are no keys, and a frame whose
        window has none is left unchanged.
        """
        out, logits = self.attn(self.norm_frames(frames), self.norm_pose(pose), need_weights, key_mask=present)
        update = self.scale * self.adapter(out)
        if present is not None:
            update = update * present.any(dim=-1).to(update.dtype)[:, None, None]
        return frames + update, logits


@dataclass
class UCMRMaps:
    """Attention maps of one UCMR block (for the figures)."""

    assignment: Tensor | None  # [B, T_v, w, J (+1), N] V2P-R grouping of patches per pose frame (background last)
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

    def forward(
        self,
        video: Tensor,
        pose: Tensor,
        need_weights: bool = False,
        present: Tensor | None = None,
        refine_patches: bool = True,
    ) -> tuple[Tensor, Tensor, UCMRMaps]:
        """Refine both token sets.

        Args:
            video: Frame tokens ``[B, T_v, 1+N, D]`` ([cls] first).
            pose: Joint tokens ``[B, T_p, J, D]``, T_p a multiple of T_v.
            need_weights: Also return the P2V-R attention probabilities (of every token: implies
                ``refine_patches``).
            present: ``[B, T_p, J]`` true for detected joints (``None``: all were).
            refine_patches: Let P2V-R refine the patch tokens too. ``False`` refines the [cls] tokens only and returns
                the patch tokens as they came in: for the last block, whose patch tokens nothing reads (the clip
                feature is the [cls] token's), it skips most of P2V-R's compute; the [cls] tokens are the same.

        Returns:
            Refined video tokens, refined pose tokens and the block's maps.
        """
        b, tv, n1, d = video.shape
        tp, j = pose.shape[1], pose.shape[2]
        if tp % tv:
            raise ValueError(f"{tp} pose frames cannot be split into windows for {tv} video frames")
        w = tp // tv
        frames = video.reshape(b * tv, n1, d)
        windows = pose.reshape(b * tv, w, j, d)  # frame t <-> pose frames [t*w, (t+1)*w)
        window_present = None if present is None else present.reshape(b * tv, w, j)
        assignment = p2v_probs = p2v_patches = None
        if self.v2p is not None:
            windows, assignment = self.v2p(windows, frames[:, 1:], window_present)
            assignment = assignment.view(b, tv, *assignment.shape[1:])
        if self.p2v is not None:
            keys = None if window_present is None else window_present.reshape(b * tv, w * j)
            context = windows.reshape(b * tv, w * j, d)
            if refine_patches or need_weights:
                frames, logits = self.p2v(frames, context, need_weights, keys)
            else:  # P2V-R is per query token: the [cls] tokens alone give the [cls] outputs of the full refinement
                cls, logits = self.p2v(frames[:, :1], context, False, keys)
                frames = torch.cat([cls, frames[:, 1:]], dim=1)
            if logits is not None:
                probs = logits.softmax(dim=-1)
                patches = torch.nan_to_num(logits[:, :, 1:].transpose(-2, -1).softmax(dim=-1), nan=0.0)
                if keys is not None:  # missing joints get no attention, also in windows where nobody was found
                    probs = probs * keys[:, None, None, :].to(probs.dtype)
                    patches = patches * keys[:, None, :, None].to(patches.dtype)
                p2v_probs = probs.view(b, tv, *logits.shape[1:])
                p2v_patches = patches.view(b, tv, logits.shape[1], -1, n1 - 1)
        return frames.view(b, tv, n1, d), windows.reshape(b, tp, j, d), UCMRMaps(assignment, p2v_probs, p2v_patches)
