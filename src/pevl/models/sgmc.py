"""The SGMC module: Semantic-Guided Multi-level Contrastive learning (reconstruction).

Features: per-frame features of the video stream ``[B, T_v, E]``, of the pose stream ``[B, T_p, E]`` and of their
fusion ``[B, T_p, E]`` (each video frame repeated over its pose window, concatenated with the pose frame, projected);
a clip feature is the mean over frames (z_v, z_p, z_vp). Texts: the class sentence embeddings z_t and the token
features of each label's words.

* **action level**: cross-entropy of each stream's clip feature against all class texts (learnable logit scale),
  plus the in-batch text -> vision direction with same-label targets (ActionCLIP style).
* **sub-action level** ("semantic concept attention", Fig. 11): every label word attends over the frames of a stream;
  each word is compared with the frames it attends to and the class similarity is the mean over its words.
* **semantic content guided loss** (Fig. 3): an InfoNCE between fused features and label texts in which each
  negative j of sample i is weighted by a strength coefficient ``s_ij = B * d_ij / sum_j d_ij`` with
  ``d_ij = 1 - cos(t_i, t_j)``: negatives whose label text is close to the ground truth are pushed less, and
  same-label samples (``d = 0``) are not negatives at all.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pevl.models.config import PeVLConfig
from pevl.models.text_encoder import TextFeatures

Gather = Callable[[Tensor], Tensor]
"""Gathers a per-process batch ``[B, ...]`` into the global batch ``[world * B, ...]`` (autograd-aware)."""


def _identity_linear(dim: int) -> nn.Linear:
    layer = nn.Linear(dim, dim)
    nn.init.eye_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class SemanticConceptAttention(nn.Module):
    """Sub-action level similarity: label words attend over frames, and are compared with what they attend to.

    Args:
        dim: Feature width E.
        temperature: Initial temperature of the word -> frame attention (learnable).
    """

    def __init__(self, dim: int, temperature: float = 0.1) -> None:
        super().__init__()
        self.query = _identity_linear(dim)
        self.key = _identity_linear(dim)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(temperature)))

    def forward(self, frames: Tensor, words: Tensor, word_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Similarity of every clip with every class at the level of the label's words.

        Args:
            frames: Frame features ``[B, T, E]``.
            words: Token features of the class prompts ``[C, L, E]``.
            word_mask: ``[C, L]``, true for the label-word tokens.

        Returns:
            Cosine similarities ``[B, C]`` (mean over each label's words) and the word -> frame attention
            ``[B, C, L, T]`` (rows sum to one over frames).
        """
        f = F.normalize(frames.float(), dim=-1)
        w = F.normalize(words.float(), dim=-1)
        logits = torch.einsum("cld,btd->bclt", self.query(w), self.key(f)) / self.log_temperature.exp()
        attn = logits.softmax(dim=-1)
        cosine = torch.einsum("cld,btd->bclt", w, f)
        gram = f @ f.transpose(1, 2)  # [B, T, T]
        pooled_dot = (attn * cosine).sum(-1)  # w . (sum_t a_t f_t)
        pooled_norm2 = ((attn @ gram.unsqueeze(1)) * attn).sum(-1)  # |sum_t a_t f_t|^2
        word_sim = pooled_dot / pooled_norm2.clamp_min(1e-12).sqrt()
        mask = word_mask.to(word_sim.dtype)
        sim = (word_sim * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)
        return sim, attn


