"""Cost of every full-size preset (``pevl profile`` on the meta device), written to docs/model.md.

Usage::

    python benchmarks/profile_presets.py [--no-write]

Rewrites the block between ``<!-- profile:presets -->`` markers of docs/model.md and prints it. No memory and no
weights are needed: the models are built on the ``meta`` device.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from pevl.models.presets import describe_model, list_models
from pevl.tools.profile import profile_model
from pevl.utils.io import atomic_open

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "model.md"
EXTRA_FRAMES = {"pevl_vit_b16": [(32, 32)], "vl_vit_b16": [(32, 32)], "pevl_vit_l14": [(32, 32)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-write", action="store_true", help="only print the table")
    args = parser.parse_args()
    rows = []
    for preset in [name for name in list_models() if not name.endswith("_tiny")]:
        for frames in [(8, 32), *EXTRA_FRAMES.get(preset, [])]:
            p = profile_model(preset, *frames)
            rows.append(
                f"| `{preset}` | {describe_model(preset)} | {p['video_frames']} + {p['pose_frames']} | "
                f"{p['params_total'] / 1e6:.1f} M | {p['params_trainable'] / 1e6:.1f} M | {p['gflops']:.1f} |"
            )
            print(rows[-1], flush=True)
    body = (
        "| preset | what it is | frames (video + pose) | params | tunable | GFLOPs / clip |\n"
        "|---|---|---|---|---|---|\n" + "\n".join(rows)
    )
    if args.no_write:
        return
    begin, end = "<!-- profile:presets -->", "<!-- /profile:presets -->"
    text = DOC.read_text(encoding="utf-8")
    block = f"{begin}\n{body}\n{end}"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.DOTALL)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + f"\n\n{block}\n"
    with atomic_open(DOC, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
