"""The CLIP tokenizer gives exactly OpenAI's token ids, offline, from an installed merges file."""

from __future__ import annotations

import gzip
import importlib.metadata
import random
import sys

import pytest
import torch

from pevl.errors import PevlError
from pevl.models.tokenizer import Tokenizer, find_bpe_file, get_tokenizer, tokenize
from reference_clip import reference_tokenize, reference_tokenizer

LABEL_FILES = {
    "finegym": "finegym/label_map_gym99.txt",
    "diving48": "diving48/label_map_diving48.txt",
    "kinetics400": "kinetics400/label_map_k400.txt",
}

TRICKY_TEXTS = [
    "",
    "   \t\n  ",
    "A Photo Of A CAT",
    "it's I'LL we'd they've you're",
    "back 2.5 somersault, 1.5 twist; piked (FREE)",
    "cafÃ© crÃ¨me",  # mojibake that ftfy repairs
    "rock &amp;amp; roll &lt;3 &#39;quoted&#39;",  # unescaped twice, as OpenAI does
    "naïve façade Ångström ß ÆØÅ",
    "日本語のテキスト 中文 한국어",
    "مرحبا بالعالم שלום",
    "emoji 🙂👍🏽 🤸‍♀️ and symbols ©®™ °C ½",
    "e\u0301 combining accent and zero\u200bwidth space",
    "<|startoftext|>special<|endoftext|> tokens inside text",
    "tabs\tand\nnewlines  and   runs of spaces",
    "UPPER lower MiXeD 123 4567 ٣٤٥",
]


def _labels(shared_data, name: str) -> list[str]:
    lines = (shared_data / "labels" / LABEL_FILES[name]).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip()]


@pytest.mark.parametrize("dataset", sorted(LABEL_FILES))
def test_ids_equal_openai_on_dataset_labels(shared_data, dataset):
    labels = _labels(shared_data, dataset)
    assert len(labels) >= 48
    prompts = labels + [f"a video of action {label}" for label in labels]
    ours = tokenize(prompts)
    reference = reference_tokenize()(prompts, truncate=True)
    assert ours.shape == (len(prompts), 77)
    assert torch.equal(ours, reference.long())


def test_ids_equal_openai_on_unicode_html_and_whitespace():
    ours = get_tokenizer()
    ref = reference_tokenizer()
    for text in TRICKY_TEXTS:
        assert ours.encode(text) == ref.encode(text), text
    assert torch.equal(tokenize(TRICKY_TEXTS), reference_tokenize()(TRICKY_TEXTS, truncate=True).long())


def test_ids_equal_openai_on_random_unicode():
    rng = random.Random(0)
    ranges = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x600, 0x6FF), (0x3040, 0x30FF)]
    ranges += [(0x4E00, 0x4FFF), (0x1F300, 0x1F64F), (0x2000, 0x206F)]
    texts = []
    for _ in range(200):
        chars = []
        for _ in range(rng.randint(1, 40)):
            lo, hi = rng.choice(ranges)
            chars.append(chr(rng.randint(lo, hi)) if rng.random() < 0.8 else rng.choice(" ,.'-"))
        texts.append("".join(chars))
    ref = reference_tokenizer()
    mismatches = [t for t in texts if get_tokenizer().encode(t) != ref.encode(t)]
    assert not mismatches


def test_overlong_text_is_cut_with_the_end_token_kept():
    text = " ".join(f"word{i}" for i in range(200))
    row = tokenize(text)[0]
    tok = get_tokenizer()
    assert row[0] == tok.sot_token_id
    assert row[-1] == tok.eot_token_id
    assert (row != 0).all()  # no padding: the text fills the whole context
    assert torch.equal(row, reference_tokenize()(text, truncate=True)[0].long())
    assert row[1:-1].tolist() == tok.encode(text)[:75]


def test_context_boundary_matches_openai():
    tok = get_tokenizer()
    fits = " ".join(["cat"] * 75)  # 1 + 75 + 1 = 77 tokens: kept whole
    too_long = " ".join(["cat"] * 76)
    assert len(tok.encode(fits)) == 75
    full = tokenize(fits, truncate=False)[0]
    assert full[-1] == tok.eot_token_id and full[-2] != tok.eot_token_id
    assert torch.equal(tokenize([fits, too_long]), reference_tokenize()([fits, too_long], truncate=True).long())
    with pytest.raises(PevlError, match="cat cat"):
        tokenize(too_long, truncate=False)


