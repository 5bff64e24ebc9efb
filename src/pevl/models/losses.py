"""SGMC's training losses: one function per term, an explicit weight table, and the cross-process gather.

The terms (reconstruction; DESIGN.md section 6):

* **action**: cross-entropy of a stream's clip feature against all class texts (:func:`action_loss`);
* **sub-action**: the same on the word-level similarity of the semantic concept attention (:func:`action_loss` too);
* **text-to-vision**: the in-batch text -> vision direction with same-label targets (:func:`text_to_vision_loss`);
* **semantic-guided**: an InfoNCE between fused features and label texts in which each true negative is weighted
  by a strength coefficient from the discrepancy of the label texts (Fig. 3, :func:`semantic_guided_loss`).

Everything here runs in float32 whatever the autocast: with ~100 close fine-grained classes, half-precision
similarities leave a few dozen distinct values per row. Like open_clip's ``ClipLoss``, :class:`SGMCLoss` gathers the
in-batch features of every process itself (:func:`all_gather_with_grad`), so the model stores no rank or gather.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from pevl.models.config import PeVLConfig

LOSS_KINDS = ("action", "sub", "t2v", "semantic_guided")
"""Loss names are ``loss_<kind>[_<stream>]``: ``loss_action_video``, ``loss_sub_fused``, ``loss_t2v_pose``,
``loss_semantic_guided``."""


def full_precision(device: torch.device) -> contextlib.AbstractContextManager[None]:
    """A region where autocast is off (float32 math) on ``device``; a no-op where autocast does not apply (meta)."""
    if device.type in ("cpu", "cuda", "xpu", "mps"):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def loss_weights(cfg: PeVLConfig) -> dict[str, float]:
    """The weight of each kind of term (:data:`LOSS_KINDS`) in the training objective."""
    return {
        "action": cfg.action_loss_weight,
        "sub": cfg.sub_action_loss_weight,
        "t2v": cfg.text_to_vision_loss_weight,
        "semantic_guided": cfg.semantic_guided_loss_weight,
    }


def loss_kind(name: str) -> str:
    """The kind of a loss term from its name (``loss_sub_pose`` -> ``sub``)."""
    body = name.removeprefix("loss_")
    return next(kind for kind in LOSS_KINDS if body == kind or body.startswith(kind + "_"))


# ---- gathering across processes -------------------------------------------------------------------------------------


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _gather_padded(x: Tensor) -> tuple[list[Tensor], list[int]]:
    world = _world()[1]
    local_n = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
    sizes = [torch.zeros_like(local_n) for _ in range(world)]
    dist.all_gather(sizes, local_n)
    counts = [int(s.item()) for s in sizes]
    longest = max(counts)
    padded = x.detach()
    if x.shape[0] < longest:
        padded = torch.cat([padded, padded.new_zeros((longest - x.shape[0], *x.shape[1:]))])
    chunks = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(chunks, padded.contiguous())
    return [chunk[:n] for chunk, n in zip(chunks, counts, strict=True)], counts


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward sums every rank's gradient of the gathered tensor and keeps the local rows."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        pieces, counts = _gather_padded(x)
        ctx.start = sum(counts[: _world()[0]])
        ctx.length = x.shape[0]
        return torch.cat(pieces, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.start : ctx.start + ctx.length]


def local_offset(count: int, device: torch.device) -> int:
    """Where this process's ``count`` samples start in the gathered batch (0 on one process)."""
    rank, world = _world()
    if world == 1:
        return 0
    counts = _gather_padded(torch.zeros(count, device=device))[1]
    return sum(counts[:rank])


