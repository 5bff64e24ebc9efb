"""Encoded class texts kept on disk, per checkpoint, label list, prompt and precision.

Scoring a video against 400 labels spends most of its time in the text tower when it encodes the 400 prompts; the
result depends only on the checkpoint's weights, the label texts (and coarse types), the prompt style and the
precision, so ``pevl predict`` encodes them once and reads them back afterwards.

The key is a SHA-256 of:

* the checkpoint file's identity: its resolved path, size, modification time (ns) and the whole safetensors header
  (every tensor's name, dtype, shape and offset, and the metadata, the model config included). Rewriting the
  checkpoint, even in place with the same size, changes the time or the header: the old entry is never read again;
* the label texts and coarse types, the prompt style and the context length;
* the autocast dtype the texts were encoded under.

Entries are ``<key>.safetensors`` files under ``$PEVL_CACHE/texts`` (default ``~/.cache/pevl/texts``), written
atomically. Each carries a SHA-256 checksum of its key (what it was computed from) and of its tensors' bytes: an
entry damaged on disk, or another entry's tensors under this name, fails it and is discarded and encoded again
with a warning, as is an entry holding NaN or inf; an absent or differently keyed one is a plain miss. Deleting
the folder is safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Sequence
from pathlib import Path

import torch

from pevl.models.text_encoder import TextFeatures
from pevl.utils.io import atomic_path

FORMAT = "pevl-text-features-2"  # 2: entries carry a checksum
_TENSORS = ("sentence", "words", "word_mask", "phrase_index")


def default_cache_dir() -> Path:
    """``$PEVL_CACHE/texts``, else ``~/.cache/pevl/texts``."""
    return Path(os.environ.get("PEVL_CACHE") or Path.home() / ".cache" / "pevl").expanduser() / "texts"


def weights_identity(model_file: str | Path) -> str:
    """A digest that changes whenever the checkpoint file does, without reading its tensors.

    Args:
        model_file: The checkpoint's ``model.safetensors``.

    Returns:
        Hex SHA-256 of the resolved path, size, modification time and safetensors header.
    """
    path = Path(model_file).resolve()
    stat = path.stat()
    digest = hashlib.sha256(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) == 8:
            (length,) = struct.unpack("<Q", head)
            digest.update(f.read(min(length, 100_000_000)))
    return digest.hexdigest()


def text_cache_key(
    weights: str,
    labels: Sequence[str],
    coarse: Sequence[str | None] | None,
    prompt: str,
    context_length: int,
    dtype: torch.dtype | None,
) -> str:
    """The cache key of encoded class texts.

    Args:
        weights: :func:`weights_identity` of the checkpoint.
        labels: The label texts, in order.
        coarse: Their coarse action types, or ``None``.
        prompt: The model's prompt style.
        context_length: Tokens per prompt.
        dtype: The autocast dtype of the encoding (``None``: fp32).

    Returns:
        A hex digest.
    """
    blob = json.dumps(
        {
            "format": FORMAT,
            "weights": weights,
            "labels": list(labels),
            "coarse": None if coarse is None else list(coarse),
            "prompt": prompt,
            "context_length": context_length,
            "dtype": str(dtype) if dtype is not None else "float32",
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


class DamagedEntry(Exception):
    """A cache entry that fails its checksum or holds non-finite values (the message says which)."""


def entry_checksum(key: str, tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the key and of every tensor's name, dtype, shape and bytes, in a fixed order."""
    digest = hashlib.sha256(key.encode())
    for name in _TENSORS:
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"\0{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def load_text_features(path: str | Path, key: str) -> TextFeatures | None:
    """The features stored at ``path`` under ``key``; ``None`` when absent, of another format or another key.

    Raises:
        DamagedEntry: The entry is unreadable, fails its checksum, or holds NaN / inf.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != FORMAT or metadata.get("key") != key:
                return None
            tensors = {name: f.get_tensor(name) for name in _TENSORS}
    except (SafetensorError, OSError, ValueError, RuntimeError, KeyError) as err:
        raise DamagedEntry(f"unreadable ({type(err).__name__})") from None
    if metadata.get("sha256") != entry_checksum(key, tensors):
        raise DamagedEntry("fails its checksum")
    if not all(bool(torch.isfinite(t).all()) for t in tensors.values() if t.is_floating_point()):
        raise DamagedEntry("holds NaN or inf")
    return TextFeatures(**tensors)


def save_text_features(path: str | Path, key: str, features: TextFeatures) -> None:
    """Store features atomically (a concurrent reader sees the old entry or the new one, never half of one)."""
    from safetensors.torch import save_file

    tensors = {name: getattr(features, name).detach().cpu().contiguous() for name in _TENSORS}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT, "key": key, "sha256": entry_checksum(key, tensors)})


class TextFeatureCache:
    """Class-text features on disk for one checkpoint.

    Args:
        model_file: The checkpoint's ``model.safetensors`` (its identity is part of every key).
        cache_dir: The cache folder (default :func:`default_cache_dir`).
    """

    def __init__(self, model_file: str | Path, cache_dir: str | Path | None = None) -> None:
        self.weights = weights_identity(model_file)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.warnings: list[str] = []  # damaged entries met (discarded and encoded again), one line each

    def path(self, key: str) -> Path:
        """The entry file of a key."""
        return self.cache_dir / f"{key}.safetensors"

    def get_or_encode(
        self,
        model: torch.nn.Module,
        labels: Sequence[str],
        coarse: Sequence[str | None] | None,
        dtype: torch.dtype | None,
    ) -> tuple[TextFeatures, bool]:
        """The encoded class texts of ``labels``: read from the cache, or encoded by ``model`` and stored.

        Args:
            model: The :class:`pevl.models.pevl.PeVL` model (eval mode) the checkpoint holds.
            labels: Label texts.
            coarse: Coarse action types, or ``None``.
            dtype: Autocast dtype to encode under (``None``: fp32), as the clip will be scored.

        Returns:
            The features (fp32 or ``dtype``, on the model's device) and whether they came from the cache.
        """
        cfg = model.config
        key = text_cache_key(self.weights, labels, coarse, cfg.prompt, cfg.clip.text.context_length, dtype)
        device = next(model.parameters()).device
        try:
            cached = load_text_features(self.path(key), key)
        except DamagedEntry as err:
            cached = None
            self.warnings.append(f"{self.path(key)}: cached class texts {err}; discarded and encoded again")
        if cached is not None and cached.sentence.shape[0] == len(labels):
            return _to(cached, device), True
        texts = model.build_class_texts(list(labels), list(coarse) if coarse else None)
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            features = model.encode_class_texts(texts)
        try:
            save_text_features(self.path(key), key, features)
        except OSError:
            pass  # a read-only cache only costs the next run the encoding
        return features, False


def _to(features: TextFeatures, device: torch.device) -> TextFeatures:
    return TextFeatures(*(getattr(features, name).to(device) for name in _TENSORS))