def test_truncate_false_error_names_the_text():
    text = "pike " * 100
    with pytest.raises(PevlError) as err:
        tokenize(["short one", text], truncate=False)
    message = str(err.value)
    assert "\n" not in message and "pike pike" in message and "77" in message


def test_shorter_context_length_matches_openai():
    texts = ["a video of gymnastic action round-off, flic-flac on", "abseiling"]
    assert torch.equal(tokenize(texts, context_length=8), reference_tokenize()(texts, 8, truncate=True).long())
    with pytest.raises(PevlError):
        tokenize(texts, context_length=1)


def test_output_is_a_long_tensor_and_a_single_string_gives_one_row():
    out = tokenize("abseiling")
    assert out.dtype == torch.long and out.shape == (1, 77)
    assert out[0].argmax() == out[0].tolist().index(get_tokenizer().eot_token_id)  # CLIP finds the end by argmax


def test_special_tokens_and_vocab_size_are_openai_s():
    tok, ref = get_tokenizer(), reference_tokenizer()
    assert tok.sot_token_id == ref.encoder["<|startoftext|>"]
    assert tok.eot_token_id == ref.encoder["<|endoftext|>"]
    assert tok.vocab_size == len(ref.encoder)
    assert tok.eot_token_id == tok.vocab_size - 1


def test_encode_words_pieces_concatenate_to_encode():
    tok = get_tokenizer()
    text = "(VT) Round-off, flic-flac with 0.5 turn on, stretched salto"
    words = tok.encode_words(text)
    assert [piece for piece, _ in words][:6] == ["(", "vt", ")", "round", "-", "off"]
    assert [i for _, ids in words for i in ids] == tok.encode(text)
    assert all(ids for _, ids in words)
    assert [piece for piece, _ in words].count(",") == 2


def test_decode_inverts_encode_up_to_cleaning():
    tok, ref = get_tokenizer(), reference_tokenizer()
    for text in ["a photo of a cat", "Back+15som+05Twis+FREE", "naïve 日本語 🙂"]:
        ids = tok.encode(text)
        assert tok.decode(ids) == ref.decode(ids).strip()
        assert tok.decode(torch.tensor(ids)) == tok.decode(ids)
    assert tok.decode(tok.encode("a photo of a cat")) == "a photo of a cat"


def test_get_tokenizer_is_cached():
    assert get_tokenizer() is get_tokenizer()


def test_bpe_file_is_found_in_an_installed_distribution_without_importing_it():
    path = find_bpe_file()
    assert path.name == "bpe_simple_vocab_16e6.txt.gz" and path.is_file()
    dist = importlib.metadata.distribution("openai-clip")
    assert path.resolve().is_relative_to(dist.locate_file("").resolve())  # type: ignore[arg-type]
    assert "clip" not in sys.modules and "open_clip" not in sys.modules


def test_bpe_file_override_from_the_environment(monkeypatch, tmp_path):
    real = find_bpe_file()
    copy = tmp_path / "merges.txt.gz"
    copy.write_bytes(real.read_bytes())
    monkeypatch.setenv("PEVL_BPE_FILE", str(copy))
    assert find_bpe_file() == copy
    monkeypatch.setenv("PEVL_BPE_FILE", str(tmp_path / "absent.gz"))
    with pytest.raises(PevlError, match="absent.gz"):
        find_bpe_file()


def test_missing_bpe_file_tells_how_to_install(monkeypatch):
    monkeypatch.delenv("PEVL_BPE_FILE", raising=False)

    def no_distribution(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", no_distribution)
    with pytest.raises(PevlError, match="pip install openai-clip"):
        find_bpe_file()


def test_corrupt_bpe_files_give_one_line_errors_naming_the_file(tmp_path):
    not_gzip = tmp_path / "plain.txt.gz"
    not_gzip.write_text("i n\nt h\n")
    too_short = tmp_path / "short.txt.gz"
    with gzip.open(too_short, "wt", encoding="utf-8") as f:
        f.write("#version: 0.2\ni n\nt h\n")
    for path in (not_gzip, too_short, tmp_path / "missing.gz"):
        with pytest.raises(PevlError) as err:
            Tokenizer(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)