def all_gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` from all ranks along dim 0, in rank order, differentiably.

    The backward pass sums, over all ranks, the gradient each rank computed for the gathered tensor, and hands every
    rank the rows it contributed. When every rank computes its loss over its own rows against the gathered batch and
    DistributedDataParallel averages the parameter gradients, training is exactly the single-process training on the
    global batch (open_clip's ``gather_with_grad`` with local losses). Chunks may differ in length along dim 0.

    Args:
        x: Local features ``[n_local, ...]``.

    Returns:
        ``[n_total, ...]``; ``x`` itself when there is a single process.
    """
    if _world()[1] == 1:
        return x
    if not x.requires_grad:
        return torch.cat(_gather_padded(x)[0], dim=0)
    return _GatherWithGrad.apply(x)


# ---- the terms ------------------------------------------------------------------------------------------------------


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy against a target distribution per row (rows of ``targets`` sum to one)."""
    return -(targets * logits.log_softmax(dim=-1)).sum(dim=-1).mean()


def action_loss(similarity: Tensor, labels: Tensor, scale: Tensor) -> Tensor:
    """Cross-entropy of scaled clip-class similarities ``[B, C]`` against the labels (action or sub-action level)."""
    return F.cross_entropy(scale * similarity.float(), labels)


def text_to_vision_loss(
    text_local: Tensor, vision_all: Tensor, labels: Tensor, labels_all: Tensor, scale: Tensor
) -> Tensor:
    """In-batch text -> vision contrast: each sample's label text against the whole batch's clips.

    Args:
        text_local: Normalised label texts of the local samples ``[B, E]``.
        vision_all: Normalised clip features of the whole (gathered) batch ``[M, E]``.
        labels: Local labels ``[B]``.
        labels_all: Labels of the whole batch ``[M]``.
        scale: The logit scale.

    Returns:
        The soft cross-entropy whose target spreads evenly over the clips of the same label (ActionCLIP style).
    """
    same = (labels[:, None] == labels_all[None, :]).float()
    targets = same / same.sum(dim=-1, keepdim=True)
    return soft_cross_entropy(scale * text_local @ vision_all.t(), targets)


def strength_coefficients(text: Tensor, text_all: Tensor, labels: Tensor, labels_all: Tensor) -> Tensor:
    """Strength coefficients of the semantic-guided loss (Fig. 3).

    A sample's true negatives are the batch samples of another label. Each gets ``s_j = N_neg * d_j / sum_neg(d)``
    with ``d_j = 1 - cos(t_g, t_j)`` the discrepancy of the label texts, so the coefficients of a row average one over
    its negatives: with equidistant labels the loss is plain InfoNCE, a negative whose label reads closer to the ground
    truth is pushed less. Same-label samples are no negatives (coefficient 0).

    Args:
        text: Normalised ground-truth label texts of the local samples ``[B, E]``.
        text_all: Normalised label texts of the whole (gathered) batch ``[M, E]``.
        labels: Local labels ``[B]``.
        labels_all: Labels of the whole batch ``[M]``.

    Returns:
        ``s`` ``[B, M]``.
    """
    negative = (labels[:, None] != labels_all[None, :]).to(text.dtype)
    discrepancy = (1.0 - text @ text_all.t()).clamp_min(0.0) * negative
    count = negative.sum(dim=-1, keepdim=True)
    total = discrepancy.sum(dim=-1, keepdim=True)
    # Negatives whose label texts all equal the ground truth's (d = 0) keep weight one: nothing tells them apart.
    even = negative * (total <= 1e-6).to(text.dtype)
    return torch.where(total > 1e-6, count * discrepancy / total.clamp_min(1e-6), even)


def weighted_info_nce(logits: Tensor, positive: Tensor, weights: Tensor) -> Tensor:
    """InfoNCE whose negatives' exponentials are scaled by ``weights``.

    Args:
        logits: ``[B, M]`` scaled similarities.
        positive: ``[B]`` column of each row's positive.
        weights: ``[B, M]`` strength of each negative (the positive's weight is forced to one; 0 drops a column).

    Returns:
        The mean over rows of ``-a_ii + log(exp(a_ii) + sum_j s_ij exp(a_ij))``.
    """
    rows = torch.arange(logits.shape[0], device=logits.device)
    weights = weights.clone()
    weights[rows, positive] = 1.0
    log_weights = torch.where(weights > 0, weights.clamp_min(1e-12).log(), torch.full_like(weights, -torch.inf))
    return (torch.logsumexp(logits + log_weights, dim=-1) - logits[rows, positive]).mean()


def semantic_guided_loss(
    vision: Tensor,
    vision_all: Tensor,
    text_local: Tensor,
    text_all: Tensor,
    labels: Tensor,
    labels_all: Tensor,
    offset: int,
    scale: Tensor,
) -> Tensor:
    """The semantic-guided loss: both directions of a strength-weighted InfoNCE between clips and label texts.

    Args:
        vision: Normalised local clip features ``[B, E]`` (the fused stream when there is one).
        vision_all: The same for the whole (gathered) batch ``[M, E]``.
        text_local: Normalised label texts of the local samples ``[B, E]``.
        text_all: Normalised label texts of the whole batch ``[M, E]``.
        labels: Local labels ``[B]``.
        labels_all: Labels of the whole batch ``[M]``.
        offset: Position of the local samples in the whole batch.
        scale: The logit scale.

    Returns:
        The mean of the vision -> text and text -> vision terms.
    """
    strength = strength_coefficients(text_local.detach(), text_all.detach(), labels, labels_all)
    positive = torch.arange(labels.shape[0], device=labels.device) + offset
    vision_to_text = weighted_info_nce(scale * vision @ text_all.t(), positive, strength)
    text_to_vision = weighted_info_nce(scale * text_local @ vision_all.t(), positive, strength)
    return (vision_to_text + text_to_vision) / 2


# ---- all of them ----------------------------------------------------------------------------------------------------


class SGMCLoss:
    """Every loss term a configuration asks for, and the training objective.

    Args:
        cfg: The model configuration (which terms, their weights, which streams).
    """

    def __init__(self, cfg: PeVLConfig) -> None:
        self.cfg = cfg
        self.weights = loss_weights(cfg)

    def __call__(
        self,
        clip_features: dict[str, Tensor],
        action: dict[str, Tensor],
        sub_action: dict[str, Tensor],
        class_text: Tensor,
        labels: Tensor,
        scale: Tensor,
    ) -> dict[str, Tensor]:
        """All loss terms by name, unweighted (:meth:`total` combines them).

        Args:
            clip_features: Normalised clip feature of each stream ``[B, E]``.
            action: Action-level similarities by stream ``[B, C]``.
            sub_action: Sub-action-level similarities by stream ``[B, C]``.
            class_text: Normalised class text features ``[C, E]``.
            labels: Ground-truth class of each local sample ``[B]``.
            scale: The (clamped) logit scale.
        """
        cfg = self.cfg
        with full_precision(labels.device):
            scale = scale.float()
            losses: dict[str, Tensor] = {}
            for stream, sim in action.items():
                if stream in cfg.action_streams or not cfg.sgmc:
                    losses[f"loss_action_{stream}"] = action_loss(sim, labels, scale)
            if not cfg.sgmc:
                return losses
            for stream, sim in sub_action.items():
                losses[f"loss_sub_{stream}"] = action_loss(sim, labels, scale)
            if not (cfg.text_to_vision or cfg.semantic_guided_loss):
                return losses
            labels_all = all_gather_with_grad(labels)
            text_local, text_all = class_text[labels].float(), class_text[labels_all].float()
            if cfg.text_to_vision:
                for stream, feats in clip_features.items():
                    if stream in cfg.action_streams:
                        vision_all = all_gather_with_grad(feats.float())
                        losses[f"loss_t2v_{stream}"] = text_to_vision_loss(
                            text_local, vision_all, labels, labels_all, scale
                        )
            if cfg.semantic_guided_loss:
                stream = "fused" if "fused" in clip_features else next(iter(clip_features))
                vision = clip_features[stream].float()
                losses["loss_semantic_guided"] = semantic_guided_loss(
                    vision, all_gather_with_grad(vision), text_local, text_all, labels, labels_all,
                    local_offset(labels.shape[0], labels.device), scale,
                )  # fmt: skip
        return losses

    def total(self, losses: dict[str, Tensor]) -> Tensor:
        """The training objective: the weighted *mean* of the terms.

        A mean rather than a sum keeps the loss scale (about log(num_classes) at initialisation) independent of how
        many streams and levels an ablation has, so one learning rate suits them all.
        """
        weights = {name: self.weights[loss_kind(name)] for name in losses}
        total = sum(weights[name] * value for name, value in losses.items())
        return total / max(sum(weights.values()), 1e-12)
