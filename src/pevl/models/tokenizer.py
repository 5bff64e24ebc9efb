"""CLIP's byte-pair-encoding tokenizer, offline, giving exactly OpenAI's token ids.

The text is cleaned as OpenAI's ``SimpleTokenizer`` cleans it (``ftfy.fix_text``, HTML entities unescaped twice,
whitespace collapsed, lowercased), split into word pieces with the same regular expression, and each piece is
byte-pair encoded with OpenAI's merge list. The merges (``bpe_simple_vocab_16e6.txt.gz``) are read from an
installed distribution (``openai-clip`` or ``open-clip-torch``) instead of a copy in this package; those packages
cannot be imported here (they need torchvision), so the file is located through their installed metadata.
"""

from __future__ import annotations

import functools
import gzip
import html
import importlib.metadata
import os
import zlib
from collections.abc import Sequence
from pathlib import Path

import ftfy
import regex
import torch

from pevl.errors import PevlError, file_error

BPE_FILE_NAME = "bpe_simple_vocab_16e6.txt.gz"
# Distributions known to ship the merges, in order of preference.
BPE_DISTRIBUTIONS = ("openai-clip", "open-clip-torch")
START_OF_TEXT = "<|startoftext|>"
END_OF_TEXT = "<|endoftext|>"
WORD_END = "</w>"
# OpenAI's vocabulary: 256 bytes, 256 word-final bytes, 48,894 merges, the two special tokens = 49,408 ids.
NUM_MERGES = 49152 - 256 - 2
# The word-piece pattern of CLIP (special tokens, English contractions, letter runs, single digits, punctuation
# runs), matched case-insensitively. It must stay exactly this for the ids to match the pre-trained embeddings.
WORD_PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)
_WHITESPACE = regex.compile(r"\s+")
_CACHE_LIMIT = 200_000  # word pieces remembered per tokenizer (label sets repeat the same words)


def byte_symbols() -> dict[int, str]:
    """The reversible byte -> printable character table the BPE vocabulary is written in.

    Printable Latin-1 bytes stand for themselves; the remaining bytes (control characters, space, ...) are
    moved to code points 256, 257, ... in byte order, so that no symbol is whitespace or a control character.
    The dict's order matters: the first 256 vocabulary ids are its values in this order (printable bytes first).

    Returns:
        A dict from each of the 256 byte values to a one-character string.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    shifted = [b for b in range(256) if b not in table]
    for offset, b in enumerate(shifted):
        table[b] = chr(256 + offset)
    return table


def clean_text(text: str) -> str:
    """Normalise text as CLIP does before splitting it: fix mojibake, unescape HTML, collapse whitespace, lowercase."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return _WHITESPACE.sub(" ", text).strip().lower()


def find_bpe_file() -> Path:
    """Locate OpenAI's BPE merges file without importing the packages that ship it.

    Looks at ``$PEVL_BPE_FILE`` first, then the installed ``openai-clip`` and ``open-clip-torch`` distributions.

    Returns:
        The path of ``bpe_simple_vocab_16e6.txt.gz``.

    Raises:
        PevlError: When ``$PEVL_BPE_FILE`` names a missing file, or no installed distribution ships the file.
    """
    override = os.environ.get("PEVL_BPE_FILE")
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise file_error(path, "no such file (set by PEVL_BPE_FILE)")
        return path
    for name in BPE_DISTRIBUTIONS:
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        for record in dist.files or ():
            if record.name == BPE_FILE_NAME:
                path = Path(str(dist.locate_file(record)))
                if path.is_file():
                    return path
    raise PevlError(
        f"CLIP's BPE merges ({BPE_FILE_NAME}) were not found: install them with `pip install openai-clip` "
        f"or point PEVL_BPE_FILE at a copy of the file"
    )


def read_merges(path: str | Path) -> list[tuple[str, str]]:
    """Read the first 48,894 merges of a CLIP BPE file (the ones OpenAI's vocabulary uses).

    Args:
        path: A gzip-compressed merges file whose first line is a version header.

    Returns:
        The merges in priority order, each a pair of symbols.

    Raises:
        PevlError: When the file is unreadable or is not a CLIP merges file.
    """
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        raise file_error(path, "no such file") from None
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as err:
        raise file_error(path, f"not a readable gzip text file ({err})") from None
    merges = [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1]]
    if len(merges) < NUM_MERGES or any(len(pair) != 2 for pair in merges):
        raise file_error(path, f"not CLIP's BPE merges file (expected {NUM_MERGES} pairs after the header line)")
    return merges  # type: ignore[return-value]


