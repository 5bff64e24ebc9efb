"""CLIP weights: read any supported checkpoint safely, map its keys onto our CLIP explicitly, check every key.

Supported files:

* OpenAI's released ``.pt`` files: TorchScript archives (a zip holding ``data.pkl``, ``code/`` and the tensor
  data). ``torch.jit.load`` would compile and run the archive's code and ``torch.load(weights_only=True)`` refuses
  the format, so :func:`read_torchscript_weights` reads ``data.pkl`` with a restricted unpickler instead: only
  tensor-rebuilding functions are allowed and the archive's ``__torch__.*`` classes become inert placeholders that
  just keep their attributes. The result is the state dict ``clip.load(..., jit=False)`` builds its model from.
* torch state dicts (``.pt``/``.pth``/``.bin``, possibly under ``"state_dict"`` or ``"model"``), read with
  ``torch.load(weights_only=True)``; open_clip's ``open_clip_pytorch_model.bin`` is one.
* safetensors files (open_clip's ``open_clip_model.safetensors``, timm's ``model.safetensors``, ours).

* Hugging Face ``transformers`` CLIP folders: ``model.safetensors`` (or ``pytorch_model.bin``) beside a
  ``config.json``, whose activation and head counts are checked against the model.

Key layouts (:func:`detect_format`): see :mod:`pevl.hub.key_maps`, which holds the whole mapping.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pevl.errors import PevlError, file_error, first_line
from pevl.hub.download import resolve_pretrained
from pevl.hub.hf import HF_HUB_PREFIX
from pevl.hub.key_maps import FORMATS, KEY_MAPS
from pevl.hub.torchscript import read_torchscript_weights
from pevl.models.clip import CLIP, CLIPConfig, TextConfig, VisionConfig, resize_pos_embed

__all__ = [
    "FORMATS",
    "KEY_MAPS",
    "check_state_dict",
    "convert_to_pevl",
    "detect_format",
    "infer_clip_config",
    "load_clip_state_dict",
    "load_clip_weights",
    "read_checkpoint",
    "read_torchscript_weights",
    "resolve_pretrained",
    "resolve_weights",
]

# ---- reading files -----------------------------------------------------------------------------------------------


def _is_torchscript(names: list[str]) -> bool:
    return any(name.endswith("/constants.pkl") or "/code/" in name for name in names)


def _is_safetensors(path: Path) -> bool:
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9:
        return False
    header_len = int.from_bytes(head[:8], "little")
    return head[8:9] == b"{" and 0 < header_len < path.stat().st_size


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        detail = first_line(err)
        if "global" in detail.lower():
            raise file_error(path, f"holds Python objects that are not loaded for safety ({detail})") from None
        raise file_error(path, f"not a readable PyTorch checkpoint ({detail})") from None
    except Exception as err:  # any parse failure of a file that is no checkpoint (text, random bytes, ...)
        raise file_error(path, f"not a readable PyTorch checkpoint ({type(err).__name__}: {first_line(err)})") from None


def _unwrap_state_dict(obj: Any, path: Path) -> dict[str, Tensor]:
    for _ in range(3):  # {"state_dict": {...}}, {"model": {...}}, nested at most a few levels
        if isinstance(obj, Mapping):
            # "model_state_dict": ActionCLIP's checkpoints (its "fusion_model_state_dict" is not CLIP)
            wrappers = ("state_dict", "model", "model_state_dict")
            inner = next((obj[k] for k in wrappers if isinstance(obj.get(k), Mapping)), None)
            if inner is not None and not any(isinstance(v, Tensor) for v in obj.values()):
                obj = inner
                continue
        break
    if not isinstance(obj, Mapping):
        raise file_error(path, f"holds a {type(obj).__name__}, not a state dict of tensors")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
    if not tensors:
        raise file_error(path, "holds no tensors")
    return tensors


def read_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """Read the raw tensors of any supported checkpoint file, safely.

    Args:
        path: A TorchScript archive (OpenAI's ``.pt``), a torch state dict (bare or under ``"state_dict"`` /
            ``"model"``) or a safetensors file.

    Returns:
        Tensors by name as stored (DataParallel ``module.`` prefixes removed), on the CPU.

    Raises:
        PevlError: Naming the file, when it is missing, unreadable or holds anything but tensors.
    """
    path = Path(path)
    if not path.exists():
        raise file_error(path, "no such file")
    if not path.is_file():
        raise file_error(path, "not a file")
    if path.stat().st_size == 0:
        raise file_error(path, "empty file")
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError) as err:
            raise file_error(path, f"corrupt zip archive ({err})") from None
        obj: Any = read_torchscript_weights(path) if _is_torchscript(names) else _torch_load(path)
    elif _is_safetensors(path):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            obj = load_file(path, device="cpu")
        except (SafetensorError, OSError, ValueError) as err:
            raise file_error(path, f"not a readable safetensors file ({first_line(err)})") from None
    else:
        obj = _torch_load(path)
    tensors = _unwrap_state_dict(obj, path)
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in tensors.items()}


# ---- layouts -----------------------------------------------------------------------------------------------------


def _pevl_prefix(keys: set[str]) -> str | None:
    """``""`` for our CLIP's own keys, ``"clip."`` (or another prefix) for a bigger model holding our CLIP."""
    for anchor in ("visual.patch_embed.weight", "text.pos_embed"):
        for key in sorted(keys, key=len):
            if key.endswith(anchor):
                return key[: -len(anchor)]
    return None


