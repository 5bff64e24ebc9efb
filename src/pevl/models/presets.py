"""Named model presets in one registry, and ``create_model`` (architecture only; weights: :mod:`pevl.hub`).

Every variant exists on several CLIP architectures: ``<variant>_vit_b16``, ``<variant>_vit_b32``,
``<variant>_vit_l14`` and ``<variant>_tiny`` (a few-thousand-times cheaper architecture for tests and demos). The
ablations of the paper are named without the architecture for ViT-B/16 (``pevl_no_p2v``) and with ``_tiny``.

=====================  ======================================================================================
variant                what it is
=====================  ======================================================================================
``pevl``               the full model: video + pose + text encoders, one UCMR block, SGMC (Fig. 4e)
``vl``                 video + text only, action-level contrast (Fig. 4a, the "VL model")
``vpt``                video + pose + text encoders, no UCMR, no SGMC (Fig. 4c, "V+P+T encoders")
``pt``                 pose + text with SGMC, for skeleton-only data (no video)
``pevl_no_p2v``        PeVL without P2V-R (Fig. 5 c1)
``pevl_no_v2p``        PeVL without V2P-R (Fig. 5 c2)
``pevl_no_tattn``      PeVL without temporal pose modelling: no T-Attn, no motion channels (Table 3)
``pevl_poseformer``    PeVL with a PoseFormer-style pose backbone instead of CLIP's (Table 1)
``pevl_prompt_label``  label text alone as the prompt (Table 4, first row)
``pevl_prompt_action`` "a video of action {label}" (Table 4, second row)
``pevl_ucmr2/3``       two / three UCMR blocks (Fig. 7)
``pevl_paper_params``  the full model with wider adapters, so that its tunable parameters match the paper's Table 2
                       (43 M for ViT-B/16, 112 M for ViT-L/14; ViT-B/16 and ViT-L/14 only, see docs/model.md)
=====================  ======================================================================================
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from pevl.errors import PevlError
from pevl.models.clip import CLIP_ARCHITECTURES
from pevl.models.config import PeVLConfig
from pevl.models.pevl import PeVL

_TINY: dict[str, Any] = {
    "clip": "tiny",
    "num_video_frames": 4,
    "num_pose_frames": 8,
    "poseformer_width": 32,
    "poseformer_spatial_layers": 1,
    "poseformer_temporal_layers": 1,
    "poseformer_heads": 2,
}
"""The tiny architecture of the ``*_tiny`` presets: a few thousand times cheaper, for tests and the demo."""
_B16: dict[str, Any] = {"clip": "ViT-B/16"}
_B32: dict[str, Any] = {"clip": "ViT-B/32"}
_L14: dict[str, Any] = {"clip": "ViT-L/14"}

_VL = {"use_pose": False, "sgmc": False}
_VPT = {"num_ucmr_blocks": 0, "sgmc": False}
_PT = {"use_video": False}
_NO_P2V = {"p2v": False}
_NO_V2P = {"v2p": False}
# Table 3 removes all temporal modelling of the pose stream: T-Attn and the frame-to-frame motion channels.
_NO_TATTN = {"temporal_attention": False, "pose_motion": False}
_POSEFORMER = {"pose_backbone": "poseformer"}
_PROMPT_LABEL = {"prompt": "label"}
_PROMPT_ACTION = {"prompt": "action"}
_UCMR2 = {"num_ucmr_blocks": 2}
_UCMR3 = {"num_ucmr_blocks": 3}
# Adapter bottlenecks (every adapter: video, pose, text, P2V-R) wide enough that the tunable parameters match
# Table 2: 0.42 x 768 = 322 channels gives 42.9 M for ViT-B/16, 0.35 x 1024 = 358 gives 112.0 M for ViT-L/14.
_PAPER_PARAMS_B16 = {"adapter_ratio": 0.42}
_PAPER_PARAMS_L14 = {"adapter_ratio": 0.35}

# Every preset written out, so that searching for a name finds it: name -> (description, config fields).
_REGISTRY: dict[str, tuple[str, dict[str, Any]]] = {
    "pevl_vit_b16": ("PeVL: video + pose + text, UCMR, SGMC (ViT-B/16)", {**_B16}),
    "pevl_vit_b32": ("PeVL: video + pose + text, UCMR, SGMC (ViT-B/32)", {**_B32}),
    "pevl_vit_l14": ("PeVL: video + pose + text, UCMR, SGMC (ViT-L/14)", {**_L14}),
    "pevl_tiny": ("PeVL: video + pose + text, UCMR, SGMC (tiny)", {**_TINY}),
    "vl_vit_b16": ("VL baseline: video + text, action-level contrast (ViT-B/16)", {**_B16, **_VL}),
    "vl_vit_b32": ("VL baseline: video + text, action-level contrast (ViT-B/32)", {**_B32, **_VL}),
    "vl_vit_l14": ("VL baseline: video + text, action-level contrast (ViT-L/14)", {**_L14, **_VL}),
    "vl_tiny": ("VL baseline: video + text, action-level contrast (tiny)", {**_TINY, **_VL}),
    "vpt_vit_b16": ("V+P+T encoders: no UCMR, no SGMC (ViT-B/16)", {**_B16, **_VPT}),
    "vpt_vit_b32": ("V+P+T encoders: no UCMR, no SGMC (ViT-B/32)", {**_B32, **_VPT}),
    "vpt_vit_l14": ("V+P+T encoders: no UCMR, no SGMC (ViT-L/14)", {**_L14, **_VPT}),
    "vpt_tiny": ("V+P+T encoders: no UCMR, no SGMC (tiny)", {**_TINY, **_VPT}),
    "pt_vit_b16": ("pose + text with SGMC, skeleton-only data (ViT-B/16)", {**_B16, **_PT}),
    "pt_vit_b32": ("pose + text with SGMC, skeleton-only data (ViT-B/32)", {**_B32, **_PT}),
    "pt_vit_l14": ("pose + text with SGMC, skeleton-only data (ViT-L/14)", {**_L14, **_PT}),
    "pt_tiny": ("pose + text with SGMC, skeleton-only data (tiny)", {**_TINY, **_PT}),
    "pevl_no_p2v": ("PeVL without P2V-R (ViT-B/16)", {**_B16, **_NO_P2V}),
    "pevl_no_p2v_tiny": ("PeVL without P2V-R (tiny)", {**_TINY, **_NO_P2V}),
    "pevl_no_v2p": ("PeVL without V2P-R (ViT-B/16)", {**_B16, **_NO_V2P}),
    "pevl_no_v2p_tiny": ("PeVL without V2P-R (tiny)", {**_TINY, **_NO_V2P}),
    "pevl_no_tattn": ("PeVL without temporal pose modelling: no T-Attn, no motion channels (ViT-B/16)",
                      {**_B16, **_NO_TATTN}),
    "pevl_no_tattn_tiny": ("PeVL without temporal pose modelling: no T-Attn, no motion channels (tiny)",
                           {**_TINY, **_NO_TATTN}),
    "pevl_poseformer": ("PeVL with a PoseFormer-style pose backbone (ViT-B/16)", {**_B16, **_POSEFORMER}),
    "pevl_poseformer_tiny": ("PeVL with a PoseFormer-style pose backbone (tiny)", {**_TINY, **_POSEFORMER}),
    "pevl_prompt_label": ("PeVL, label text alone as prompt (ViT-B/16)", {**_B16, **_PROMPT_LABEL}),
    "pevl_prompt_label_tiny": ("PeVL, label text alone as prompt (tiny)", {**_TINY, **_PROMPT_LABEL}),
    "pevl_prompt_action": ("PeVL, 'a video of action {label}' prompt (ViT-B/16)", {**_B16, **_PROMPT_ACTION}),
    "pevl_prompt_action_tiny": ("PeVL, 'a video of action {label}' prompt (tiny)", {**_TINY, **_PROMPT_ACTION}),
    "pevl_ucmr2": ("PeVL with two UCMR blocks (ViT-B/16)", {**_B16, **_UCMR2}),
    "pevl_ucmr2_tiny": ("PeVL with two UCMR blocks (tiny)", {**_TINY, **_UCMR2}),
    "pevl_ucmr3": ("PeVL with three UCMR blocks (ViT-B/16)", {**_B16, **_UCMR3}),
    "pevl_ucmr3_tiny": ("PeVL with three UCMR blocks (tiny)", {**_TINY, **_UCMR3}),
    "pevl_paper_params_vit_b16": ("PeVL with adapters of 0.42 x width: 43 M tunable as in Table 2 (ViT-B/16)",
                                  {**_B16, **_PAPER_PARAMS_B16}),
    "pevl_paper_params_vit_l14": ("PeVL with adapters of 0.35 x width: 112 M tunable as in Table 2 (ViT-L/14)",
                                  {**_L14, **_PAPER_PARAMS_L14}),
}  # fmt: skip


def list_models(pattern: str = "") -> list[str]:
    """Names of the registered presets containing ``pattern``."""
    return sorted(name for name in _REGISTRY if pattern in name)


def describe_model(name: str) -> str:
    """A one-line description of a preset."""
    return _lookup(name)[0]


def _lookup(name: str) -> tuple[str, dict[str, Any]]:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `pevl.list_models()`"
        raise PevlError(f"unknown model preset '{name}'{hint}")
    return _REGISTRY[name]


def get_config(name: str, **overrides: Any) -> PeVLConfig:
    """The configuration of a preset, with some fields overridden.

    Args:
        name: A preset from :func:`list_models`.
        **overrides: :class:`PeVLConfig` fields (``clip`` may be an architecture name such as ``"ViT-L/14"``).

    Returns:
        The frozen configuration.
    """
    _, fields = _lookup(name)
    fields = dict(fields)
    clip = CLIP_ARCHITECTURES[fields.pop("clip")]
    return dataclasses.replace(PeVLConfig(clip=clip), **fields).replace(**overrides)


def create_model(name: str, num_classes: int | None = None, **overrides: Any) -> PeVL:
    """Build a PeVL model from a preset, with random (untrained) CLIP weights.

    :func:`pevl.hub.create_model` (``pevl.create_model``) does the same and also loads pre-trained CLIP weights.

    Args:
        name: A preset from :func:`list_models`, e.g. ``"pevl_vit_b16"``.
        num_classes: Number of class texts training uses (checked with labels); any label list can be scored.
        **overrides: :class:`PeVLConfig` fields to change.

    Returns:
        The model (CLIP frozen unless ``freeze_clip=False``; adapters at their identity init).
    """
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    return PeVL(get_config(name, **overrides))
