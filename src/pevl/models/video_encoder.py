"""The video encoder g_v: frozen CLIP ViT, space-only (*S-Attn*), with S- and MLP-adapters (Fig. 2a).

Each of the T_v frames ("Video (L)") goes through the CLIP image tower on its own; a learnable temporal position
embedding (zero-initialised) is added to each frame's [cls] token so the frames know where they are in the clip.
With the adapters at their zero init, a one-frame clip is encoded exactly as CLIP encodes the image.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn

from pevl.models.adapters import VideoBlockAdapters, run_adapted_blocks, spatial_step
from pevl.models.clip import VisionTransformer, resize_temporal_embed
from pevl.models.config import PeVLConfig


class VideoEncoder(nn.Module):
    """Adapters and the temporal embedding of g_v; the frozen ViT is passed in at call time (it is shared).

    Args:
        cfg: The model configuration.
    """

    def __init__(self, cfg: PeVLConfig) -> None:
        super().__init__()
        width = cfg.clip.vision.width
        self.scale = cfg.mlp_adapter_scale
        self.grad_checkpointing = cfg.grad_checkpointing
        self.temporal_embed = nn.Parameter(torch.zeros(cfg.num_video_frames, width))
        self.adapters = nn.ModuleList(
            VideoBlockAdapters(width, cfg.adapter_ratio) for _ in range(cfg.clip.vision.layers)
        )

    def forward(
        self, video: Tensor, visual: VisionTransformer, need_weights: bool = False
    ) -> tuple[Tensor, list[Tensor]]:
        """Encode a clip into per-frame token sequences.

        Args:
            video: ``[B, T, 3, H, W]`` CLIP-normalised frames.
            visual: The (frozen) CLIP image tower.
            need_weights: Also return each block's attention probabilities ``[B*T, heads, 1+N, 1+N]``.

        Returns:
            Tokens ``[B, T, 1 + N, D]`` ([cls] first) and the attention maps (empty unless asked for).
        """
        if video.dim() != 5:
            raise ValueError(f"video must be [B, T, 3, H, W], got shape {list(video.shape)}")
        b, t = video.shape[:2]
        temporal = resize_temporal_embed(self.temporal_embed, t)
        x = visual.embed(video.flatten(0, 1), extra_cls=temporal.repeat(b, 1))
        step = partial(spatial_step, mlp_scale=self.scale)  # S-Attn over each frame, then the MLP
        checkpointing = self.grad_checkpointing and self.training
        x, maps = run_adapted_blocks(visual.blocks, self.adapters, x, step, need_weights, checkpointing)
        return x.view(b, t, *x.shape[1:]), maps

    @staticmethod
    def frame_features(tokens: Tensor, visual: VisionTransformer) -> Tensor:
        """Project each frame's [cls] token into the joint space: ``[B, T, 1+N, D] -> [B, T, E]``."""
        return visual.head(tokens[:, :, 0])