def detect_format(state_dict: Mapping[str, Tensor]) -> str:
    """Tell which key layout a state dict uses.

    Args:
        state_dict: Raw tensors from :func:`read_checkpoint`.

    Returns:
        One of :data:`FORMATS`: ``"openai"``, ``"open_clip"``, ``"transformers"``, ``"vificlip"``, ``"timm"``
        (image tower only) or ``"pevl"``.

    Raises:
        PevlError: For ResNet CLIPs and unknown layouts.
    """
    keys = set(state_dict)
    if "visual.attnpool.positional_embedding" in keys or "visual.layer1.0.conv1.weight" in keys:
        raise PevlError("this is a ResNet CLIP (RN50 ...); PeVL needs a ViT CLIP (ViT-B/32, ViT-B/16, ViT-L/14)")
    if any(k.startswith(("vision_model.", "text_model.")) for k in keys):
        return "transformers"
    if any(k.startswith(("image_encoder.transformer.", "text_encoder.transformer.")) for k in keys):
        return "vificlip"
    if _pevl_prefix(keys) is not None:
        return "pevl"
    openai_like = "visual.conv1.weight" in keys or "token_embedding.weight" in keys
    if openai_like or any(k.startswith(("visual.transformer.resblocks.", "text.transformer.resblocks.")) for k in keys):
        return "openai" if keys & {"input_resolution", "context_length", "vocab_size"} else "open_clip"
    if "patch_embed.proj.weight" in keys and any(k.startswith("blocks.") for k in keys):
        return "timm"
    first = ", ".join(sorted(keys)[:4])
    raise PevlError(f"unrecognised checkpoint layout (not {', '.join(FORMATS)} CLIP weights; keys: {first})")


def _convert(state_dict: Mapping[str, Tensor], fmt: str | None) -> tuple[dict[str, Tensor], dict[str, str], str]:
    """Rename to our keys; also returns our key -> the checkpoint's key, and the layout used."""
    fmt = fmt or detect_format(state_dict)
    if fmt not in KEY_MAPS:
        raise PevlError(f"unknown checkpoint layout {fmt!r}; choose one of {', '.join(FORMATS)}")
    key_map = KEY_MAPS[fmt]
    if key_map.prepare is not None:
        state_dict = key_map.prepare(state_dict)
    prefix = (_pevl_prefix(set(state_dict)) or "") if fmt == "pevl" else ""
    out: dict[str, Tensor] = {}
    sources: dict[str, str] = {}
    for key, value in state_dict.items():
        if prefix:
            if not key.startswith(prefix):
                continue  # the rest of a bigger model (a PeVL checkpoint's adapters ...)
            ours: str | None = key[len(prefix) :]
        else:
            ours = key_map.to_pevl(key)
        if ours is None:
            if fmt == "timm" and key == "head.bias" and bool(value.detach().float().abs().max() > 0):
                raise PevlError("'head.bias' is not zero: this timm model's head is not a CLIP projection")
            continue
        if ours in out:
            raise PevlError(f"keys '{sources[ours]}' and '{key}' both map to '{ours}'")
        convert = key_map.values.get(key)
        out[ours] = convert(value) if convert is not None else value
        sources[ours] = key
    return out, sources, fmt