class Tokenizer:
    """OpenAI CLIP's BPE tokenizer (our implementation of the same algorithm and vocabulary).

    Args:
        bpe_path: The merges file; :func:`find_bpe_file` when ``None``.

    Attributes:
        sot_token_id: Id of ``<|startoftext|>`` (49406).
        eot_token_id: Id of ``<|endoftext|>`` (49407); the largest id, which is how CLIP finds the text's end.
        vocab_size: Number of ids (49408).
    """

    def __init__(self, bpe_path: str | Path | None = None) -> None:
        self.bpe_path = Path(bpe_path) if bpe_path is not None else find_bpe_file()
        merges = read_merges(self.bpe_path)
        self._byte_to_symbol = byte_symbols()
        self._symbol_to_byte = {s: b for b, s in self._byte_to_symbol.items()}
        singles = list(self._byte_to_symbol.values())
        vocab = singles + [s + WORD_END for s in singles] + ["".join(pair) for pair in merges]
        vocab += [START_OF_TEXT, END_OF_TEXT]
        self._ids = {symbol: i for i, symbol in enumerate(vocab)}
        self._symbols = vocab
        self._ranks = {pair: rank for rank, pair in enumerate(merges)}
        self._cache: dict[str, list[int]] = {}
        self.sot_token_id = self._ids[START_OF_TEXT]
        self.eot_token_id = self._ids[END_OF_TEXT]
        self.vocab_size = len(vocab)

    def _merge(self, symbols: list[str]) -> list[str]:
        """Apply the merges to one word's symbols, always the best-ranked adjacent pair first."""
        while len(symbols) > 1:
            pairs = list(zip(symbols[:-1], symbols[1:], strict=True))
            best = min(pairs, key=lambda pair: self._ranks.get(pair, NUM_MERGES))
            if best not in self._ranks:
                break
            merged: list[str] = []
            i = 0
            while i < len(symbols):
                # Every non-overlapping occurrence of the pair is merged in one pass, left to right.
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        return symbols

    def _piece_ids(self, piece: str) -> list[int]:
        """BPE ids of one regex word piece (already cleaned and lowercased)."""
        cached = self._cache.get(piece)
        if cached is not None:
            return cached
        if piece in (START_OF_TEXT, END_OF_TEXT):
            ids = [self._ids[piece]]
        else:
            chars = [self._byte_to_symbol[b] for b in piece.encode("utf-8")]
            chars[-1] += WORD_END
            ids = [self._ids[symbol] for symbol in self._merge(chars)]
        if len(self._cache) < _CACHE_LIMIT:
            self._cache[piece] = ids
        return ids

    def encode_words(self, text: str) -> list[tuple[str, list[int]]]:
        """Split ``text`` into CLIP's word pieces, each with its BPE ids, in order.

        Concatenating the id lists gives :meth:`encode`; this is how the label words of a prompt are located
        among its tokens (PeVL's sub-action level attends to them).

        Args:
            text: Any text.

        Returns:
            ``(piece, ids)`` pairs; ``piece`` is the cleaned, lowercased text the regex matched.
        """
        return [(piece, self._piece_ids(piece)) for piece in WORD_PATTERN.findall(clean_text(text))]

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, without the start and end tokens (as OpenAI's ``SimpleTokenizer.encode``)."""
        return [i for _, ids in self.encode_words(text) for i in ids]

    def decode(self, ids: Sequence[int]) -> str:
        """Turn ids back into text: word pieces joined by single spaces, special tokens written out.

        Args:
            ids: Token ids (a list or a 1-D tensor).

        Returns:
            The text, without the trailing space OpenAI's decoder leaves.
        """
        symbols = "".join(self._symbols[int(i)] for i in ids)
        data = bytes(self._symbol_to_byte[c] for c in symbols)
        return data.decode("utf-8", errors="replace").replace(WORD_END, " ").strip()


@functools.cache
def get_tokenizer() -> Tokenizer:
    """The tokenizer over :func:`find_bpe_file`, built once per process."""
    return Tokenizer()


def tokenize(texts: str | Sequence[str], context_length: int = 77, truncate: bool = True) -> torch.LongTensor:
    """Tokenise texts into CLIP's fixed-length input, like ``clip.tokenize``.

    Each row is ``<|startoftext|>``, the text's ids, ``<|endoftext|>``, then zeros.

    Args:
        texts: One text or a sequence of texts.
        context_length: Tokens per row (77 for every CLIP model).
        truncate: Cut over-long texts, keeping ``<|endoftext|>`` as the last token; when ``False`` an over-long
            text is an error.

    Returns:
        ``[N, context_length]`` int64 ids.

    Raises:
        PevlError: For ``context_length < 2`` or, with ``truncate=False``, a text that does not fit.
    """
    if context_length < 2:
        raise PevlError(f"context_length must be at least 2 (start and end tokens), got {context_length}")
    if isinstance(texts, str):
        texts = [texts]
    tokenizer = get_tokenizer()
    result = torch.zeros(len(texts), context_length, dtype=torch.long)
    for row, text in enumerate(texts):
        ids = [tokenizer.sot_token_id, *tokenizer.encode(text), tokenizer.eot_token_id]
        if len(ids) > context_length:
            if not truncate:
                raise PevlError(f"text {text!r} has {len(ids)} tokens, more than the context length {context_length}")
            ids = ids[: context_length - 1] + [tokenizer.eot_token_id]
        result[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return result  # type: ignore[return-value]
