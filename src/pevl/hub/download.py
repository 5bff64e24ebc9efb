"""Fetching OpenAI's CLIP weights: an explicit user action (``pevl download-weights``), never run implicitly.

Files land in ``$PEVL_CACHE/clip/`` (default ``~/.cache/pevl/clip/``) under OpenAI's file names. A download
goes to ``<name>.part`` first: an interrupted one resumes from there with an HTTP ``Range`` request, and the
file is renamed into place only once its SHA-256 matches the one in OpenAI's URL.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import urllib.error
import urllib.parse
import urllib.request
import warnings
from pathlib import Path
from typing import IO

from pevl.errors import PevlError, PevlWarning, file_error

# OpenAI's release URLs; the path component before the file name is the file's SHA-256.
OPENAI_URLS: dict[str, str] = {
    "ViT-B/32": "https://openaipublic.azureedge.net/clip/models/"
    "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
    "ViT-B/16": "https://openaipublic.azureedge.net/clip/models/"
    "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt",
    "ViT-L/14": "https://openaipublic.azureedge.net/clip/models/"
    "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt",
    "ViT-L/14@336px": "https://openaipublic.azureedge.net/clip/models/"
    "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02/ViT-L-14-336px.pt",
}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20
_TIMEOUT = 60.0  # seconds without data before a connection counts as dead


def canonical_arch(name: str) -> str | None:
    """The key of :data:`OPENAI_URLS` that ``name`` spells (``"ViT-B/16"``, ``"vit-b-16"``, ``"ViT-B-16.pt"``).

    Returns:
        The canonical name, or ``None`` when ``name`` is no known architecture.
    """

    def norm(s: str) -> str:
        s = s.strip().lower().removesuffix(".pt")
        return s.replace("/", "-").replace("@", "-")

    wanted = norm(name)
    return next((arch for arch in OPENAI_URLS if norm(arch) == wanted), None)


def default_cache_dir() -> Path:
    """``$PEVL_CACHE``, else ``~/.cache/pevl``."""
    return Path(os.environ.get("PEVL_CACHE") or Path.home() / ".cache" / "pevl").expanduser()


def _require_arch(arch: str) -> str:
    canonical = canonical_arch(arch)
    if canonical is None:
        raise PevlError(f"unknown CLIP architecture {arch!r}; choose one of {', '.join(OPENAI_URLS)}")
    return canonical


def cached_weights_path(arch: str, cache_dir: str | Path | None = None) -> Path:
    """Where :func:`download_weights` puts (or has put) an architecture's file."""
    url = OPENAI_URLS[_require_arch(arch)]
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / "clip" / url.rsplit("/", 1)[-1]


def expected_sha256(arch: str, url: str | None = None) -> str:
    """The SHA-256 a download must have: the one in ``url`` when it carries one, else the one in OpenAI's URL."""
    for candidate in (url, OPENAI_URLS[_require_arch(arch)]):
        parts = (candidate or "").rstrip("/").split("/")
        if len(parts) >= 2 and _SHA256.match(parts[-2].lower()):
            return parts[-2].lower()
    raise AssertionError("every OpenAI URL carries its checksum")  # pragma: no cover


def _sha256_of(path: Path, digest: hashlib._Hash | None = None) -> hashlib._Hash:
    digest = digest or hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest


def _open(url: str, offset: int) -> IO[bytes]:
    from pevl import __version__

    headers = {"User-Agent": f"pevl/{__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=_TIMEOUT)


def _content_range_start(response: IO[bytes]) -> int | None:
    """The first byte of a 206 response (``Content-Range: bytes START-END/TOTAL``)."""
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))  # type: ignore[attr-defined]
    return int(match.group(1)) if match else None


def _fetch(url: str, part: Path, progress: bool) -> hashlib._Hash:
    """Download ``url`` into ``part``, resuming from its current size; returns the SHA-256 of the whole file."""
    from tqdm import tqdm

    offset = part.stat().st_size if part.is_file() else 0
    try:
        response = _open(url, offset)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # nothing left to send: the partial file may already be complete
            return _sha256_of(part)
        raise PevlError(f"{url}: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        raise PevlError(f"{url}: cannot connect ({getattr(err, 'reason', err)})") from None
    except ValueError as err:  # urllib's "unknown url type"
        raise PevlError(f"{url}: not a usable URL ({err})") from None
    with response:
        status = getattr(response, "status", None)
        if offset and not (status == 206 and _content_range_start(response) == offset):
            offset = 0  # the server sent the whole file (no range support): start over
        digest = _sha256_of(part) if offset else hashlib.sha256()
        length = response.headers.get("Content-Length")  # type: ignore[attr-defined]
        total = offset + int(length) if length and length.isdigit() else None
        received = offset
        bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, disable=not progress)
        try:
            with bar, open(part, "ab" if offset else "wb") as out:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as err:
            raise PevlError(
                f"{url}: download stopped after {received} bytes ({err}); run the same command again to resume"
            ) from None
    if total is not None and received != total:
        raise PevlError(
            f"{url}: download stopped after {received} of {total} bytes; run the same command again to resume"
        )
    return digest


