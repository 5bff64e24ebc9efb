"""The PeVL configuration: one frozen dataclass, one field per architectural choice.

Parts of PeVL are a *reconstruction* (the main paper's equations are not public, only its supplementary material):
every reconstructed choice is a field here with its default, and its comment says "reconstruction", so that a user
with the full paper can change it in one place.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pevl.errors import PevlError
from pevl.models.clip import CLIP_ARCHITECTURES, CLIPConfig, TextConfig, VisionConfig
from pevl.utils.typed_config import check_keys

STREAMS = ("video", "pose", "fused")
PROMPTS = ("label", "action", "coarse")
POSE_BACKBONES = ("clip", "poseformer")
POSE_NORMALIZATIONS = ("crop", "clip")
MAX_LOGIT_SCALE = 100.0
"""The logit scale of every contrast is used clamped at this value, as in CLIP."""
COCO17_TREE: tuple[int, ...] = (0, 0, 0, 1, 2, 0, 0, 5, 6, 7, 8, 5, 6, 11, 12, 13, 14)
"""Parent of each COCO-17 joint (nose is the root); a test checks it equals ``pevl.data.pose.layouts.COCO17_PARENT``."""
RENAMED_FIELDS = {"content_loss": "semantic_guided_loss", "content_loss_weight": "semantic_guided_loss_weight"}
"""Old field names still read from saved configs."""


@dataclass(frozen=True)
class PeVLConfig:
    """Everything that defines a PeVL model (and its ablations)."""

    # --- backbone -----------------------------------------------------------------------------------------------
    clip: CLIPConfig = field(default_factory=lambda: CLIP_ARCHITECTURES["ViT-B/16"])  # CLIP architecture
    freeze_clip: bool = True  # frozen CLIP, only adapters and new modules train (the paper); False trains all
    num_classes: int | None = None  # if set, the number of class texts training must use (any number can be scored)

    # --- inputs ---------------------------------------------------------------------------------------------------
    use_video: bool = True  # RGB stream (video encoder g_v)
    use_pose: bool = True  # pose stream (pose encoder g_p)
    num_video_frames: int = 8  # T_v, "Video (L)": frames the video encoder sees
    num_pose_frames: int = 32  # T_p, "Video (H)": pose frames; a multiple of T_v (UCMR pairs each frame with T_p/T_v)
    num_joints: int = 17  # J, COCO-17 order
    pose_channels: int = 3  # (x, y, score) per joint, x and y in [-1, 1]

    # --- adapters (AIM style) -------------------------------------------------------------------------------------
    adapter_ratio: float = 0.25  # bottleneck width / token width
    mlp_adapter_scale: float = 0.5  # s in x + mlp(ln_2(x)) + s * MLP_Adapter(ln_2(x))
    text_adapter: bool = True  # reconstruction: one adapter after each text block's attention (Fig. 2c)

    # --- pose encoder -------------------------------------------------------------------------------------------
    pose_backbone: str = "clip"  # "clip": the shared frozen CLIP ViT blocks; "poseformer": Table 1 ablation
    temporal_attention: bool = True  # T-Attn before S-Attn in every pose block (Table 3 ablation: False)
    pose_ln_pre: bool = True  # reconstruction: pose embeddings go through CLIP's ln_pre like image tokens do
    pose_motion: bool = True  # reconstruction: the pose embedding also sees each joint's frame-to-frame displacement
    pose_bones: bool = False  # reconstruction: the pose embedding also sees each joint's vector from its parent
    joint_parents: tuple[int, ...] = COCO17_TREE  # parent of each joint for pose_bones (the COCO-17 tree)
    pose_normalize: str = "crop"  # reconstruction: "crop" = RGB crop coordinates; "clip" = centred, scaled per clip
    poseformer_width: int = 256  # PoseFormer-style backbone: token width (trained from scratch, no weights here)
    poseformer_spatial_layers: int = 4  # PoseFormer-style backbone: joint-attention blocks
    poseformer_temporal_layers: int = 4  # PoseFormer-style backbone: time-attention blocks
    poseformer_heads: int = 8  # PoseFormer-style backbone: attention heads

    # --- UCMR block (reconstruction) ------------------------------------------------------------------------------
    num_ucmr_blocks: int = 1  # UCMR blocks stacked after the encoders (Fig. 7: one is best); 0 = none
    p2v: bool = True  # P2V-R, pose-guided visual refinement (Fig. 5 c1 removes it)
    v2p: bool = True  # V2P-R, visual-enriched pose refinement (Fig. 5 c2 removes it)
    background_token: bool = True  # V2P-R groups = 17 joints per pose frame + one learnable background token
    v2p_hard_assignment: bool = False  # reconstruction: GroupViT straight-through one-hot assignment instead of soft
    v2p_assign_eps: float = 1.0  # reconstruction: GroupViT's normaliser, A / (sum_patches A + eps)
    v2p_mlp_ratio: float = 4.0  # reconstruction: hidden width of the MLP in P' = P + MLP(LN(A V))
    p2v_scale: float = 0.5  # reconstruction: s in X' = X + s * Adapter(CrossAttn(LN(X), LN(P')))
    ucmr_heads: int | None = None  # heads of the P2V-R cross-attention; None = the CLIP vision heads

    # --- SGMC module (reconstruction) ------------------------------------------------------------------------------
    sgmc: bool = True  # False: plain action-level contrast of each stream (the VL and V+P+T baselines)
    action_streams: tuple[str, ...] = STREAMS  # features contrasted with the class texts at action level
    text_to_vision: bool = True  # reconstruction: in-batch text -> vision direction with same-label targets
    sub_action: bool = True  # sub-action level: label words attend over frames ("semantic concept attention")
    sub_action_streams: tuple[str, ...] = STREAMS  # streams whose frames the label words attend over
    sub_action_temperature: float = 0.1  # reconstruction: initial (learnable) temperature of word -> frame attention
    semantic_guided_loss: bool = True  # semantic-guided loss with strength coefficients (Fig. 3) on fused features
    logit_scale_init: float = 1 / 0.07  # learnable logit scale of every contrast, initial value (used clamped at 100)
    action_loss_weight: float = 1.0  # weight of each action-level cross-entropy
    text_to_vision_loss_weight: float = 0.5  # reconstruction: weight of each text -> vision term
    sub_action_loss_weight: float = 1.0  # reconstruction: weight of each sub-action-level cross-entropy
    semantic_guided_loss_weight: float = 1.0  # reconstruction: weight of the semantic-guided loss

    # --- inference ------------------------------------------------------------------------------------------------
    score_stream: str = "fused"  # stream whose similarities give the class scores (forced to the one present)
    score_levels: tuple[str, ...] = ("action", "sub_action")  # softmaxed similarities averaged into the scores
    score_ensemble: bool = False  # average the scores of every stream present (video, pose, fused) instead

    # --- text -----------------------------------------------------------------------------------------------------
    prompt: str = "coarse"  # Table 4: "label" | "action" ("a video of action {label}") | "coarse" (+ coarse type)

    # --- efficiency -----------------------------------------------------------------------------------------------
    grad_checkpointing: bool = False  # recompute encoder blocks in backward to save activation memory

    def __post_init__(self) -> None:
        _check_field_types(self)
        if not (self.use_video or self.use_pose):
            raise PevlError("PeVL needs at least one of use_video / use_pose")
        if self.num_pose_frames % self.num_video_frames:
            raise PevlError(
                f"num_pose_frames ({self.num_pose_frames}) must be a multiple of num_video_frames "
                f"({self.num_video_frames}): UCMR pairs each video frame with a window of pose frames"
            )
        if self.pose_backbone not in POSE_BACKBONES:
            raise PevlError(f"pose_backbone must be one of {POSE_BACKBONES}, not {self.pose_backbone!r}")
        if len(self.joint_parents) != self.num_joints or not all(0 <= p < self.num_joints for p in self.joint_parents):
            raise PevlError(f"joint_parents must give a parent index in [0, {self.num_joints}) for each of the joints")
        for name in ("num_video_frames", "num_pose_frames", "num_joints", "pose_channels"):
            if getattr(self, name) < 1:
                raise PevlError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_ucmr_blocks < 0:
            raise PevlError(f"num_ucmr_blocks must be >= 0, got {self.num_ucmr_blocks}")
        if not 0 < self.logit_scale_init <= MAX_LOGIT_SCALE:
            raise PevlError(f"logit_scale_init must be in (0, {MAX_LOGIT_SCALE:g}], got {self.logit_scale_init}")
        if self.pose_channels < 3:
            raise PevlError(f"pose_channels must be >= 3 (x, y, score), got {self.pose_channels}")
        if self.pose_normalize not in POSE_NORMALIZATIONS:
            raise PevlError(f"pose_normalize must be one of {POSE_NORMALIZATIONS}, not {self.pose_normalize!r}")
        if self.prompt not in PROMPTS:
            raise PevlError(f"prompt must be one of {PROMPTS}, not {self.prompt!r}")
        for name in ("action_streams", "sub_action_streams"):
            bad = [s for s in getattr(self, name) if s not in STREAMS]
            if bad:
                raise PevlError(f"{name} may only contain {STREAMS}, not {bad}")
        if self.score_stream not in STREAMS:
            raise PevlError(f"score_stream must be one of {STREAMS}, not {self.score_stream!r}")
        bad_levels = [lvl for lvl in self.score_levels if lvl not in ("action", "sub_action")]
        if bad_levels or not self.score_levels:
            raise PevlError(f"score_levels must be a non-empty subset of ('action', 'sub_action'), not {bad_levels}")

    # ---- derived views ----------------------------------------------------------------------------------------------
    @property
    def streams(self) -> tuple[str, ...]:
        """The feature streams this model produces: video, pose and (with both) their fusion."""
        present = []
        if self.use_video:
            present.append("video")
        if self.use_pose:
            present.append("pose")
        if self.use_video and self.use_pose:
            present.append("fused")
        return tuple(present)

    @property
    def has_ucmr(self) -> bool:
        """Whether any UCMR block is built (needs both modalities and at least one of P2V-R / V2P-R)."""
        return self.use_video and self.use_pose and self.num_ucmr_blocks > 0 and (self.p2v or self.v2p)

    @property
    def uses_sub_action(self) -> bool:
        """Whether the sub-action level (word -> frame attention) is part of this model."""
        return self.sgmc and self.sub_action

    @property
    def scoring_stream(self) -> str:
        """The stream scores come from: ``score_stream`` if present, else the fused, pose or video stream."""
        if self.score_stream in self.streams:
            return self.score_stream
        return self.streams[-1]

    @property
    def pose_window(self) -> int:
        """Pose frames per video frame, T_p / T_v."""
        return self.num_pose_frames // self.num_video_frames

    # ---- (de)serialisation ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PeVLConfig:
        """Rebuild a config from :meth:`to_dict` output; unknown keys fail with the closest valid one."""
        data = {RENAMED_FIELDS.get(key, key): value for key, value in data.items()}
        check_keys(data, cls)
        if isinstance(data.get("clip"), Mapping):
            data["clip"] = clip_config_from_dict(data["clip"])
        for name in TUPLE_FIELDS:
            if name in data and not isinstance(data[name], tuple):
                data[name] = tuple(data[name])
        return cls(**data)

    def replace(self, **overrides: Any) -> PeVLConfig:
        """Return a copy with some fields changed; unknown field names fail with the closest valid one."""
        check_keys(overrides, type(self))
        if isinstance(overrides.get("clip"), str):
            overrides["clip"] = clip_architecture(overrides["clip"])
        elif isinstance(overrides.get("clip"), Mapping):
            overrides["clip"] = clip_config_from_dict(overrides["clip"])
        for name in TUPLE_FIELDS:
            if name in overrides and isinstance(overrides[name], (list, str)):
                value = overrides[name]
                overrides[name] = (value,) if isinstance(value, str) else tuple(value)
        return dataclasses.replace(self, **overrides)


TUPLE_FIELDS = ("action_streams", "sub_action_streams", "score_levels", "joint_parents")
_SCALAR_TYPES = {"bool": (bool,), "int": (int,), "float": (int, float), "str": (str,)}


def _check_field_types(cfg: PeVLConfig) -> None:
    """Refuse a value of the wrong type (``num_ucmr_blocks=2.0``, ``p2v="off"``) with a one-line error."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        kind = str(f.type).replace(" | None", "")
        if value is None and "None" in str(f.type):
            continue
        if kind in _SCALAR_TYPES:
            ok = isinstance(value, _SCALAR_TYPES[kind]) and (kind == "bool" or not isinstance(value, bool))
            if not ok:
                article = "an" if kind == "int" else "a"
                got = f"{value!r} ({type(value).__name__})"
                raise PevlError(f"model field '{f.name}' must be {article} {kind}, got {got}")
        elif kind.startswith("tuple[") and not isinstance(value, tuple):
            raise PevlError(f"model field '{f.name}' must be a list, got {value!r}")


def clip_config_from_dict(data: Mapping[str, Any]) -> CLIPConfig:
    """Rebuild a :class:`CLIPConfig` from its ``dataclasses.asdict`` form."""
    data = dict(data)
    check_keys(data, CLIPConfig, "clip.")
    vision = data.pop("vision", {})
    text = data.pop("text", {})
    vision = vision if isinstance(vision, VisionConfig) else VisionConfig(**vision)
    text = text if isinstance(text, TextConfig) else TextConfig(**text)
    return CLIPConfig(vision=vision, text=text, **data)


def clip_architecture(name: str) -> CLIPConfig:
    """Look up a CLIP architecture by name (``"ViT-B/16"``; ``"ViT-B-16"`` is accepted too)."""
    key = name if name in CLIP_ARCHITECTURES else name.replace("-", "/", 2).replace("ViT/", "ViT-")
    if key not in CLIP_ARCHITECTURES:
        close = difflib.get_close_matches(name, list(CLIP_ARCHITECTURES), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise PevlError(f"unknown CLIP architecture '{name}'{hint}; known: {', '.join(CLIP_ARCHITECTURES)}")
    return CLIP_ARCHITECTURES[key]
