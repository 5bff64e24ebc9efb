r"""PeVL: video, pose and text encoders on one frozen CLIP, UCMR refinement and SGMC contrast (Fig. 1).

::

    video [B, T_v, 3, H, W] -- g_v (CLIP ViT + S/MLP adapters) --\
                                                                  UCMR (V2P-R, P2V-R) -- SGMC -- scores, losses
    pose  [B, T_p, J, 3]    -- g_p (same ViT, T-Attn + S-Attn) --/                          |
    class prompts           -- g_t (CLIP text + adapters) ----------------------------------/
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from pevl.errors import PevlError
from pevl.models.clip import CLIP
from pevl.models.config import PeVLConfig
from pevl.models.pose_encoder import PoseEncoder
from pevl.models.poseformer import PoseFormerEncoder
from pevl.models.prompts import ClassTexts, build_class_texts
from pevl.models.sgmc import SGMC, Similarities, masked_mean
from pevl.models.text_encoder import TextEncoder, TextFeatures
from pevl.models.trainable import set_trainable
from pevl.models.ucmr import UCMRBlock, UCMRMaps
from pevl.models.video_encoder import VideoEncoder


@dataclass
class PeVLOutput:
    """What :meth:`PeVL.forward` returns."""

    logits: Tensor  # [B, C] float32 class scores (log of the averaged softmaxed similarities): argmax = prediction
    loss: Tensor | None  # the training objective: weighted mean of ``losses`` (None without labels)
    losses: dict[str, Tensor]  # each loss term by name, unweighted
    similarities: Similarities  # cosine similarities per level and stream
    features: dict[str, Tensor]  # clip features per stream [B, E] (not normalised)
    maps: dict[str, Any] = field(default_factory=dict)  # attention maps (need_weights=True)


class PeVL(nn.Module):
    """The PeVL model and its ablations, selected by :class:`PeVLConfig`.

    Args:
        cfg: The configuration; see :mod:`pevl.models.presets` for named ones.
    """

    def __init__(self, cfg: PeVLConfig) -> None:
        super().__init__()
        self.config = cfg
        self.clip = CLIP(cfg.clip)
        self.video_encoder = VideoEncoder(cfg) if cfg.use_video else None
        self.pose_encoder: PoseEncoder | PoseFormerEncoder | None = None
        if cfg.use_pose:
            self.pose_encoder = PoseEncoder(cfg) if cfg.pose_backbone == "clip" else PoseFormerEncoder(cfg)
        self.text_encoder = TextEncoder(cfg)
        self.ucmr = nn.ModuleList(UCMRBlock(cfg) for _ in range(cfg.num_ucmr_blocks)) if cfg.has_ucmr else None
        self.sgmc = SGMC(cfg)
        set_trainable(self, cfg)  # the one place that says what trains (freeze_clip, unused parts)
        self._text_cache: tuple[tuple[Any, ...], TextFeatures] | None = None
        self.register_load_state_dict_post_hook(_drop_text_cache)

    # ---- encoders ---------------------------------------------------------------------------------------------------
    def encode_video(self, video: Tensor) -> Tensor:
        """z_v: clip features of the video encoder alone, ``[B, T_v, 3, H, W] -> [B, E]`` (not normalised)."""
        self._require(self.video_encoder is not None, "this model has no video encoder (use_video=False)")
        tokens, _ = self.video_encoder(video, self.clip.visual)
        return self.video_encoder.frame_features(tokens, self.clip.visual).mean(dim=1)

    def encode_pose(self, pose: Tensor) -> Tensor:
        """z_p: clip features of the pose encoder alone, ``[B, T_p, J, 3] -> [B, E]`` (not normalised)."""
        self._require(self.pose_encoder is not None, "this model has no pose encoder (use_pose=False)")
        tokens, _ = self.pose_encoder(pose, self.clip.visual)
        frames, mask = self.pose_encoder.frame_features(tokens, self.clip.visual, pose)
        return masked_mean(frames, mask)

    def encode_text(self, tokens: Tensor) -> Tensor:
        """z_t: text features, ``[N, 77] -> [N, E]`` (not normalised)."""
        return self.text_encoder(tokens, self.clip.text, return_words=False)[0]

    def build_class_texts(self, labels: Sequence[str], coarse: Sequence[str | None] | None = None) -> ClassTexts:
        """Tokenise class label texts with this model's prompt style (Table 4)."""
        return build_class_texts(labels, coarse, self.config.prompt, self.config.clip.text.context_length)

    def encode_class_texts(self, texts: ClassTexts) -> TextFeatures:
        """Encode class prompts; in eval mode without gradients the result is cached.

        The cache is keyed on the token ids, the device, the autocast dtype and the text weights (each parameter's
        storage and in-place version, so an optimiser step or an in-place edit invalidates it), and dropped by
        :meth:`train`, :meth:`eval` and :meth:`load_state_dict`.
        """
        device = self.clip.text.pos_embed.device
        key = self._text_cache_key(texts.tokens, device)
        if key is not None and self._text_cache is not None and self._text_cache[0] == key:
            return self._text_cache[1]
        texts = texts.to(device)
        feats = self.text_encoder.encode(texts.tokens, texts.word_mask, texts.phrase_index, self.clip.text)
        if key is not None:
            self._text_cache = (key, feats)
        return feats

    def _text_cache_key(self, tokens: Tensor, device: torch.device) -> tuple[Any, ...] | None:
        """What the encoded class texts depend on, or ``None`` when they are not to be cached (training, gradients)."""
        if self.training or torch.is_grad_enabled() or tokens.device.type == "meta" or device.type == "meta":
            return None
        autocast = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None
        text_params = [*self.clip.text.parameters(), *self.text_encoder.parameters()]
        if any(p.is_inference() for p in text_params):  # built under torch.inference_mode: no version to key on
            return None
        weights = tuple((p.data_ptr(), p.dtype, p._version) for p in text_params)
        digest = hashlib.sha1(tokens.cpu().numpy().tobytes()).hexdigest()
        return digest, tuple(tokens.shape), str(device), str(autocast), weights

    def train(self, mode: bool = True) -> PeVL:
        """Switch train/eval mode; drops the cached class-text features."""
        self._text_cache = None
        return super().train(mode)

    # ---- forward ----------------------------------------------------------------------------------------------------
    def forward_features(
        self, video: Tensor | None = None, pose: Tensor | None = None, need_weights: bool = False
    ) -> tuple[dict[str, Tensor], dict[str, Tensor | None], dict[str, Any]]:
        """Run the encoders and UCMR; per-frame features of every stream (SGMC's inputs).

        Args:
            video: ``[B, T_v, 3, H, W]`` (required when the model uses video).
            pose: ``[B, T_p, J, 3]`` (required when the model uses pose); a joint with score 0 is missing.
            need_weights: Collect attention maps for the figures.

        Returns:
            Frame features by stream (``video`` ``[B, T_v, E]``, ``pose`` and ``fused`` ``[B, T_p, E]``), their frame
            masks (``None`` = all frames valid; a pose frame with nobody detected is not) and the maps.
        """
        cfg = self.config
        maps: dict[str, Any] = {}
        video_tokens = pose_tokens = present = None
        if cfg.use_video:
            self._require(video is not None, "this model needs a video clip [B, T_v, 3, H, W]")
            self._require(video.dim() == 5, f"video must be [B, T, 3, H, W], got {list(video.shape)}")
            video_tokens, maps["video_attention"] = self.video_encoder(video, self.clip.visual, need_weights)
        if cfg.use_pose:
            self._require(pose is not None, "this model needs a pose clip [B, T_p, J, 3]")
            self._require(
                pose.dim() == 4 and pose.shape[2:] == (cfg.num_joints, cfg.pose_channels),
                f"pose must be [B, T, {cfg.num_joints}, {cfg.pose_channels}], got {list(pose.shape)}",
            )
            pose_tokens, maps["pose_attention"] = self.pose_encoder(pose, self.clip.visual, need_weights)
            present = pose[..., 2] > 0  # a missing joint (score 0) is masked everywhere downstream
        if video_tokens is not None and pose_tokens is not None:
            self._require(
                pose_tokens.shape[1] % video_tokens.shape[1] == 0,
                f"{pose_tokens.shape[1]} pose frames are not a multiple of {video_tokens.shape[1]} video frames",
            )
            self._require(video_tokens.shape[0] == pose_tokens.shape[0], "video and pose batches differ in size")
        ucmr_maps: list[UCMRMaps] = []
        if self.ucmr is not None:
            video_tokens, pose_tokens, ucmr_maps = self.run_ucmr(video_tokens, pose_tokens, need_weights, present)
        maps["ucmr"] = ucmr_maps
        video_frames = pose_frames = pose_mask = None
        if video_tokens is not None:
            video_frames = self.video_encoder.frame_features(video_tokens, self.clip.visual)
        if pose_tokens is not None:
            pose_frames, pose_mask = self.pose_encoder.frame_features(pose_tokens, self.clip.visual, pose)
        frames, masks = self.sgmc.stream_frames(video_frames, pose_frames, pose_mask)
        return frames, masks, maps

    def run_ucmr(
        self, video_tokens: Tensor, pose_tokens: Tensor, need_weights: bool = False, present: Tensor | None = None
    ) -> tuple[Tensor, Tensor, list[UCMRMaps]]:
        """Run the UCMR blocks on the encoders' tokens (``[B, T_v, 1+N, D]`` and ``[B, T_p, J, D]``).

        Only the [cls] tokens of the video leave UCMR (the clip feature is theirs), so the last block's P2V-R refines
        the [cls] tokens alone and its returned patch tokens are those it received, unless the maps are asked for
        (they draw every patch's attention).

        Returns:
            The refined video and pose tokens and each block's maps.
        """
        self._require(self.ucmr is not None, "this model has no UCMR block")
        maps: list[UCMRMaps] = []
        last = len(self.ucmr) - 1
        for i, block in enumerate(self.ucmr):
            video_tokens, pose_tokens, block_maps = block(
                video_tokens, pose_tokens, need_weights, present, refine_patches=need_weights or i < last
            )
            maps.append(block_maps)
        return video_tokens, pose_tokens, maps

    def forward(
        self,
        video: Tensor | None = None,
        pose: Tensor | None = None,
        texts: ClassTexts | TextFeatures | Sequence[str] | None = None,
        labels: Tensor | None = None,
        need_weights: bool = False,
    ) -> PeVLOutput:
        """Score clips against class texts; with labels, also compute the training losses.

        Args:
            video: ``[B, T_v, 3, H, W]`` CLIP-normalised frames.
            pose: ``[B, T_p, J, 3]`` keypoints (x, y in [-1, 1], score).
            texts: The class texts: label strings, :class:`ClassTexts`, or already encoded :class:`TextFeatures`.
            labels: ``[B]`` class indices; when given, ``loss`` and ``losses`` are filled.
            need_weights: Also return the attention maps (``maps``) for the figures.

        Returns:
            A :class:`PeVLOutput` with ``logits [B, C]``.
        """
        self._require(texts is not None, "forward needs the class texts (label strings or ClassTexts)")
        if isinstance(texts, TextFeatures):
            text = texts
        else:
            if not isinstance(texts, ClassTexts):
                texts = self.build_class_texts(list(texts))
            text = self.encode_class_texts(texts)
        num_classes = text.sentence.shape[0]
        if self.config.num_classes is not None and labels is not None:  # scoring any label list stays possible
            self._require(
                num_classes == self.config.num_classes,
                f"got {num_classes} class texts for a model of {self.config.num_classes} classes",
            )
        frames, masks, maps = self.forward_features(video, pose, need_weights)
        sims = self.sgmc.similarities(frames, text, masks)
        logits = self.sgmc.scores(sims, self.config.scoring_stream)
        losses: dict[str, Tensor] = {}
        if labels is not None:
            losses = self.sgmc.losses(sims, text, labels.to(logits.device))
        if need_weights:
            maps["word_attention"] = sims.word_attention
            maps["frames"] = frames
            maps["frame_masks"] = masks
        loss = self.sgmc.total_loss(losses) if losses else None
        features = {stream: masked_mean(feats, masks.get(stream)) for stream, feats in frames.items()}
        return PeVLOutput(logits, loss, losses, sims, features, maps if need_weights else {})

    # ---- helpers ----------------------------------------------------------------------------------------------------
    @staticmethod
    def _require(condition: bool, message: str) -> None:
        if not condition:
            raise PevlError(message)

    def trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Named parameters that receive gradients."""
        return [(name, p) for name, p in self.named_parameters() if p.requires_grad]


def _drop_text_cache(module: nn.Module, incompatible_keys: Any) -> None:
    """``load_state_dict`` post-hook: new weights make the cached class-text features stale."""
    module._text_cache = None
