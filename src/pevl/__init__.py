"""PeVL: a pose-enhanced vision-language model for fine-grained human action recognition.

Entry points::

    import pevl
    model = pevl.create_model("pevl_vit_b16", pretrained="ViT-B-16.pt")
    tokens = pevl.tokenize(["back 2.5 somersault 1.5 twist piked"])
    pevl.list_models()
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "create_model", "list_models", "tokenize", "get_config"]

_LAZY = {
    "create_model": ("pevl.hub", "create_model"),
    "list_models": ("pevl.models.presets", "list_models"),
    "get_config": ("pevl.models.presets", "get_config"),
    "tokenize": ("pevl.models.tokenizer", "tokenize"),
}


def __getattr__(name: str) -> Any:
    # Lazy so that `pevl --help` and the data tools start without building the model code.
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        return getattr(importlib.import_module(module_name), attr)
    raise AttributeError(f"module 'pevl' has no attribute {name!r}")