def convert_to_pevl(state_dict: Mapping[str, Tensor], fmt: str | None = None) -> dict[str, Tensor]:
    """Rename a checkpoint's tensors to our CLIP's parameter names, through the explicit tables of this module.

    Args:
        state_dict: Raw tensors from :func:`read_checkpoint`.
        fmt: The layout; detected when ``None``.

    Returns:
        Tensors under our names. Dropped: OpenAI's integer entries, attention masks, timm's zero ``head.bias``.
        Keys the layout does not know are kept under their own names (so a strict load reports them).
    """
    return _convert(state_dict, fmt)[0]


def _count_blocks(state: Mapping[str, Tensor], stack: str) -> int:
    indices = {k[len(stack) + 1 :].partition(".")[0] for k in state if k.startswith(stack + ".")}
    return len({i for i in indices if i.isdigit()})


def infer_clip_config(state_dict: Mapping[str, Tensor], quick_gelu: bool | None = None) -> CLIPConfig:
    """Read the CLIP architecture off the weights, like OpenAI's ``build_model``.

    Head counts are not stored in the weights: like OpenAI, they are taken as ``width // 64``.

    Args:
        state_dict: Tensors in any supported layout.
        quick_gelu: The MLP activation. ``None`` picks by layout: QuickGELU for ``"openai"``, ``"transformers"``
            (OpenAI's ``openai/clip-vit-*`` repositories; a folder's ``config.json`` says otherwise where it
            does), ``"vificlip"`` and ``"pevl"`` (whose default it is), plain GELU for ``"open_clip"`` and
            ``"timm"`` (LAION's models; their ``-quickgelu`` variants and re-saved OpenAI weights, such as
            ActionCLIP's, need ``quick_gelu=True``).

    Returns:
        The configuration (without a text tower in the file, as for ``"timm"``, the default text tower).

    Raises:
        PevlError: When a key the architecture is read from is missing.
    """
    state, _, fmt = _convert(state_dict, None)
    if quick_gelu is None:
        quick_gelu = fmt in ("openai", "transformers", "vificlip", "pevl")
    try:
        patch = state["visual.patch_embed.weight"]
        width = patch.shape[0]
        grid = math.isqrt(state["visual.pos_embed"].shape[0] - 1)
        vision = VisionConfig(
            image_size=patch.shape[-1] * grid,
            patch_size=patch.shape[-1],
            width=width,
            layers=_count_blocks(state, "visual.blocks"),
            heads=max(1, width // 64),
            mlp_ratio=state["visual.blocks.0.mlp.fc1.weight"].shape[0] / width,
        )
        embed_dim = state["visual.proj"].shape[1]
        text = TextConfig()
        if any(k.startswith("text.") for k in state):
            text_width = state["text.ln_final.weight"].shape[0]
            text = TextConfig(
                context_length=state["text.pos_embed"].shape[0],
                vocab_size=state["text.token_embedding.weight"].shape[0],
                width=text_width,
                layers=_count_blocks(state, "text.blocks"),
                heads=max(1, text_width // 64),
                mlp_ratio=state["text.blocks.0.mlp.fc1.weight"].shape[0] / text_width,
            )
    except KeyError as err:
        raise PevlError(f"cannot infer the CLIP architecture: key {err} is missing") from None
    return CLIPConfig(embed_dim=embed_dim, vision=vision, text=text, quick_gelu=quick_gelu)


# ---- loading -----------------------------------------------------------------------------------------------------


def _shape(t: Tensor) -> str:
    return str(list(t.shape))


def check_state_dict(
    expected: Mapping[str, Tensor],
    found: Mapping[str, Tensor],
    sources: Mapping[str, str] | None = None,
    fmt: str = "pevl",
) -> None:
    """Assert that ``found`` has exactly the keys of ``expected``, each with the same shape.

    Args:
        expected: The model's ``state_dict()``.
        found: The converted checkpoint.
        sources: Our key -> the checkpoint's own key, to name both in the error.
        fmt: The checkpoint's layout, to name the key it would have in that layout when it is missing.

    Raises:
        PevlError: Naming the first missing or mis-shaped key (in the model's order) with both shapes, else the
            first unexpected key.
    """
    sources = sources or {}

    def name(key: str) -> str:
        theirs = sources.get(key) or KEY_MAPS[fmt].from_pevl(key)
        return f"'{key}'" + (f" ({fmt} name '{theirs}')" if theirs and theirs != key else "")

    for key, ref in expected.items():
        if key not in found:
            have = sum(k in found for k in expected)
            raise PevlError(
                f"missing key {name(key)} of shape {_shape(ref)}; the checkpoint has {have} of the model's "
                f"{len(expected)} keys"
            )
        if found[key].shape != ref.shape:
            raise PevlError(
                f"key {name(key)} has shape {_shape(found[key])} in the checkpoint but {_shape(ref)} in the model"
            )
    extra = [k for k in found if k not in expected]
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise PevlError(f"unexpected key {name(extra[0])} of shape {_shape(found[extra[0]])}, not in the model{more}")


def _fit_positions(state: dict[str, Tensor], expected: Mapping[str, Tensor]) -> None:
    """Resize the image position embedding to the model's patch grid, cut the text one to its context."""
    pos, want = state.get("visual.pos_embed"), expected.get("visual.pos_embed")
    if pos is not None and want is not None and pos.shape != want.shape and pos.shape[-1] == want.shape[-1]:
        state["visual.pos_embed"] = resize_pos_embed(pos, math.isqrt(want.shape[0] - 1))
    pos, want = state.get("text.pos_embed"), expected.get("text.pos_embed")
    if pos is not None and want is not None and pos.shape[0] > want.shape[0] and pos.shape[1] == want.shape[1]:
        state["text.pos_embed"] = pos[: want.shape[0]]


def read_transformers_config(path: Path) -> dict[str, Any] | None:
    """The ``config.json`` beside a Hugging Face ``transformers`` weights file, or ``None`` when there is none.

    Raises:
        PevlError: Naming the file when it exists but is not a JSON object.
    """
    config = path.parent / "config.json"
    if not config.is_file():
        return None
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise file_error(config, f"not a readable JSON file ({first_line(err)})") from None
    if not isinstance(data, dict):
        raise file_error(config, "not a JSON object")
    return data


def _check_transformers_config(model: CLIP, config: Mapping[str, Any], where: Path) -> None:
    """Check the activation and head counts a ``transformers`` ``config.json`` records against the model."""
    for tower, ours in (("vision_config", model.cfg.vision), ("text_config", model.cfg.text)):
        sub = config.get(tower)
        if not isinstance(sub, Mapping):
            continue
        act = sub.get("hidden_act")
        if act is not None and (act == "quick_gelu") != model.cfg.quick_gelu:
            want = "quick_gelu=True" if act == "quick_gelu" else "quick_gelu=False"
            raise file_error(where, f"{tower}.hidden_act is {act!r}: the model needs {want}")
        heads = sub.get("num_attention_heads")
        if heads is not None and heads != ours.heads:
            raise file_error(where, f"{tower}.num_attention_heads is {heads} but the model has {ours.heads} heads")


def load_clip_state_dict(
    model: CLIP,
    raw: Mapping[str, Tensor],
    strict_arch: bool = True,
    *,
    vision_only: bool = False,
    base: Mapping[str, Tensor] | None = None,
) -> CLIPConfig:
    """Load tensors of any supported layout into our CLIP, checking every key and shape.

    Args:
        model: Our CLIP (possibly on the ``meta`` device: the tensors are then assigned).
        raw: A state dict as read (:func:`read_checkpoint`) or as a framework returns it, e.g.
            ``transformers.CLIPModel(...).state_dict()``.
        strict_arch: See :func:`load_clip_weights`.
        vision_only: Load only the image tower.
        base: Tensors of the CLIP a partial checkpoint was fine-tuned from, in any layout: each of our keys
            the checkpoint lacks is taken from it (ViFi-CLIP stores no token embedding, it is the base CLIP's).

    Returns:
        The architecture of the checkpoint.

    Raises:
        PevlError: The first missing, unexpected or mis-shaped key (with both shapes), or a wrong activation.
    """
    state, sources, fmt = _convert(raw, None)
    if base is not None:
        base_state, _, base_fmt = _convert(base, None)
        for key, value in base_state.items():
            if key not in state:
                state[key] = value
                sources[key] = f"base checkpoint ({base_fmt}) {KEY_MAPS[base_fmt].from_pevl(key) or key}"
    if fmt == "timm" and not vision_only:
        raise PevlError("holds only an image tower (timm layout); pass vision_only=True to load just that")
    if strict_arch and fmt == "openai" and not model.cfg.quick_gelu:
        raise PevlError("OpenAI's weights were trained with QuickGELU but the model uses GELU (quick_gelu=False)")
    if fmt == "vificlip" and "text.token_embedding.weight" not in state and not vision_only:
        raise PevlError(
            "a ViFi-CLIP checkpoint stores no token embedding (it is the base CLIP's): pass the CLIP it was "
            "fine-tuned from as base (e.g. base='ViT-B/16'), or vision_only=True"
        )
    try:
        found: CLIPConfig | None = infer_clip_config(state, model.cfg.quick_gelu)
    except PevlError:
        found = None  # an incomplete file: the key check below names what is missing
    target: torch.nn.Module = model.visual if vision_only else model
    prefix = "visual." if vision_only else ""
    if vision_only:
        state = {k: v for k, v in state.items() if k.startswith(prefix)}
    expected = {prefix + k: v for k, v in target.state_dict().items()}
    if not strict_arch:
        _fit_positions(state, expected)
    check_state_dict(expected, state, sources, fmt)
    local = {k[len(prefix) :]: v for k, v in state.items()}
    with torch.no_grad():
        if any(t.is_meta for t in expected.values()):
            dtypes = {k[len(prefix) :]: v.dtype for k, v in expected.items()}
            target.load_state_dict({k: v.to(dtypes[k]).contiguous() for k, v in local.items()}, assign=True)
        else:
            target.load_state_dict(local)
    if found is None:
        return model.cfg
    vision = dataclasses.replace(found.vision, heads=model.cfg.vision.heads)
    text = dataclasses.replace(found.text, heads=model.cfg.text.heads) if fmt != "timm" else model.cfg.text
    return dataclasses.replace(found, vision=vision, text=text)


def load_clip_weights(
    model: CLIP,
    path: str | Path,
    strict_arch: bool = True,
    *,
    vision_only: bool = False,
    base: str | Path | None = None,
) -> CLIPConfig:
    """Load a CLIP checkpoint into our :class:`~pevl.models.clip.CLIP`, checking every key and shape.

    Works on a model built on the ``meta`` device too (the tensors are then assigned instead of copied);
    values are cast to the model's dtype, and parameters keep their ``requires_grad``.

    Args:
        model: Our CLIP.
        path: A checkpoint file, a Hugging Face ``transformers`` folder (``model.safetensors`` or
            ``pytorch_model.bin`` beside ``config.json``), or an architecture name fetched by
            ``pevl download-weights`` (``"ViT-B/16"``).
        strict_arch: Require the checkpoint's architecture to be the model's: every shape equal, and QuickGELU
            for OpenAI's own files (and what a ``transformers`` ``config.json`` records). ``False`` resizes the
            position embeddings to the model's patch grid and context length (bicubic / cut) and skips the
            activation checks; the key set must match either way.
        vision_only: Load only the image tower (``model.visual``): the only choice for timm checkpoints.
        base: The CLIP a partial checkpoint was fine-tuned from (a file or an architecture name), for the keys
            the checkpoint lacks (ViFi-CLIP's token embedding).

    Returns:
        The architecture of the checkpoint (head counts, which weights do not record, and the activation are
        the model's).

    Raises:
        PevlError: Naming the file and the first missing, unexpected or mis-shaped key (with both shapes).
    """
    path = resolve_weights(path)
    raw = read_checkpoint(path)
    base_raw = read_checkpoint(resolve_weights(base)) if base is not None else None
    try:
        if strict_arch and detect_format(raw) == "transformers":
            config = read_transformers_config(path)
            if config is not None:
                _check_transformers_config(model, config, path.parent / "config.json")
        return load_clip_state_dict(model, raw, strict_arch, vision_only=vision_only, base=base_raw)
    except PevlError as err:
        message = str(err)
        raise (err if message.startswith(str(path)) else file_error(path, message)) from None


# The weights file of a Hugging Face model folder, in transformers' order of preference.
TRANSFORMERS_WEIGHT_FILES: tuple[str, ...] = ("model.safetensors", "pytorch_model.bin")


def resolve_weights(name_or_path: str | Path) -> Path:
    """The weights file meant by a file, a Hugging Face model folder, ``hf-hub:org/name`` or an architecture name.

    ``hf-hub:`` repositories are fetched with ``huggingface_hub`` (its cache, ``HF_HUB_OFFLINE`` honoured).
    """
    text = str(name_or_path)
    if text.startswith(HF_HUB_PREFIX):
        from pevl.hub.hf import hub_weights_folder

        path = hub_weights_folder(text[len(HF_HUB_PREFIX) :], TRANSFORMERS_WEIGHT_FILES)
    else:
        path = Path(text).expanduser()
    if not path.is_dir():
        return resolve_pretrained(text)
    for name in TRANSFORMERS_WEIGHT_FILES:
        if (path / name).is_file():
            return path / name
    raise file_error(path, f"a folder without {' or '.join(TRANSFORMERS_WEIGHT_FILES)}")
