"""AIM-style bottleneck adapters: the only trainable part inside the frozen CLIP blocks.

An adapter is ``fc1 (D -> r*D) -> GELU -> fc2 (r*D -> D)`` with ``fc2`` zero-initialised, so a network with adapters
starts out computing exactly what the pre-trained CLIP computes.
"""

from __future__ import annotations

from torch import Tensor, nn


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
