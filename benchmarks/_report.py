"""Shared by the benchmark scripts: replace one marked section of a Markdown report, atomically."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

from pevl.utils.io import atomic_open


def write_section(path: Path, name: str, body: str, title: str = "# Benchmarks") -> None:
    """Replace the ``<!-- bench:name -->`` ... ``<!-- /bench:name -->`` block of ``path`` (append it if absent).

    Args:
        path: The Markdown file (created with ``title`` if missing).
        name: Section name in the markers.
        body: New contents of the block (Markdown, its own heading included).
        title: First line of a new file.
    """
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    current = path.read_text(encoding="utf-8") if path.exists() else f"{title}\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    updated = pattern.sub(lambda _: block, current) if pattern.search(current) else current.rstrip() + f"\n\n{block}\n"
    with atomic_open(path, "w") as f:
        f.write(updated)


SHARED_DATA = Path(os.environ.get("PEVL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
"""The real clips beside the project (``$PEVL_SHARED_DATA`` overrides)."""


def machine() -> str:
    """One phrase describing where a benchmark ran: cores, CPU, Python and torch versions."""
    import torch

    cpu = platform.processor() or platform.machine()
    name, flags = _cpuinfo()
    if name:
        cpu = f"{name} ({cpu}"
        bf16 = [label for flag, label in (("amx_bf16", "AMX-bf16"), ("avx512_bf16", "AVX512-bf16")) if flag in flags]
        cpu += f", {bf16[0]})" if bf16 else ", no bf16 instructions)"
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}, torch {torch.__version__}"


def _cpuinfo() -> tuple[str, set[str]]:
    """CPU model name and feature flags from ``/proc/cpuinfo`` (empty where there is none, as on macOS)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "", set()
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    return fields.get("model name", ""), set(fields.get("flags", "").split())