def _as_url(url: str) -> str:
    """``--url`` as a URL: a local file becomes a ``file://`` URL; anything else must have a scheme."""
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", url):
        return url
    path = Path(url).expanduser()
    if path.is_file():
        return path.resolve().as_uri()
    if path.exists():
        raise file_error(path, "is not a file (--url takes a URL or a local copy of the weights file)")
    raise file_error(url, "no such file, and not a URL (give an http(s):// or file:// address)")


def download_weights(
    arch: str, cache_dir: str | Path | None = None, url: str | None = None, *, progress: bool = True
) -> Path:
    """Fetch OpenAI's CLIP weights for ``arch`` into the cache, checksum verified, resuming a partial download.

    Args:
        arch: ``"ViT-B/32"``, ``"ViT-B/16"``, ``"ViT-L/14"`` or ``"ViT-L/14@336px"``.
        cache_dir: The cache root; ``$PEVL_CACHE`` or ``~/.cache/pevl`` when ``None``.
        url: Another location of the same file (a mirror, ``file://`` URL of a copy). It is checked against the
            SHA-256 in its own path when it has one (OpenAI's URL layout), else against OpenAI's.
        progress: Show a progress bar.

    Returns:
        The verified file (returned at once when it is already cached and intact).

    Raises:
        PevlError: Unknown architecture, network failure (the partial file is kept for the next attempt), or a
            checksum mismatch (the download is deleted).
    """
    from pevl.utils.io import check_not_inputs, check_output_dir

    arch = _require_arch(arch)
    url = _as_url(url) if url else OPENAI_URLS[arch]
    sha256 = expected_sha256(arch, url)
    target = cached_weights_path(arch, cache_dir)
    if url.startswith("file://"):  # a local copy must not be the cache file this download replaces
        local = urllib.request.url2pathname(urllib.parse.urlparse(url).path)
        check_not_inputs({"weights cache file": target}, [local])
    check_output_dir(target.parent, "weights cache folder")  # before downloading anything
    part = target.with_name(target.name + ".part")
    if target.is_file():
        if _sha256_of(target).hexdigest() == sha256:
            return target
        warnings.warn(f"{target}: SHA-256 mismatch, downloading it again", PevlWarning, stacklevel=2)
        target.unlink()
    created = [p for p in [target.parent, *target.parent.parents] if not p.exists()]
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        got = _fetch(url, part, progress).hexdigest()
    except BaseException:
        if part.is_file() and part.stat().st_size == 0:
            part.unlink()  # nothing received: nothing to resume from
        for folder in created:  # a failed first download leaves no empty folders behind
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    if got != sha256:
        part.unlink(missing_ok=True)
        raise file_error(url, f"SHA-256 mismatch: expected {sha256}, got {got}; the download was deleted")
    # The .part name must stay fixed for resuming, so this is a plain same-directory rename rather than
    # pevl.utils.io.atomic_path; os.replace is atomic either way.
    os.replace(part, target)
    return target


def resolve_pretrained(name_or_path: str) -> Path:
    """Turn what a user passed as pretrained weights into a file path.

    Args:
        name_or_path: An architecture name (``"ViT-B/16"``, also ``"ViT-B-16"``) whose weights were fetched by
            ``pevl download-weights``, or a path to a checkpoint file.

    Returns:
        The file.

    Raises:
        PevlError: When the named weights are not downloaded yet (with the command to do so) or the path does
            not exist.
    """
    arch = canonical_arch(name_or_path)
    if arch is not None and not Path(name_or_path).expanduser().is_file():
        cached = cached_weights_path(arch)
        if cached.is_file():
            return cached
        raise PevlError(
            f"CLIP {arch} weights are not downloaded yet (looked for {cached}): run `pevl download-weights {arch}`"
        )
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    if path.exists():
        raise file_error(path, "not a file")
    raise file_error(path, f"no such file, nor a CLIP architecture name ({', '.join(OPENAI_URLS)})")
