"""Optimiser over the trainable parameters and the warm-up + cosine learning-rate schedule."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from pevl.engine.config import OptimSection
from pevl.errors import PevlError
from pevl.models.clip import TextTransformer, VisionTransformer

DECAYED_WEIGHTS: dict[type[nn.Module], tuple[str, ...]] = {
    nn.Linear: ("weight",),
    nn.Conv1d: ("weight",),
    nn.Conv2d: ("weight",),
    nn.Conv3d: ("weight",),
    nn.MultiheadAttention: ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"),
    VisionTransformer: ("proj",),  # CLIP's image projection: a linear map held as a bare matrix
    TextTransformer: ("proj",),  # CLIP's text projection, likewise
}
"""The parameters that get weight decay, by the role they play: the matrices of linear and convolution layers.

Nothing else is decayed: biases, norm scales, embeddings (positional, temporal, joint, token), learnable tokens
(class, V2P-R background), the logit scale, temperatures and adapter scales. Shrinking them towards zero has no
regularising meaning. The rule looks at what owns a parameter, never at its name (a linear layer named ``embed`` is
still a linear layer).
"""


def decayed_parameter_names(model: nn.Module) -> set[str]:
    """Names of the parameters of ``model`` that :data:`DECAYED_WEIGHTS` says get weight decay."""
    names: set[str] = set()
    for module_name, module in model.named_modules():
        for kind, attributes in DECAYED_WEIGHTS.items():
            if isinstance(module, kind):
                for attribute in attributes:
                    if isinstance(getattr(module, attribute, None), nn.Parameter):
                        names.add(f"{module_name}.{attribute}" if module_name else attribute)
    return names


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters split by role into a decayed and a non-decayed group (empty groups left out)."""
    decayed = decayed_parameter_names(model)
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    decay_names: list[str] = []
    no_decay_names: list[str] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name in decayed:
            decay.append(param)
            decay_names.append(name)
        else:
            no_decay.append(param)
            no_decay_names.append(name)
    groups = [
        {"name": "decay", "params": decay, "weight_decay": weight_decay, "param_names": decay_names},
        {"name": "no_decay", "params": no_decay, "weight_decay": 0.0, "param_names": no_decay_names},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(model: torch.nn.Module, cfg: OptimSection) -> torch.optim.Optimizer:
    """AdamW (or SGD) over the model's trainable parameters, without weight decay where it does not belong.

    Args:
        model: The model; frozen parameters (``requires_grad=False``, e.g. the CLIP backbone) are left out.
        cfg: The optimiser section of the run config.

    Returns:
        The optimiser; its groups are named ``decay`` and ``no_decay``. AdamW is the fused implementation when every
        parameter is on a GPU.

    Raises:
        PevlError: The model has no trainable parameter.
    """
    groups = param_groups(model, cfg.weight_decay)
    if not groups:
        raise PevlError("the model has no trainable parameters: nothing to optimise")
    if cfg.optimizer == "adamw":
        # One fused kernel for all parameters on a GPU instead of a dozen per tensor.
        fused = all(p.is_cuda for group in groups for p in group["params"])
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, fused=fused or None)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.betas[0], weight_decay=cfg.weight_decay)
    raise PevlError(f"unknown optimizer '{cfg.optimizer}' (choose adamw or sgd)")


