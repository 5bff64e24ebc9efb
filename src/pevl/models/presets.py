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
``pevl_no_tattn``      PeVL without T-Attn in the pose encoder (Table 3)
``pevl_poseformer``    PeVL with a PoseFormer-style pose backbone instead of CLIP's (Table 1)
``pevl_prompt_label``  label text alone as the prompt (Table 4, first row)
``pevl_prompt_action`` "a video of action {label}" (Table 4, second row)
``pevl_ucmr2/3``       two / three UCMR blocks (Fig. 7)
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

_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "pevl": ("PeVL: video + pose + text, UCMR, SGMC", {}),
    "vl": ("VL baseline: video + text, action-level contrast", {"use_pose": False, "sgmc": False}),
    "vpt": ("V+P+T encoders: no UCMR, no SGMC", {"num_ucmr_blocks": 0, "sgmc": False}),
    "pt": ("pose + text with SGMC (skeleton-only data)", {"use_video": False}),
}
_ABLATIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "pevl_no_p2v": ("PeVL without P2V-R", {"p2v": False}),
    "pevl_no_v2p": ("PeVL without V2P-R", {"v2p": False}),
    "pevl_no_tattn": ("PeVL without T-Attn in the pose encoder", {"temporal_attention": False}),
    "pevl_poseformer": ("PeVL with a PoseFormer-style pose backbone", {"pose_backbone": "poseformer"}),
    "pevl_prompt_label": ("PeVL, label text alone as prompt", {"prompt": "label"}),
    "pevl_prompt_action": ("PeVL, 'a video of action {label}' prompt", {"prompt": "action"}),
    "pevl_ucmr2": ("PeVL with two UCMR blocks", {"num_ucmr_blocks": 2}),
    "pevl_ucmr3": ("PeVL with three UCMR blocks", {"num_ucmr_blocks": 3}),
}
_ARCHITECTURES: dict[str, tuple[str, dict[str, Any]]] = {
    "vit_b16": ("ViT-B/16", {}),
    "vit_b32": ("ViT-B/32", {}),
    "vit_l14": ("ViT-L/14", {}),
    "tiny": (
        "tiny",
        {
            "num_video_frames": 4,
            "num_pose_frames": 8,
            "poseformer_width": 32,
            "poseformer_spatial_layers": 1,
            "poseformer_temporal_layers": 1,
            "poseformer_heads": 2,
        },
    ),
}


def _build_registry() -> dict[str, tuple[str, dict[str, Any]]]:
    registry: dict[str, tuple[str, dict[str, Any]]] = {}
    for arch_key, (arch, arch_fields) in _ARCHITECTURES.items():
        for variant, (description, fields) in _VARIANTS.items():
            registry[f"{variant}_{arch_key}"] = (f"{description} ({arch})", {"clip": arch, **arch_fields, **fields})
        for ablation, (description, fields) in _ABLATIONS.items():
            name = ablation if arch_key == "vit_b16" else f"{ablation}_{arch_key}"
            if arch_key in ("vit_b16", "tiny"):
                registry[name] = (f"{description} ({arch})", {"clip": arch, **arch_fields, **fields})
    return dict(sorted(registry.items()))


_REGISTRY = _build_registry()


def list_models(pattern: str = "") -> list[str]:
    """Names of the registered presets containing ``pattern``."""
    return [name for name in _REGISTRY if pattern in name]


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
