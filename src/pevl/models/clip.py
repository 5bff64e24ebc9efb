"""A compact CLIP (ViT image tower + causal text transformer), numerically equal to OpenAI's.

Parameter names are our own (``blocks``, ``qkv``, ``fc1`` ...); :mod:`pevl.hub.weights` maps OpenAI and
open_clip checkpoints onto them key by key. Attention goes through ``F.scaled_dot_product_attention``;
``need_weights=True`` switches to an explicit path that also returns the attention probabilities.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class VisionConfig:
    """The ViT image tower."""

    image_size: int = 224  # input resolution the position embedding is trained for
    patch_size: int = 16  # side of a square patch (ViT-B/16: 16)
    width: int = 768  # token width D
    layers: int = 12  # transformer blocks
    heads: int = 12  # attention heads
    mlp_ratio: float = 4.0  # MLP hidden width / D

    @property
    def grid_size(self) -> int:
        """Patches per side at ``image_size``."""
        return self.image_size // self.patch_size


@dataclass(frozen=True)
class TextConfig:
    """The causal text transformer."""

    context_length: int = 77  # tokens per text, start and end tokens included
    vocab_size: int = 49408  # BPE vocabulary of OpenAI's tokenizer
    width: int = 512  # token width
    layers: int = 12  # transformer blocks
    heads: int = 8  # attention heads
    mlp_ratio: float = 4.0  # MLP hidden width / width


@dataclass(frozen=True)
class CLIPConfig:
    """A whole CLIP model: both towers and the joint embedding width E."""

    embed_dim: int = 512  # joint image-text embedding width E
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    quick_gelu: bool = True  # OpenAI's weights were trained with QuickGELU


CLIP_ARCHITECTURES: dict[str, CLIPConfig] = {
    "ViT-B/32": CLIPConfig(512, VisionConfig(224, 32, 768, 12, 12), TextConfig(77, 49408, 512, 12, 8)),
    "ViT-B/16": CLIPConfig(512, VisionConfig(224, 16, 768, 12, 12), TextConfig(77, 49408, 512, 12, 8)),
    "ViT-L/14": CLIPConfig(768, VisionConfig(224, 14, 1024, 24, 16), TextConfig(77, 49408, 768, 12, 12)),
    "ViT-L/14@336px": CLIPConfig(768, VisionConfig(336, 14, 1024, 24, 16), TextConfig(77, 49408, 768, 12, 12)),
    # Tiny architectures for tests: same code paths, a few thousand times cheaper.
    "tiny": CLIPConfig(32, VisionConfig(32, 8, 64, 2, 2), TextConfig(77, 49408, 32, 2, 2)),
    "tiny-64px": CLIPConfig(32, VisionConfig(64, 16, 64, 2, 2), TextConfig(77, 49408, 32, 2, 2)),
}


class QuickGELU(nn.Module):
    """``x * sigmoid(1.702 x)``, the activation OpenAI's CLIP weights were trained with."""

    def forward(self, x: Tensor) -> Tensor:
        """Apply the activation elementwise."""
        return x * torch.sigmoid(1.702 * x)


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the input dtype (as in OpenAI's CLIP), result cast back."""

    def forward(self, x: Tensor) -> Tensor:
        """Normalise the last axis of ``x``."""
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).to(x.dtype)


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection.

    Args:
        dim: Token width.
        heads: Number of heads; ``dim`` must be divisible by it.
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, x: Tensor, causal: bool = False, need_weights: bool = False, key_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Attend over the second axis of ``x``.

        Args:
            x: Tokens ``[B, L, D]``.
            causal: Mask future tokens (text transformer).
            need_weights: Use the explicit path and return the probabilities ``[B, heads, L, L]``.
            key_mask: ``[B, L]`` bool, true for the tokens that may be attended to (a missing joint or frame is
                false). A sequence with no true key attends to all its tokens instead: its outputs are then
                meaningless, and callers never read them.

        Returns:
            The projected output ``[B, L, D]`` and the attention probabilities (or ``None``).
        """
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        mask = None if key_mask is None else attention_key_mask(key_mask)
        if causal and (need_weights or mask is not None):
            past = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
            mask = past if mask is None else mask & past
        if need_weights:
            logits = (q * (q.shape[-1] ** -0.5)) @ k.transpose(-2, -1)
            if mask is not None:
                logits = logits.masked_fill(~mask, float("-inf"))
            probs = logits.softmax(dim=-1)
            out = probs @ v
        else:
            probs = None
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None)
        return self.proj(out.transpose(1, 2).reshape(b, n, d)), probs


def attention_key_mask(key_mask: Tensor) -> Tensor:
    """``[B, L]`` valid keys -> the ``[B, 1, 1, L]`` boolean mask attention takes (true = may be attended to).

    Rows without any valid key are opened to every key, so the softmax stays finite; their outputs are not used.
    """
    key_mask = key_mask.to(torch.bool)
    key_mask = key_mask | ~key_mask.any(dim=-1, keepdim=True)
    return key_mask[:, None, None, :]


class MLP(nn.Module):
    """The transformer feed-forward: ``fc1 -> act -> fc2``."""

    def __init__(self, dim: int, hidden: int, quick_gelu: bool = True) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = QuickGELU() if quick_gelu else nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the MLP to the last axis of ``x``."""
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """A pre-norm transformer block: ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``.

    The PeVL encoders do not call :meth:`forward`; they run ``ln_1``, ``attn``, ``ln_2`` and ``mlp`` themselves
    with adapters in between, which is why the parts are public.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, quick_gelu: bool = True) -> None:
        super().__init__()
        self.ln_1 = LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.ln_2 = LayerNorm(dim)
        self.mlp = MLP(dim, int(dim * mlp_ratio), quick_gelu)

    def forward(
        self, x: Tensor, causal: bool = False, need_weights: bool = False, key_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Run the block on ``x`` ``[B, L, D]``; returns the output and the attention probabilities (or ``None``)."""
        attn_out, probs = self.attn(self.ln_1(x), causal=causal, need_weights=need_weights, key_mask=key_mask)
        x = x + attn_out
        x = x + self.mlp(self.ln_2(x))
        return x, probs


