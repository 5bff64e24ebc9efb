"""The SGMC module: Semantic-Guided Multi-level Contrastive learning (reconstruction).

Features: per-frame features of the video stream ``[B, T_v, E]``, of the pose stream ``[B, T_p, E]`` and of their
fusion ``[B, T_p, E]`` (each video frame repeated over its pose window, concatenated with the pose frame, projected);
a clip feature is the mean over the frames (z_v, z_p, z_vp). Texts: the class sentence embeddings z_t and the token
features of each label's words.

* **action level**: each stream's clip feature against all class texts (learnable logit scale, at most 100);
* **sub-action level** ("semantic concept attention", Fig. 11): every label word attends over the frames of a stream;
  each word is compared with the frames it attends to and the class similarity is the mean over its words;
* the losses of both levels, the text -> vision direction and the **semantic-guided loss** are in
  :mod:`pevl.models.losses`.

**Missing people**: a pose frame with nobody detected has no feature; it is left out of the pose clip mean and is no
key of the word -> frame attention, and in the fused stream its pose half is the clip's pose feature over the detected
frames (z_p). The fused clip feature is then exactly ``fusion([z_v; z_p])``: it depends on which frames are missing
only as much as z_p does, instead of its pose half shrinking with the share of empty frames. A clip with nobody in it
has a zero pose feature: its pose similarities are 0 for every class, so the pose stream's scores are uniform, finite,
and the fused stream falls back on the video.

**Precision**: similarities, scores and losses are computed in float32 with autocast off, whatever the caller's
autocast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pevl.models.config import MAX_LOGIT_SCALE, PeVLConfig
from pevl.models.losses import SGMCLoss, full_precision
from pevl.models.text_encoder import TextFeatures


def _identity_linear(dim: int) -> nn.Linear:
    layer = nn.Linear(dim, dim)
    nn.init.eye_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def masked_mean(frames: Tensor, mask: Tensor | None) -> Tensor:
    """Mean over the valid frames ``[B, T, E] -> [B, E]`` (zero when no frame is valid)."""
    if mask is None:
        return frames.mean(dim=1)
    weight = mask.to(frames.dtype).unsqueeze(-1)
    return (frames * weight).sum(dim=1) / weight.sum(dim=1).clamp_min(1.0)


def clamp_logit_scales(model: nn.Module) -> None:
    """Clamp the logit scale of every SGMC module of ``model`` to at most 100, as CLIP does after each step.

    The training loop calls it after every optimiser step and after loading a checkpoint to resume from. Every
    process of a distributed run applies it to identical parameters, so they stay identical.
    """
    for module in model.modules():
        if isinstance(module, SGMC):
            module.clamp_logit_scale_()


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

    def forward(
        self, frames: Tensor, words: Tensor, word_mask: Tensor, frame_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Similarity of every clip with every class at the level of the label's words.

        Args:
            frames: Frame features ``[B, T, E]``.
            words: Token features of the class prompts ``[C, L, E]``.
            word_mask: ``[C, L]``, true for the label-word tokens.
            frame_mask: ``[B, T]``, true for frames that have a feature (``None``: all).

        Returns:
            Cosine similarities ``[B, C]`` (mean over each label's words) and the word -> frame attention
            ``[B, C, L, T]`` (rows sum to one over the valid frames; all zero for a clip without any).
        """
        f = F.normalize(frames.float(), dim=-1)
        w = F.normalize(words.float(), dim=-1)
        logits = torch.einsum("cld,btd->bclt", self.query(w), self.key(f)) / self.log_temperature.exp()
        if frame_mask is not None:
            logits = logits.masked_fill(~frame_mask[:, None, None, :], float("-inf"))
            logits = logits.masked_fill(~frame_mask.any(dim=-1)[:, None, None, None], 0.0)
        attn = logits.softmax(dim=-1)
        if frame_mask is not None:  # a clip with no valid frame attends to nothing
            attn = attn * frame_mask.any(dim=-1)[:, None, None, None].to(attn.dtype)
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
    clip_features: dict[str, Tensor] = field(default_factory=dict)  # stream -> [B, E] normalised clip features


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
        self.criterion = SGMCLoss(cfg)

    @property
    def scale(self) -> Tensor:
        """The logit scale ``exp(logit_scale)`` (float32), used at most at 100.

        As in CLIP, the *parameter* is what is clamped, after each optimiser step (:func:`clamp_logit_scales`), so
        that its gradient keeps flowing at the cap and it can come back down. The value used here is capped as well
        (weights saved before the clamp moved to the parameter may lie above), but with the gradient of the uncapped
        value: a cap in the forward alone has a zero gradient above it, and the scale would stay stuck there.
        """
        scale = self.logit_scale.float().exp()
        return scale + (scale.clamp(max=MAX_LOGIT_SCALE) - scale).detach()

    @torch.no_grad()
    def clamp_logit_scale_(self) -> None:
        """Clamp the logit scale parameter in place to at most ln 100 (call after every optimiser step)."""
        self.logit_scale.clamp_(max=math.log(MAX_LOGIT_SCALE))

    # ---- features -----------------------------------------------------------------------------------------------
    def stream_frames(
        self, video: Tensor | None, pose: Tensor | None, pose_mask: Tensor | None = None
    ) -> tuple[dict[str, Tensor], dict[str, Tensor | None]]:
        """Per-frame features of each stream, the fused one included, and which frames are valid.

        Args:
            video: ``[B, T_v, E]`` or ``None``.
            pose: ``[B, T_p, E]`` or ``None`` (not read where ``pose_mask`` is false).
            pose_mask: ``[B, T_p]`` true for pose frames with a detected joint (``None``: all).

        Returns:
            ``{"video": ..., "pose": ..., "fused": [B, T_p, E]}`` for the streams present, and their frame masks
            (``None`` = every frame valid; only the pose stream has missing frames).
        """
        frames: dict[str, Tensor] = {}
        masks: dict[str, Tensor | None] = {}
        if video is not None:
            frames["video"], masks["video"] = video, None
        if pose is not None:
            frames["pose"], masks["pose"] = pose, pose_mask
        if video is not None and pose is not None and self.fusion is not None:
            repeat = pose.shape[1] // video.shape[1]
            aligned = video.repeat_interleave(repeat, dim=1)  # video frame t covers pose frames [t*w, (t+1)*w)
            pose_part = pose.to(aligned.dtype)
            if pose_mask is not None:
                # A frame with nobody carries the clip's pose feature over its detected frames (z_p; zero when
                # nobody was found at all), so that z_vp = fusion(z_v, z_p) whatever share of frames is empty.
                clip_pose = masked_mean(pose_part, pose_mask).unsqueeze(1)
                pose_part = torch.where(pose_mask.unsqueeze(-1), pose_part, clip_pose)
            frames["fused"], masks["fused"] = self.fusion(torch.cat([aligned, pose_part], dim=-1)), None
        return frames, masks

    def similarities(
        self,
        frames: dict[str, Tensor],
        text: TextFeatures,
        masks: dict[str, Tensor | None] | None = None,
        sub_action: bool = True,
    ) -> Similarities:
        """Action-level and (optionally) sub-action-level cosine similarities of every stream with every class."""
        masks = masks or {}
        sims = Similarities()
        with full_precision(text.sentence.device):
            classes = F.normalize(text.sentence.float(), dim=-1)
            for stream, feats in frames.items():
                mask = masks.get(stream)
                clip = F.normalize(masked_mean(feats.float(), mask), dim=-1)
                sims.clip_features[stream] = clip
                sims.action[stream] = clip @ classes.t()
                if sub_action and self.concept_attention is not None and stream in self.cfg.sub_action_streams:
                    sim, attn = self.concept_attention(feats.float(), text.words.float(), text.word_mask, mask)
                    sims.sub_action[stream] = sim
                    sims.word_attention[stream] = attn
        return sims

    def stream_probabilities(self, sims: Similarities, stream: str) -> Tensor:
        """The mean of the softmaxed similarities of ``stream`` over the scoring levels ``[B, C]`` (float32)."""
        scale = self.scale
        probs = [sims.action[stream].mul(scale).softmax(dim=-1)] if "action" in self.cfg.score_levels else []
        if "sub_action" in self.cfg.score_levels and stream in sims.sub_action:
            probs.append(sims.sub_action[stream].mul(scale).softmax(dim=-1))
        if not probs:  # e.g. only "sub_action" asked for but not available in this model
            probs = [sims.action[stream].mul(scale).softmax(dim=-1)]
        return torch.stack(probs).mean(dim=0)

    def scores(self, sims: Similarities, stream: str) -> Tensor:
        """Class scores (float32 log-probabilities): of ``stream``, or of every stream averaged (``score_ensemble``)."""
        with full_precision(sims.action[stream].device):
            streams = list(sims.action) if self.cfg.score_ensemble else [stream]
            probs = torch.stack([self.stream_probabilities(sims, s) for s in streams]).mean(dim=0)
            return probs.clamp_min(1e-12).log()

    # ---- losses -------------------------------------------------------------------------------------------------
    def losses(self, sims: Similarities, text: TextFeatures, labels: Tensor) -> dict[str, Tensor]:
        """Every loss term by name, unweighted (:meth:`total_loss` combines them); see :mod:`pevl.models.losses`."""
        classes = F.normalize(text.sentence.float(), dim=-1)
        return self.criterion(sims.clip_features, sims.action, sims.sub_action, classes, labels, self.scale)

    def total_loss(self, losses: dict[str, Tensor]) -> Tensor:
        """The training objective: the weighted mean of the terms."""
        return self.criterion.total(losses)