class WarmupCosineScheduler(torch.optim.lr_scheduler.LRScheduler):
    """Linear warm-up to each group's base learning rate, then cosine decay to ``min_lr``; one step per update.

    Optimiser step ``s`` (0-based) uses ``base * (s + 1) / warmup_steps`` during warm-up, then
    ``min + (base - min) * (1 + cos(pi * p)) / 2`` with ``p = (s - warmup_steps) / (total_steps - warmup_steps)``,
    clamped to ``[0, 1]``. ``min_lr`` is given for the configured peak ``lr``; groups with another base rate get
    the same ratio. The schedule is a closed-form function of the step, so its state is just the step count.

    Args:
        optimizer: The optimiser.
        total_steps: Optimiser steps of the whole run.
        warmup_steps: Steps of linear warm-up.
        min_lr_ratio: ``min_lr / lr``.
        last_epoch: Index of the last step taken (-1 for a fresh run).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_steps: int,
        warmup_steps: int,
        min_lr_ratio: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        self.total_steps = int(total_steps)
        self.warmup_steps = max(0, min(int(warmup_steps), self.total_steps))
        self.min_lr_ratio = float(min_lr_ratio)
        super().__init__(optimizer, last_epoch)

    def lr_factor(self, step: int) -> float:
        """Multiplier of the base learning rate at optimiser step ``step`` (0-based)."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(max((step - self.warmup_steps) / span, 0.0), 1.0)
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine

    def get_lr(self) -> list[float]:  # noqa: D102 -- documented in the class
        factor = self.lr_factor(max(self.last_epoch, 0))
        return [float(base) * factor for base in self.base_lrs]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue a saved schedule at its step, over the length *this* scheduler was built for.

        The step count comes from ``state_dict``; the length (total and warm-up steps, ``min_lr``) stays the one of
        the current run config, so a run resumed with more epochs decays over the new length instead of sitting at
        the end of the old one. What changed is kept in :attr:`rebuilt_from` (``None`` when nothing did).
        """
        kept = {"total_steps": self.total_steps, "warmup_steps": self.warmup_steps, "min_lr_ratio": self.min_lr_ratio}
        saved = {key: state_dict.get(key, value) for key, value in kept.items()}
        super().load_state_dict(state_dict)
        self.__dict__.update(kept)
        self.rebuilt_from = saved if saved != kept else None
        for group, lr in zip(self.optimizer.param_groups, self.get_lr(), strict=True):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def describe_rebuild(self) -> str | None:
        """One line on how a resumed schedule differs from the saved one (``None`` when it does not)."""
        old = getattr(self, "rebuilt_from", None)
        if old is None:
            return None
        step = max(self.last_epoch, 0)
        return (
            f"note: the learning-rate schedule was saved for {old['total_steps']} steps ({old['warmup_steps']} of "
            f"warm-up) and is rebuilt for this run's {self.total_steps} ({self.warmup_steps} of warm-up): it "
            f"continues at step {step} on the new warm-up + cosine curve (lr factor {self.lr_factor(step):.3g})"
        )


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimSection, steps_per_epoch: int) -> WarmupCosineScheduler:
    """The warm-up + cosine schedule of a run; call ``scheduler.step()`` after every ``optimizer.step()``.

    Args:
        optimizer: From :func:`build_optimizer`.
        cfg: The optimiser section (epochs, warmup_epochs, lr, min_lr).
        steps_per_epoch: Optimiser steps per epoch, i.e. batches per epoch / ``grad_accum_steps`` rounded up.

    Returns:
        The scheduler; it has already set the learning rate of the first step. A warm-up longer than the run is
        clamped to the run (:func:`warmup_note` says so).
    """
    if steps_per_epoch < 1:
        raise PevlError(f"an epoch must have at least one optimiser step, got {steps_per_epoch} (dataset too small?)")
    total = cfg.epochs * steps_per_epoch
    warmup = round(min(cfg.warmup_epochs, cfg.epochs) * steps_per_epoch)
    return WarmupCosineScheduler(optimizer, total, warmup, min_lr_ratio=cfg.min_lr / cfg.lr)


def warmup_note(cfg: OptimSection) -> str | None:
    """The note a run prints when its warm-up is longer than the run (and is clamped to it), else ``None``."""
    if cfg.warmup_epochs <= cfg.epochs:
        return None
    return (
        f"note: optim.warmup_epochs={cfg.warmup_epochs:g} is longer than the run (optim.epochs={cfg.epochs}): the "
        f"warm-up is clamped to the whole run, so the learning rate rises to optim.lr={cfg.lr:g} and never decays; "
        f"set optim.warmup_epochs below {cfg.epochs} for a cosine decay"
    )
