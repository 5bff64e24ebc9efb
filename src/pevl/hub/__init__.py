"""Pre-trained CLIP weights: reading OpenAI / open_clip / timm files, downloading them, and ``create_model``."""

from __future__ import annotations

from typing import Any

from pevl.models.pevl import PeVL
from pevl.models.presets import create_model as _create_architecture


def create_model(name: str, num_classes: int | None = None, pretrained: str | None = None, **overrides: Any) -> PeVL:
    """Build a PeVL model from a preset and optionally load pre-trained CLIP weights into it.

    Args:
        name: A preset from :func:`pevl.list_models`, e.g. ``"pevl_vit_b16"``.
        num_classes: Number of class texts training uses (checked with labels); any label list can be scored.
        pretrained: A CLIP checkpoint (OpenAI ``.pt`` or open_clip ``.bin`` / ``.safetensors``), or an architecture
            name such as ``"ViT-B/16"`` already fetched with ``pevl download-weights``.
        **overrides: :class:`pevl.models.config.PeVLConfig` fields to change.

    Returns:
        The model (CLIP frozen unless ``freeze_clip=False``; adapters at their identity init).
    """
    model = _create_architecture(name, num_classes=num_classes, **overrides)
    if pretrained:
        from pevl.hub.weights import load_clip_weights, resolve_pretrained

        load_clip_weights(model.clip, resolve_pretrained(pretrained))
    return model
