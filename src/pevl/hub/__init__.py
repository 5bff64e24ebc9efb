"""Pre-trained CLIP weights: reading OpenAI / open_clip / timm files, downloading them, and ``create_model``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pevl.errors import PevlError

if TYPE_CHECKING:  # the model code (and torch) load on the first call, not when a submodule such as download is used
    from pevl.models.pevl import PeVL


def create_model(name: str, num_classes: int | None = None, pretrained: str | None = None, **overrides: Any) -> PeVL:
    """Build a PeVL model from a preset and optionally load pre-trained CLIP weights into it.

    Args:
        name: A preset from :func:`pevl.list_models`, e.g. ``"pevl_vit_b16"``, or ``"hf-hub:org/name"``: a
            trained model shared on the Hugging Face Hub (:mod:`pevl.hub.hf`), returned with its weights, in
            eval mode; its class texts are ``model.classes``.
        num_classes: Number of class texts training uses (checked with labels); any label list can be scored.
        pretrained: A CLIP checkpoint (OpenAI ``.pt``, open_clip ``.bin`` / ``.safetensors``, a Hugging Face
            ``transformers`` CLIP folder or ``hf-hub:openai/clip-vit-base-patch16``), or an architecture name
            such as ``"ViT-B/16"`` already fetched with ``pevl download-weights``.
        **overrides: :class:`pevl.models.config.PeVLConfig` fields to change.

    Returns:
        The model (CLIP frozen unless ``freeze_clip=False``; adapters at their identity init).
    """
    from pevl.hub.hf import is_hub_name

    if is_hub_name(name):
        if num_classes is not None or pretrained or overrides:
            raise PevlError(f"{name}: a trained Hub model is used as it is (no num_classes, pretrained or overrides)")
        from pevl.engine.builder import load_trained_model

        loaded = load_trained_model(name)
        loaded.model.classes = list(loaded.classes)
        return loaded.model
    from pevl.models.presets import create_model as _create_architecture

    model = _create_architecture(name, num_classes=num_classes, **overrides)
    if pretrained:
        from pevl.hub.weights import load_clip_weights

        load_clip_weights(model.clip, pretrained)
    return model
