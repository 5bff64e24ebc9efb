"""Class prompts (Table 4) and where each label word sits among the prompt's tokens.

Three prompt styles: ``label`` (the label text alone), ``action`` ("a video of action {label}") and ``coarse``
("a video of {coarse} action {label}", with the coarse action type such as "gymnastic" or "diving"). The
sub-action level of SGMC attends with the *label words* only, and the figures average over comma-separated phrases,
so each prompt also carries a mask of its label-word tokens and the phrase index of each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from pevl.errors import PevlError

PROMPT_TEMPLATES = {
    "label": "{label}",
    "action": "a video of action {label}",
    "coarse": "a video of {coarse} action {label}",
}


@dataclass
class ClassTexts:
    """Tokenised class prompts and the positions of their label words."""

    labels: list[str]  # label texts, e.g. "back takeoff, 2.5 somersaults, 1.5 twists, piked"
    prompts: list[str]  # the full prompt of each class
    tokens: Tensor  # [C, context_length] token ids
    word_mask: Tensor  # [C, context_length] bool: tokens of label words (punctuation excluded)
    phrase_index: Tensor  # [C, context_length] long: comma-separated phrase of each label-word token, -1 elsewhere
    phrases: list[list[str]]  # the phrases of each label

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str) -> ClassTexts:
        """Move the tensors to ``device``."""
        return ClassTexts(
            self.labels,
            self.prompts,
            self.tokens.to(device),
            self.word_mask.to(device),
            self.phrase_index.to(device),
            self.phrases,
        )


def split_phrases(label: str) -> list[str]:
    """The comma-separated phrases of a label text (empty parts dropped)."""
    return [part.strip() for part in label.split(",") if part.strip()]


def _is_word(piece: str) -> bool:
    return any(ch.isalnum() for ch in piece)


def build_class_texts(
    labels: Sequence[str],
    coarse: Sequence[str | None] | None = None,
    prompt: str = "coarse",
    context_length: int = 77,
) -> ClassTexts:
    """Tokenise the class prompts and locate their label words.

    Args:
        labels: One label text per class.
        coarse: Optional coarse action type per class; the ``coarse`` prompt falls back to ``action`` without it.
        prompt: ``"label"``, ``"action"`` or ``"coarse"``.
        context_length: Tokens per prompt.

    Returns:
        The tokenised prompts with word masks and phrase indices.
    """
    from pevl.models.tokenizer import get_tokenizer, tokenize

    if prompt not in PROMPT_TEMPLATES:
        raise PevlError(f"unknown prompt style {prompt!r}; choose one of {', '.join(PROMPT_TEMPLATES)}")
    labels = [str(label) for label in labels]
    if not labels:
        raise PevlError("no class labels given")
    if coarse is not None and len(coarse) != len(labels):
        raise PevlError(f"{len(coarse)} coarse action types for {len(labels)} classes")
    tokenizer = get_tokenizer()
    prompts, word_mask, phrase_index = [], torch.zeros(len(labels), context_length, dtype=torch.bool), None
    phrase_index = torch.full((len(labels), context_length), -1, dtype=torch.long)
    last = context_length - 1  # the end-of-text token always takes the last kept position
    for c, label in enumerate(labels):
        coarse_type = coarse[c] if coarse is not None else None
        style = prompt if (prompt != "coarse" or coarse_type) else "action"
        prefix, suffix = PROMPT_TEMPLATES[style].split("{label}")
        prefix = prefix.format(coarse=coarse_type)
        prompts.append(prefix + label + suffix)
        position = 1 + len(tokenizer.encode(prefix))  # after the start token and the prefix
        phrase = 0
        for piece, ids in tokenizer.encode_words(label):
            if piece.strip() == ",":
                phrase += 1
            elif _is_word(piece):
                start, stop = min(position, last), min(position + len(ids), last)
                word_mask[c, start:stop] = True
                phrase_index[c, start:stop] = phrase
            position += len(ids)
        # A label with leading commas shifts phrase numbers; renumber to the phrases actually present.
        present = phrase_index[c][phrase_index[c] >= 0].unique(sorted=True)
        for new, old in enumerate(present.tolist()):
            phrase_index[c][phrase_index[c] == old] = new
    tokens = tokenize(prompts, context_length=context_length)
    return ClassTexts(labels, prompts, tokens, word_mask, phrase_index, [split_phrases(label) for label in labels])
