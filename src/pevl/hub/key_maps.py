"""Checkpoint key layouts: every name a supported CLIP checkpoint uses, mapped onto our CLIP's names.

One :class:`KeyMap` per layout (:data:`KEY_MAPS`); :mod:`pevl.hub.weights` reads files and applies these tables,
and nothing is renamed anywhere else. Layouts:

* ``"openai"``: OpenAI's ``model.py`` names plus the ``input_resolution`` / ``context_length`` / ``vocab_size``
  integers their release files carry. ActionCLIP's ``model_state_dict`` is this layout without the integers.
* ``"open_clip"``: the same names without those integers, and open_clip's ``CustomTextCLIP`` ``text.*`` variant.
* ``"transformers"``: Hugging Face ``transformers``' ``CLIPModel`` (``vision_model.*``, ``text_model.*``,
  ``visual_projection``, ``text_projection``; the ``openai/clip-vit-*`` repositories). Its separate query, key
  and value projections are fused into our ``qkv``; its projection ``Linear`` weights are transposed.
* ``"vificlip"``: ViFi-CLIP's video-finetuned CLIP (OpenAI names under ``image_encoder.`` and
  ``text_encoder.``; its class-prompt buffers are dropped). It stores no token embedding: that is the base CLIP's.
* ``"timm"``: timm's ``VisionTransformer`` (``vit_*_clip_*``), the image tower only.
* ``"pevl"``: our own names, also found under ``clip.`` in a PeVL checkpoint.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from pevl.errors import PevlError


def _layers(pairs: Mapping[str, str]) -> dict[str, str]:
    """Expand ``{their layer: our layer}`` to the layer's two tensors, ``.weight`` and ``.bias``."""
    return {f"{theirs}.{t}": f"{ours}.{t}" for theirs, ours in pairs.items() for t in ("weight", "bias")}


