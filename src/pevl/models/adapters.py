"""AIM-style bottleneck adapters: the only trainable part inside the frozen CLIP blocks.

An adapter is ``fc1 (D -> r*D) -> GELU -> fc2 (r*D -> D)`` with ``fc2`` zero-initialised, so a network with adapters
starts out computing exactly what the pre-trained CLIP computes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from pevl.models.clip import Block


class Adapter(nn.Module):
    """A bottleneck adapter, optionally with a skip connection around it.

    Args:
        dim: Token width D.
        ratio: Bottleneck width as a fraction of D (AIM: 0.25).
        skip: Return ``x + adapter(x)`` (the S-Adapter after attention) instead of ``adapter(x)``
            (T-Adapter and MLP-Adapter, whose output is added to a residual stream by the caller).
    """

    def __init__(self, dim: int, ratio: float = 0.25, skip: bool = True) -> None:
        super().__init__()
        hidden = max(1, int(dim * ratio))
        self.skip = skip
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Adapt tokens ``[..., D]``."""
        out = self.fc2(self.act(self.fc1(x)))
        return x + out if self.skip else out


class VideoBlockAdapters(nn.Module):
    """The two adapters the video encoder g_v puts in each CLIP block (Fig. 2a).

    ``x = x + S_Adapter(attn(ln_1(x)))`` then ``x = x + mlp(ln_2(x)) + s * MLP_Adapter(ln_2(x))``.
    """

    def __init__(self, dim: int, ratio: float) -> None:
        super().__init__()
        self.s_adapter = Adapter(dim, ratio, skip=True)
        self.mlp_adapter = Adapter(dim, ratio, skip=False)


class PoseBlockAdapters(nn.Module):
    """The three adapters the pose encoder g_p puts in each CLIP block (Fig. 2b): T-, S- and MLP-Adapter."""

    def __init__(self, dim: int, ratio: float, temporal: bool = True) -> None:
        super().__init__()
        self.t_adapter = Adapter(dim, ratio, skip=False) if temporal else None
        self.s_adapter = Adapter(dim, ratio, skip=True)
        self.mlp_adapter = Adapter(dim, ratio, skip=False)


BlockStep = Callable[[Block, nn.Module, Tensor, bool], tuple[Tensor, Tensor | None]]
"""One adapted block: ``(frozen block, its adapters, tokens, need_weights) -> (tokens, attention or None)``."""


def spatial_step(
    block: Block,
    adapters: VideoBlockAdapters | PoseBlockAdapters,
    x: Tensor,
    need_weights: bool = False,
    *,
    mlp_scale: float,
    key_mask: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """S-Attn with the S-Adapter, then the MLP with the MLP-Adapter in parallel: the part every adapted block shares.

    ``x = x + S_Adapter(attn(ln_1(x)))``, then
    ``x = x + mlp(ln_2(x)) + s * MLP_Adapter(ln_2(x))``.

    Args:
        block: The frozen CLIP block.
        adapters: The block's adapters (``s_adapter`` and ``mlp_adapter`` are used).
        x: Token sequences ``[B', L, D]`` (a frame's [cls] + patches, or a pose frame's joints).
        need_weights: Return the attention probabilities.
        mlp_scale: s.
        key_mask: ``[B', L]`` true for tokens that may be attended to (missing joints are false).

    Returns:
        The new tokens and the attention probabilities (or ``None``).
    """
    attn_out, probs = block.attn(block.ln_1(x), need_weights=need_weights, key_mask=key_mask)
    x = x + adapters.s_adapter(attn_out)
    h = block.ln_2(x)
    return x + block.mlp(h) + mlp_scale * adapters.mlp_adapter(h), probs


def run_adapted_blocks(
    blocks: Sequence[Block],
    adapters: Sequence[nn.Module],
    x: Tensor,
    step: BlockStep,
    need_weights: bool = False,
    grad_checkpointing: bool = False,
) -> tuple[Tensor, list[Tensor]]:
    """Run tokens through the shared frozen blocks, each with its own adapters (the loop both encoders use).

    Args:
        blocks: The frozen CLIP blocks.
        adapters: One adapter set per block.
        x: The input tokens.
        step: What one block does (see :data:`BlockStep`).
        need_weights: Collect each block's attention probabilities.
        grad_checkpointing: Recompute each block in the backward pass instead of storing its activations (never
            together with ``need_weights``).

    Returns:
        The output tokens and the attention maps (empty unless asked for).
    """
    maps = []
    for block, block_adapters in zip(blocks, adapters, strict=True):
        if grad_checkpointing and not need_weights:
            x, probs = checkpoint(step, block, block_adapters, x, False, use_reentrant=False)
        else:
            x, probs = step(block, block_adapters, x, need_weights)
        if probs is not None:
            maps.append(probs)
    return x, maps