def resize_pos_embed(pos_embed: Tensor, grid_size: int) -> Tensor:
    """Bicubically resize a ViT position embedding ``[1 + g*g, D]`` to another patch grid.

    Args:
        pos_embed: The [cls] position followed by the ``g x g`` patch positions.
        grid_size: The new patches per side.

    Returns:
        ``[1 + grid_size**2, D]``, unchanged when the grid already matches.
    """
    old = int(math.isqrt(pos_embed.shape[0] - 1))
    if old == grid_size:
        return pos_embed
    cls_pos, patch_pos = pos_embed[:1], pos_embed[1:]
    patch_pos = patch_pos.reshape(1, old, old, -1).permute(0, 3, 1, 2).float()
    patch_pos = F.interpolate(patch_pos, size=(grid_size, grid_size), mode="bicubic", align_corners=False)
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(grid_size * grid_size, -1).to(pos_embed.dtype)
    return torch.cat([cls_pos, patch_pos], dim=0)


def resize_temporal_embed(embed: Tensor, num_frames: int) -> Tensor:
    """Linearly resample a temporal position embedding ``[T0, D]`` to ``[num_frames, D]``.

    Lets a model trained on T0 frames run on clips of another length (e.g. single frames for figures).

    Args:
        embed: The learned embedding, one row per frame.
        num_frames: The wanted number of rows.

    Returns:
        ``embed`` itself when the length already matches, else the resampled rows.
    """
    if embed.shape[0] == num_frames:
        return embed
    resized = F.interpolate(embed.t().unsqueeze(0).float(), size=num_frames, mode="linear", align_corners=True)
    return resized.squeeze(0).t().to(embed.dtype)


