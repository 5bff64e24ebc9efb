"""The text encoder g_t: frozen CLIP text transformer with an adapter per block (Fig. 2c).

Besides the usual sentence embedding (the end-of-text token, projected) it returns every token's projected feature,
which the sub-action level of SGMC uses as word queries.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pevl.models.adapters import Adapter
from pevl.models.clip import TextTransformer
from pevl.models.config import PeVLConfig


@dataclass
class TextFeatures:
    """Encoded class texts."""

    sentence: Tensor  # [C, E] z_t, one per class (not normalised)
    words: Tensor  # [C, L, E] projected token features, L = the longest prompt
    word_mask: Tensor  # [C, L] bool: label-word tokens
    phrase_index: Tensor  # [C, L] long: phrase of each label-word token, -1 elsewhere


class TextEncoder(nn.Module):
    """Adapters of g_t; the frozen text transformer is passed in at call time.

    Args:
        cfg: The model configuration (``text_adapter`` switches the adapters off).
    """

    def __init__(self, cfg: PeVLConfig) -> None:
        super().__init__()
        width = cfg.clip.text.width
        self.adapters = (
            nn.ModuleList(Adapter(width, cfg.adapter_ratio, skip=True) for _ in range(cfg.clip.text.layers))
            if cfg.text_adapter
            else None
        )

    def forward(self, tokens: Tensor, text: TextTransformer, return_words: bool = True) -> tuple[Tensor, Tensor | None]:
        """Encode token ids ``[N, context_length]``.

        Args:
            tokens: Token ids from :func:`pevl.tokenize`.
            text: The (frozen) CLIP text transformer.
            return_words: Also return the projected feature of every token.

        Returns:
            Sentence embeddings ``[N, E]`` and token features ``[N, L, E]`` (``None`` unless asked for), with L the
            position of the last end-of-text token + 1.
        """
        x, eot = text.embed(tokens)
        for i, block in enumerate(text.blocks):
            attn_out, _ = block.attn(block.ln_1(x), causal=True)
            x = x + (self.adapters[i](attn_out) if self.adapters is not None else attn_out)
            x = x + block.mlp(block.ln_2(x))
        sentence = text.head(x, eot)
        words = text.ln_final(x) @ text.proj if return_words else None
        return sentence, words

    def encode(self, tokens: Tensor, word_mask: Tensor, phrase_index: Tensor, text: TextTransformer) -> TextFeatures:
        """Encode class prompts into :class:`TextFeatures` (masks trimmed to the encoded length)."""
        sentence, words = self.forward(tokens, text)
        length = words.shape[1]
        return TextFeatures(sentence, words, word_mask[:, :length].to(torch.bool), phrase_index[:, :length])