# OpenAI (and open_clip's OpenAI-style CLIP) name -> our name, outside the transformer blocks.
OPENAI_KEYS: dict[str, str] = {
    "visual.conv1.weight": "visual.patch_embed.weight",
    "visual.class_embedding": "visual.cls_token",
    "visual.positional_embedding": "visual.pos_embed",
    "visual.proj": "visual.proj",
    "token_embedding.weight": "text.token_embedding.weight",
    "positional_embedding": "text.pos_embed",
    "text_projection": "text.proj",
    "logit_scale": "logit_scale",
    **_layers({"visual.ln_pre": "visual.ln_pre", "visual.ln_post": "visual.ln_post", "ln_final": "text.ln_final"}),
}
# Transformer stacks: their name -> ours; each is followed by ``.<block index>.<block key>``.
OPENAI_STACKS: dict[str, str] = {
    "visual.transformer.resblocks": "visual.blocks",
    "transformer.resblocks": "text.blocks",
}
# Inside one residual block.
OPENAI_BLOCK_KEYS: dict[str, str] = {
    "attn.in_proj_weight": "attn.qkv.weight",
    "attn.in_proj_bias": "attn.qkv.bias",
    **_layers({"ln_1": "ln_1", "attn.out_proj": "attn.proj", "ln_2": "ln_2"}),
    **_layers({"mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}),
}
# Entries that are not weights: OpenAI's integers, and the causal masks (we build ours on the fly).
OPENAI_DROPPED: frozenset[str] = frozenset({"input_resolution", "context_length", "vocab_size", "attn_mask"})
OPENAI_DROPPED_BLOCK_KEYS: frozenset[str] = frozenset({"attn_mask"})

# open_clip's CustomTextCLIP keeps its text tower under ``text.`` (open_clip's ``TextTransformer`` names).
OPEN_CLIP_CUSTOM_TEXT_KEYS: dict[str, str] = {
    "text.token_embedding.weight": "text.token_embedding.weight",
    "text.positional_embedding": "text.pos_embed",
    "text.text_projection": "text.proj",
    **_layers({"text.ln_final": "text.ln_final"}),
}
OPEN_CLIP_CUSTOM_TEXT_STACKS: dict[str, str] = {"text.transformer.resblocks": "text.blocks"}
OPEN_CLIP_DROPPED: frozenset[str] = OPENAI_DROPPED | {"text.attn_mask"}

# timm's VisionTransformer (``vit_*_clip_*``): the image tower alone.
TIMM_KEYS: dict[str, str] = {
    "patch_embed.proj.weight": "visual.patch_embed.weight",
    "cls_token": "visual.cls_token",  # [1, 1, D] -> [D]
    "pos_embed": "visual.pos_embed",  # [1, 1 + N, D] -> [1 + N, D]
    "head.weight": "visual.proj",  # a Linear [E, D] -> the projection matrix [D, E]
    **_layers({"norm_pre": "visual.ln_pre", "norm": "visual.ln_post"}),
}
TIMM_STACKS: dict[str, str] = {"blocks": "visual.blocks"}
TIMM_BLOCK_KEYS: dict[str, str] = {
    **_layers({"norm1": "ln_1", "attn.qkv": "attn.qkv", "attn.proj": "attn.proj", "norm2": "ln_2"}),
    **_layers({"mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}),
}
TIMM_DROPPED: frozenset[str] = frozenset({"head.bias"})  # zeros for CLIP towers (checked): CLIP's projection has none


# Hugging Face transformers' CLIPModel.
TRANSFORMERS_KEYS: dict[str, str] = {
    "vision_model.embeddings.patch_embedding.weight": "visual.patch_embed.weight",
    "vision_model.embeddings.class_embedding": "visual.cls_token",
    "vision_model.embeddings.position_embedding.weight": "visual.pos_embed",
    "visual_projection.weight": "visual.proj",  # a Linear [E, D] without bias -> the matrix [D, E]
    "text_model.embeddings.token_embedding.weight": "text.token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "text.pos_embed",
    "text_projection.weight": "text.proj",  # [E, W] -> [W, E]
    "logit_scale": "logit_scale",
    **_layers(
        {
            "vision_model.pre_layrnorm": "visual.ln_pre",  # sic: transformers' own spelling
            "vision_model.post_layernorm": "visual.ln_post",
            "text_model.final_layer_norm": "text.ln_final",
        }
    ),
}
TRANSFORMERS_STACKS: dict[str, str] = {
    "vision_model.encoder.layers": "visual.blocks",
    "text_model.encoder.layers": "text.blocks",
}
# The query, key and value projections, fused by _fuse_transformers_qkv into one entry under this name.
TRANSFORMERS_QKV = "self_attn.{q,k,v}_proj"
TRANSFORMERS_BLOCK_KEYS: dict[str, str] = {
    f"{TRANSFORMERS_QKV}.weight": "attn.qkv.weight",
    f"{TRANSFORMERS_QKV}.bias": "attn.qkv.bias",
    **_layers({"layer_norm1": "ln_1", "self_attn.out_proj": "attn.proj", "layer_norm2": "ln_2"}),
    **_layers({"mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}),
}
# Index buffers of the embeddings (older transformers versions save them).
TRANSFORMERS_DROPPED: frozenset[str] = frozenset(
    {"vision_model.embeddings.position_ids", "text_model.embeddings.position_ids"}
)
_QKV_KEY = re.compile(r"^(?P<block>.+)\.self_attn\.(?P<which>[qkv])_proj\.(?P<kind>weight|bias)$")


def _fuse_transformers_qkv(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Concatenate each block's ``q_proj``, ``k_proj`` and ``v_proj`` (in that order) into one fused entry.

    Raises:
        PevlError: When a block has some of the three projections but not all.
    """
    out: dict[str, Tensor] = {}
    parts: dict[tuple[str, str], dict[str, Tensor]] = {}
    for key, value in state.items():
        match = _QKV_KEY.match(key)
        if match is None:
            out[key] = value
        else:
            parts.setdefault((match["block"], match["kind"]), {})[match["which"]] = value
    for (block, kind), found in parts.items():
        missing = [w for w in "qkv" if w not in found]
        if missing:
            key = f"{block}.self_attn.{missing[0]}_proj.{kind}"
            raise PevlError(f"missing key '{key}' (query, key and value projections go together)")
        out[f"{block}.{TRANSFORMERS_QKV}.{kind}"] = torch.cat([found["q"], found["k"], found["v"]], dim=0)
    return out


# ViFi-CLIP: OpenAI's names under image_encoder. / text_encoder.
VIFICLIP_KEYS: dict[str, str] = {
    **{f"image_encoder.{k.removeprefix('visual.')}": v for k, v in OPENAI_KEYS.items() if k.startswith("visual.")},
    "text_encoder.positional_embedding": "text.pos_embed",
    "text_encoder.text_projection": "text.proj",
    "logit_scale": "logit_scale",
    **_layers({"text_encoder.ln_final": "text.ln_final"}),
}
VIFICLIP_STACKS: dict[str, str] = {
    "image_encoder.transformer.resblocks": "visual.blocks",
    "text_encoder.transformer.resblocks": "text.blocks",
}
VIFICLIP_PREFIX_DROPPED = ("prompt_learner.",)  # the class prompts' token embeddings, tied to its label set


@dataclasses.dataclass(frozen=True)
class KeyMap:
    """One checkpoint layout: fixed keys, block stacks, keys to drop and value conversions, all explicit."""

    keys: Mapping[str, str]
    stacks: Mapping[str, str]
    block_keys: Mapping[str, str]
    dropped: frozenset[str] = frozenset()
    dropped_block_keys: frozenset[str] = frozenset()
    values: Mapping[str, Callable[[Tensor], Tensor]] = dataclasses.field(default_factory=dict)  # by their name
    dropped_prefixes: tuple[str, ...] = ()
    prepare: Callable[[Mapping[str, Tensor]], dict[str, Tensor]] | None = None  # runs before renaming

    def to_pevl(self, key: str) -> str | None:
        """Our name for ``key``; ``None`` when it is dropped; ``key`` unchanged when this layout does not know it."""
        if key in self.dropped or (self.dropped_prefixes and key.startswith(self.dropped_prefixes)):
            return None
        if key in self.keys:
            return self.keys[key]
        for stack, ours in self.stacks.items():
            if key.startswith(stack + "."):
                index, _, rest = key[len(stack) + 1 :].partition(".")
                if index.isdigit():
                    if rest in self.dropped_block_keys:
                        return None
                    if rest in self.block_keys:
                        return f"{ours}.{index}.{self.block_keys[rest]}"
        return key

    def from_pevl(self, ours: str) -> str | None:
        """The name this layout gives our key ``ours`` (``None`` if it has none)."""
        for key, value in self.keys.items():
            if value == ours:
                return key
        for stack, our_stack in self.stacks.items():
            if ours.startswith(our_stack + "."):
                index, _, rest = ours[len(our_stack) + 1 :].partition(".")
                for key, value in self.block_keys.items():
                    if value == rest:
                        return f"{stack}.{index}.{key}"
        return None


def _timm_cls_token(v: Tensor) -> Tensor:
    return v.reshape(v.shape[-1])


def _timm_pos_embed(v: Tensor) -> Tensor:
    return v.reshape(v.shape[-2], v.shape[-1])


def _transpose(v: Tensor) -> Tensor:
    return v.t().contiguous()


KEY_MAPS: dict[str, KeyMap] = {
    "openai": KeyMap(OPENAI_KEYS, OPENAI_STACKS, OPENAI_BLOCK_KEYS, OPENAI_DROPPED, OPENAI_DROPPED_BLOCK_KEYS),
    "open_clip": KeyMap(
        {**OPENAI_KEYS, **OPEN_CLIP_CUSTOM_TEXT_KEYS},
        {**OPENAI_STACKS, **OPEN_CLIP_CUSTOM_TEXT_STACKS},
        OPENAI_BLOCK_KEYS,
        OPEN_CLIP_DROPPED,
        OPENAI_DROPPED_BLOCK_KEYS,
    ),
    "transformers": KeyMap(
        TRANSFORMERS_KEYS,
        TRANSFORMERS_STACKS,
        TRANSFORMERS_BLOCK_KEYS,
        TRANSFORMERS_DROPPED,
        values={"visual_projection.weight": _transpose, "text_projection.weight": _transpose},
        prepare=_fuse_transformers_qkv,
    ),
    "vificlip": KeyMap(
        VIFICLIP_KEYS,
        VIFICLIP_STACKS,
        OPENAI_BLOCK_KEYS,
        OPENAI_DROPPED,
        OPENAI_DROPPED_BLOCK_KEYS,
        dropped_prefixes=VIFICLIP_PREFIX_DROPPED,
    ),
    "timm": KeyMap(
        TIMM_KEYS,
        TIMM_STACKS,
        TIMM_BLOCK_KEYS,
        TIMM_DROPPED,
        values={"cls_token": _timm_cls_token, "pos_embed": _timm_pos_embed, "head.weight": _transpose},
    ),
    "pevl": KeyMap({}, {}, {}),
}
FORMATS: tuple[str, ...] = tuple(KEY_MAPS)
