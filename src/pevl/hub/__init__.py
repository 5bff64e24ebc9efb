"""Pre-trained CLIP weights: reading OpenAI / open_clip / timm files, downloading them, and ``create_model``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the model code (and torch) load on the first call, not when a submodule such as download is used
    from pevl.models.pevl import PeVL


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
    from pevl.models.presets import create_model as _create_architecture

    model = _create_architecture(name, num_classes=num_classes, **overrides)
    if pretrained:
        from pevl.hub.weights import load_clip_weights, resolve_pretrained

        load_clip_weights(model.clip, resolve_pretrained(pretrained))
    return model
