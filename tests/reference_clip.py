"""OpenAI's reference CLIP code, loaded by file path from the installed ``openai-clip`` distribution.

``import clip`` fails here (its ``__init__`` pulls torchvision and pkg_resources), but its ``model.py`` and
``simple_tokenizer.py`` only need torch, numpy, ftfy and regex, so they are loaded as stand-alone modules.
``clip.tokenize`` lives in ``clip.py`` beside the torchvision imports: its function definition alone is taken
from that file's syntax tree and run against the reference tokenizer.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path
from types import ModuleType

import pytest
import torch


def reference_file(name: str) -> Path:
    """Path of ``clip/<name>`` inside the installed ``openai-clip`` distribution (skips the test without it)."""
    try:
        dist = importlib.metadata.distribution("openai-clip")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the openai-clip distribution (reference implementation) is not installed")
    for record in dist.files or ():
        if record.as_posix() == f"clip/{name}":
            return Path(str(dist.locate_file(record)))
    pytest.skip(f"clip/{name} not found in the openai-clip distribution")


def _load_module(name: str) -> ModuleType:
    path = reference_file(f"{name}.py")
    module_name = f"_reference_clip_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def reference_model_module() -> ModuleType:
    """OpenAI's ``clip/model.py`` (``CLIP``, ``build_model``, ``convert_weights``)."""
    return _load_module("model")


@cache
def reference_tokenizer():
    """OpenAI's ``SimpleTokenizer`` over the distribution's own merges file."""
    module = _load_module("simple_tokenizer")
    return module.SimpleTokenizer(str(reference_file("bpe_simple_vocab_16e6.txt.gz")))


@cache
def reference_tokenize() -> Callable[..., torch.Tensor]:
    """OpenAI's ``clip.tokenize``, its source taken verbatim from the installed ``clip/clip.py``."""
    source = reference_file("clip.py").read_text(encoding="utf-8")
    tree = ast.parse(source)
    (func,) = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "tokenize"]
    module = ast.Module(body=[func], type_ignores=[])
    import typing

    import packaging.version  # the reference compares torch versions with it

    namespace = {
        "torch": torch,
        "packaging": packaging,
        "Union": typing.Union,  # the typing names the reference's annotations use
        "List": typing.List,  # noqa: UP006 - the reference source annotates with it
        "_tokenizer": reference_tokenizer(),
    }
    exec(compile(module, str(reference_file("clip.py")), "exec"), namespace)
    return namespace["tokenize"]


def build_reference_clip(
    embed_dim: int = 32,
    image_resolution: int = 32,
    vision_layers: int = 2,
    vision_width: int = 128,
    patch_size: int = 8,
    context_length: int = 77,
    vocab_size: int = 49408,
    text_width: int = 128,
    text_heads: int = 2,
    text_layers: int = 2,
) -> torch.nn.Module:
    """OpenAI's ``CLIP`` (ViT image tower; ``vision_width // 64`` heads, as OpenAI builds it)."""
    model_module = reference_model_module()
    return model_module.CLIP(
        embed_dim,
        image_resolution,
        vision_layers,
        vision_width,
        patch_size,
        context_length,
        vocab_size,
        text_width,
        text_heads,
        text_layers,
    )


def randomize_(model: torch.nn.Module, std: float = 0.2) -> torch.nn.Module:
    """Give every parameter (layer norms and biases included) random values, so no key can load by accident."""
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, std)
            if param.ndim == 0:  # logit scale: keep it a plausible temperature
                param.fill_(4.0 + float(torch.rand(())))
    return model


def use_plain_gelu_(model: torch.nn.Module) -> torch.nn.Module:
    """Swap the reference's QuickGELU for ``nn.GELU``: the activation LAION's open_clip models are trained with."""
    for block in [*model.visual.transformer.resblocks, *model.transformer.resblocks]:
        block.mlp.gelu = torch.nn.GELU()
    return model


def add_openai_release_buffers_(model: torch.nn.Module) -> torch.nn.Module:
    """Add the integer tensors OpenAI's released TorchScript files carry beside the weights.

    ``clip.load(..., jit=False)`` hands ``build_model`` a state dict with ``input_resolution``, ``context_length``
    and ``vocab_size`` entries (which it deletes); the reference Python model keeps them as plain ints.
    """
    values = {
        "input_resolution": model.visual.input_resolution,
        "context_length": model.context_length,
        "vocab_size": model.vocab_size,
    }
    for name, value in values.items():
        if name in vars(model):
            delattr(model, name)
        model.register_buffer(name, torch.tensor(value))
    return model