@dataclass
class Similarities:
    """Cosine similarities of clips and class texts, per level and stream."""

    action: dict[str, Tensor] = field(default_factory=dict)  # stream -> [B, C]
    sub_action: dict[str, Tensor] = field(default_factory=dict)  # stream -> [B, C]
    word_attention: dict[str, Tensor] = field(default_factory=dict)  # stream -> [B, C, L, T]


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy against a target distribution per row (rows of ``targets`` sum to one)."""
    return -(targets * logits.log_softmax(dim=-1)).sum(dim=-1).mean()


def strength_coefficients(text: Tensor, text_all: Tensor) -> Tensor:
    """Strength coefficients of the semantic content guided loss (Fig. 3).

    Args:
        text: Normalised ground-truth label texts of the local samples ``[B, E]``.
        text_all: Normalised label texts of the whole (gathered) batch ``[M, E]``.

    Returns:
        ``s [B, M]`` with ``s_ij = M * d_ij / sum_j d_ij`` and ``d_ij = 1 - cos(t_i, t_j)``; zero for same-label pairs.
    """
    discrepancy = (1.0 - text @ text_all.t()).clamp_min(0.0)
    return text_all.shape[0] * discrepancy / discrepancy.sum(dim=-1, keepdim=True).clamp_min(1e-6)


def weighted_info_nce(logits: Tensor, positive: Tensor, weights: Tensor) -> Tensor:
    """InfoNCE whose negatives' exponentials are scaled by ``weights``.

    Args:
        logits: ``[B, M]`` scaled similarities.
        positive: ``[B]`` column of each row's positive.
        weights: ``[B, M]`` strength of each negative (the positive's weight is forced to one).

    Returns:
        The mean over rows of ``-a_ii + log(exp(a_ii) + sum_j s_ij exp(a_ij))``.
    """
    rows = torch.arange(logits.shape[0], device=logits.device)
    weights = weights.clone()
    weights[rows, positive] = 1.0
    log_weights = torch.where(weights > 0, weights.clamp_min(1e-12).log(), torch.full_like(weights, -torch.inf))
    return (torch.logsumexp(logits + log_weights, dim=-1) - logits[rows, positive]).mean()


class SGMC(nn.Module):
    """Fusion of the streams, multi-level similarities, class scores and the training losses.

    Args:
        cfg: The model configuration.
    """

    def __init__(self, cfg: PeVLConfig) -> None:
        super().__init__()
        self.cfg = cfg
        dim = cfg.clip.embed_dim
        self.logit_scale = nn.Parameter(torch.tensor(math.log(cfg.logit_scale_init)))
        self.fusion = None
        if "fused" in cfg.streams:
            # Starts as the average of the two streams: z_vp = (z_v + z_p) / 2.
            self.fusion = nn.Linear(2 * dim, dim)
            with torch.no_grad():
                self.fusion.weight.copy_(torch.cat([torch.eye(dim), torch.eye(dim)], dim=1) / 2)
                self.fusion.bias.zero_()
        self.concept_attention = (
            SemanticConceptAttention(dim, cfg.sub_action_temperature) if cfg.uses_sub_action else None
        )

    # ---- features -----------------------------------------------------------------------------------------------
    def stream_frames(self, video: Tensor | None, pose: Tensor | None) -> dict[str, Tensor]:
        """Per-frame features of each stream, the fused one included.

        Args:
            video: ``[B, T_v, E]`` or ``None``.
            pose: ``[B, T_p, E]`` or ``None``.

        Returns:
            ``{"video": ..., "pose": ..., "fused": [B, T_p, E]}`` for the streams present.
        """
        frames: dict[str, Tensor] = {}
        if video is not None:
            frames["video"] = video
        if pose is not None:
            frames["pose"] = pose
        if video is not None and pose is not None and self.fusion is not None:
            repeat = pose.shape[1] // video.shape[1]
            aligned = video.repeat_interleave(repeat, dim=1)  # video frame t covers pose frames [t*w, (t+1)*w)
            frames["fused"] = self.fusion(torch.cat([aligned, pose.to(aligned.dtype)], dim=-1))
        return frames

    def similarities(self, frames: dict[str, Tensor], text: TextFeatures, sub_action: bool = True) -> Similarities:
        """Action-level and (optionally) sub-action-level cosine similarities of every stream with every class."""
        sims = Similarities()
        classes = F.normalize(text.sentence.float(), dim=-1)
        for stream, feats in frames.items():
            clip = F.normalize(feats.float().mean(dim=1), dim=-1)
            sims.action[stream] = clip @ classes.t()
            if sub_action and self.concept_attention is not None and stream in self.cfg.sub_action_streams:
                sim, attn = self.concept_attention(feats, text.words, text.word_mask)
                sims.sub_action[stream] = sim
                sims.word_attention[stream] = attn
        return sims

    def scores(self, sims: Similarities, stream: str) -> Tensor:
        """Class scores: the log of the mean of the softmaxed similarities of ``stream`` over the scoring levels."""
        scale = self.logit_scale.exp()
        probs = [sims.action[stream].mul(scale).softmax(dim=-1)] if "action" in self.cfg.score_levels else []
        if "sub_action" in self.cfg.score_levels and stream in sims.sub_action:
            probs.append(sims.sub_action[stream].mul(scale).softmax(dim=-1))
        if not probs:  # e.g. only "sub_action" asked for but not available in this model
            probs = [sims.action[stream].mul(scale).softmax(dim=-1)]
        return torch.stack(probs).mean(dim=0).clamp_min(1e-12).log()

    # ---- losses -------------------------------------------------------------------------------------------------
    def losses(
        self,
        frames: dict[str, Tensor],
        sims: Similarities,
        text: TextFeatures,
        labels: Tensor,
        gather: Gather | None = None,
        rank: int = 0,
    ) -> dict[str, Tensor]:
        """All loss terms, by name (weights already applied).

        Args:
            frames: Per-frame features by stream (from :meth:`stream_frames`).
            sims: Similarities from :meth:`similarities`.
            text: Class text features.
            labels: Ground-truth class of each local sample ``[B]``.
            gather: Collects a per-process batch into the global batch for the in-batch terms; ``None`` on one
                process. Its backward must sum gradients across processes (``torch.distributed.nn.all_gather``).
            rank: This process's index, to find its samples in the gathered batch.

        Returns:
            ``{"loss_action_video": ..., "loss_t2v_fused": ..., "loss_sub_pose": ..., "loss_content": ...}``,
            unweighted; :meth:`total_loss` combines them.
        """
        cfg = self.cfg
        scale = self.logit_scale.exp()
        losses: dict[str, Tensor] = {}
        for stream, sim in sims.action.items():
            if stream in cfg.action_streams or not cfg.sgmc:
                losses[f"loss_action_{stream}"] = F.cross_entropy(scale * sim, labels)
        if not cfg.sgmc:
            return losses
        for stream, sim in sims.sub_action.items():
            losses[f"loss_sub_{stream}"] = F.cross_entropy(scale * sim, labels)
        if not (cfg.text_to_vision or cfg.content_loss):
            return losses

        gather = gather or (lambda x: x)
        labels_all = gather(labels)
        offset = rank * labels.shape[0]
        classes = F.normalize(text.sentence.float(), dim=-1)
        text_local, text_all = classes[labels], classes[labels_all]
        if cfg.text_to_vision:
            same = (labels[:, None] == labels_all[None, :]).float()
            targets = same / same.sum(dim=-1, keepdim=True)
            for stream in sims.action:
                if stream not in cfg.action_streams:
                    continue
                vision_all = F.normalize(gather(frames[stream].float().mean(dim=1)), dim=-1)
                losses[f"loss_t2v_{stream}"] = soft_cross_entropy(scale * text_local @ vision_all.t(), targets)
        content_stream = "fused" if "fused" in frames else next(iter(frames))
        if cfg.content_loss:
            vision = F.normalize(frames[content_stream].float().mean(dim=1), dim=-1)
            vision_all = gather(vision)
            strength = strength_coefficients(text_local.detach(), text_all.detach())
            positive = torch.arange(labels.shape[0], device=labels.device) + offset
            vision_to_text = weighted_info_nce(scale * vision @ text_all.t(), positive, strength)
            text_to_vision = weighted_info_nce(scale * text_local @ vision_all.t(), positive, strength)
            losses["loss_content"] = (vision_to_text + text_to_vision) / 2
        return losses

    def loss_weight(self, name: str) -> float:
        """The configured weight of a loss term: ``loss_action_*``, ``loss_t2v_*``, ``loss_sub_*``, ``loss_content``."""
        cfg = self.cfg
        kind = name.split("_")[1]
        weights = {
            "action": cfg.action_loss_weight,
            "t2v": cfg.text_to_vision_loss_weight,
            "sub": cfg.sub_action_loss_weight,
            "content": cfg.content_loss_weight,
        }
        return weights[kind]

    def total_loss(self, losses: dict[str, Tensor]) -> Tensor:
        """The training objective: the weighted *mean* of the terms.

        A mean rather than a sum keeps the loss scale (about log(num_classes) at initialisation) independent of how
        many streams and levels an ablation has, so one learning rate suits them all.
        """
        weights = {name: self.loss_weight(name) for name in losses}
        total = sum(weights[name] * value for name, value in losses.items())
        return total / max(sum(weights.values()), 1e-12)