class VisionTransformer(nn.Module):
    """CLIP's image tower: patchify, [cls] + position embedding, ``ln_pre``, blocks, ``ln_post``, projection."""

    def __init__(self, cfg: VisionConfig, embed_dim: int, quick_gelu: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        width = cfg.width
        scale = width**-0.5
        self.patch_embed = nn.Conv2d(3, width, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.cls_token = nn.Parameter(scale * torch.randn(width))
        self.pos_embed = nn.Parameter(scale * torch.randn(cfg.grid_size**2 + 1, width))
        self.ln_pre = LayerNorm(width)
        self.blocks = nn.ModuleList(Block(width, cfg.heads, cfg.mlp_ratio, quick_gelu) for _ in range(cfg.layers))
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, embed_dim))

    def embed(self, images: Tensor, extra_cls: Tensor | None = None) -> Tensor:
        """Turn images into the token sequence the blocks take.

        Args:
            images: ``[B, 3, H, W]``, CLIP-normalised; H and W multiples of the patch size.
            extra_cls: Optional ``[B, D]`` added to the [cls] token before ``ln_pre`` (the video encoder's
                temporal position embedding).

        Returns:
            Tokens ``[B, 1 + N, D]`` after ``ln_pre``.
        """
        x = self.patch_embed(images.to(self.patch_embed.weight.dtype))
        grid_h, grid_w = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)
        cls = self.cls_token.to(x.dtype).expand(x.shape[0], 1, -1)
        if extra_cls is not None:
            cls = cls + extra_cls.to(x.dtype).unsqueeze(1)
        x = torch.cat([cls, x], dim=1)
        if grid_h == grid_w:
            pos = resize_pos_embed(self.pos_embed, grid_h)
        else:
            raise ValueError(f"non-square patch grid {grid_h}x{grid_w}: crop frames to a square first")
        return self.ln_pre(x + pos.to(x.dtype))

    def head(self, cls_tokens: Tensor) -> Tensor:
        """Project [cls] tokens (or any tokens) ``[..., D]`` into the joint space ``[..., E]``."""
        return self.ln_post(cls_tokens) @ self.proj

    def forward(self, images: Tensor, need_weights: bool = False) -> tuple[Tensor, list[Tensor]]:
        """Embed images ``[B, 3, H, W]`` into ``[B, E]``; also returns per-block attention when asked."""
        x = self.embed(images)
        maps = []
        for block in self.blocks:
            x, probs = block(x, need_weights=need_weights)
            if probs is not None:
                maps.append(probs)
        return self.head(x[:, 0]), maps


class TextTransformer(nn.Module):
    """CLIP's causal text tower; a text's embedding is the end-of-text token's output, projected."""

    def __init__(self, cfg: TextConfig, embed_dim: int, quick_gelu: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.pos_embed = nn.Parameter(torch.empty(cfg.context_length, cfg.width))
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.heads, cfg.mlp_ratio, quick_gelu) for _ in range(cfg.layers))
        self.ln_final = LayerNorm(cfg.width)
        self.proj = nn.Parameter(torch.empty(cfg.width, embed_dim))
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.pos_embed, std=0.01)
        nn.init.normal_(self.proj, std=cfg.width**-0.5)

    def embed(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Token + position embedding, trimmed after the longest text.

        The causal mask means no token sees what follows it, so dropping the trailing padding columns changes
        no output of the kept tokens: it only saves compute.

        Args:
            tokens: Token ids ``[N, context_length]``; the end-of-text token has the largest id of each row.

        Returns:
            The embedded tokens ``[N, L, width]`` and the end-of-text positions ``[N]``.
        """
        if tokens.shape[1] > self.cfg.context_length:
            raise ValueError(f"texts have {tokens.shape[1]} tokens, the model takes {self.cfg.context_length}")
        eot = tokens.argmax(dim=-1)
        length = int(eot.max().item()) + 1 if tokens.device.type != "meta" else tokens.shape[1]
        tokens = tokens[:, :length]
        return self.token_embedding(tokens) + self.pos_embed[:length], eot

    def head(self, x: Tensor, eot: Tensor) -> Tensor:
        """Project the end-of-text outputs of ``x`` ``[N, L, width]`` into ``[N, E]``."""
        return self.ln_final(x[torch.arange(x.shape[0], device=x.device), eot]) @ self.proj

    def forward(self, tokens: Tensor) -> Tensor:
        """Embed token ids ``[N, context_length]`` into ``[N, E]``."""
        x, eot = self.embed(tokens)
        for block in self.blocks:
            x, _ = block(x, causal=True)
        return self.head(x, eot)


class CLIP(nn.Module):
    """The two CLIP towers and the learnable logit scale."""

    def __init__(self, cfg: CLIPConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.visual = VisionTransformer(cfg.vision, cfg.embed_dim, cfg.quick_gelu)
        self.text = TextTransformer(cfg.text, cfg.embed_dim, cfg.quick_gelu)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def encode_image(self, images: Tensor) -> Tensor:
        """Images ``[B, 3, H, W]`` -> embeddings ``[B, E]`` (not normalised)."""
        return self.visual(images)[0]

    def encode_text(self, tokens: Tensor) -> Tensor:
        """Token ids ``[N, 77]`` -> embeddings ``[N, E]`` (not normalised)."""
        return self.text(tokens)

    def forward(self, images: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Image-to-text and text-to-image logits, as OpenAI's ``CLIP.forward``."""
        img = F.normalize(self.encode_image(images), dim=-1)
        txt = F.normalize(self.encode_text(tokens), dim=-1)
        logits = self.logit_scale.exp() * img @ txt.t()
        return logits, logits.t()
