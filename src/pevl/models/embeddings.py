"""Learnable position embeddings along time, resizable to another number of frames."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def resize_temporal_embed(embed: Tensor, num_frames: int) -> Tensor:
    """Linearly resample a temporal embedding ``[T0, D]`` to ``[num_frames, D]``.

    Lets a model trained on T0 frames run on clips of another length (e.g. single frames for figures).

    Args:
        embed: The learned embedding, one row per frame.
        num_frames: The wanted number of rows.

    Returns:
        ``embed`` itself when the length already matches, else the resampled rows.
    """
    if embed.shape[0] == num_frames:
        return embed
    resized = F.interpolate(embed.t().unsqueeze(0).float(), size=num_frames, mode="linear", align_corners=True)
    return resized.squeeze(0).t().to(embed.dtype)
