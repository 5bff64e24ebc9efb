"""A PoseFormer-style spatial-temporal transformer as an alternative pose backbone (Table 1 ablation).

The paper compares the CLIP image encoder with a frozen pre-trained PoseFormer (Human3.6M) as the pose backbone. No
PoseFormer weights are available offline, so this backbone is trained from scratch (all of its parameters train,
whatever ``freeze_clip`` says): spatial blocks attend across the joints of each frame, then temporal blocks attend
along time for each joint, and a linear layer lifts the tokens to the CLIP width so that UCMR and the CLIP projection
apply unchanged.
"""

from __future__ import annotations

from torch import Tensor, nn

from pevl.models.clip import Block, VisionTransformer
from pevl.models.config import PeVLConfig
from pevl.models.pose_encoder import PoseEmbedding, joint_presence, masked_joint_mean


class PoseFormerEncoder(nn.Module):
    """PoseFormer-style pose encoder: spatial then temporal transformer blocks of its own.

    Args:
        cfg: The model configuration (``poseformer_*`` fields).
    """

    def __init__(self, cfg: PeVLConfig) -> None:
        super().__init__()
        width = cfg.poseformer_width
        self.embed = PoseEmbedding.from_config(cfg, width)
        self.spatial = nn.ModuleList(
            Block(width, cfg.poseformer_heads, 2.0, quick_gelu=False) for _ in range(cfg.poseformer_spatial_layers)
        )
        self.temporal = nn.ModuleList(
            Block(width, cfg.poseformer_heads, 2.0, quick_gelu=False) for _ in range(cfg.poseformer_temporal_layers)
        )
        self.norm = nn.LayerNorm(width)
        self.lift = nn.Linear(width, cfg.clip.vision.width)

    def forward(
        self, pose: Tensor, visual: VisionTransformer, need_weights: bool = False
    ) -> tuple[Tensor, list[Tensor]]:
        """Encode keypoints ``[B, T, J, C]`` into tokens ``[B, T, J, D_clip]`` (``visual`` is unused).

        Missing joints (score 0) are masked as keys in both the spatial and the temporal blocks.
        """
        x = self.embed(pose)
        b, t, j, d = x.shape
        present = joint_presence(pose)
        maps = []
        xs = x.reshape(b * t, j, d)
        for block in self.spatial:
            xs, probs = block(xs, need_weights=need_weights, key_mask=present.reshape(b * t, j))
            if probs is not None:
                maps.append(probs)
        xt = xs.view(b, t, j, d).transpose(1, 2).reshape(b * j, t, d)
        time_mask = present.transpose(1, 2).reshape(b * j, t)
        for block in self.temporal:
            xt, _ = block(xt, key_mask=time_mask)
        x = xt.view(b, j, t, d).transpose(1, 2)
        return self.lift(self.norm(x)), maps

    @staticmethod
    def frame_features(tokens: Tensor, visual: VisionTransformer, pose: Tensor) -> tuple[Tensor, Tensor]:
        """Project joint tokens, average over each frame's detected joints; frame features and frame mask."""
        return masked_joint_mean(visual.head(tokens), pose)
