"""``pevl download-weights ARCH``: fetch OpenAI's CLIP weights into the cache (checksum verified, resumable)."""

from __future__ import annotations

import argparse

from pevl.hub.download import OPENAI_URLS  # standard library only: cheap to import while building the parser


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``download-weights`` command."""
    parser = subparsers.add_parser(
        "download-weights",
        help="download OpenAI's pre-trained CLIP weights",
        description="Download OpenAI's CLIP weights into the cache ($PEVL_CACHE/clip, default ~/.cache/pevl/clip), "
        "verify their SHA-256 and print the file's path. An interrupted download resumes when the command is run "
        "again. Afterwards the architecture name can be used wherever a checkpoint is expected "
        "(e.g. model.pretrained=ViT-B/16).",
    )
    parser.add_argument("arch", metavar="ARCH", help=f"CLIP architecture: {', '.join(OPENAI_URLS)}")
    parser.add_argument("--cache-dir", metavar="DIR", help="cache root instead of $PEVL_CACHE or ~/.cache/pevl")
    parser.add_argument("--url", help="download from this URL (a mirror) instead of OpenAI's; same checksum rules")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Download (or find in the cache) and print the path."""
    from pevl.hub.download import download_weights

    path = download_weights(args.arch, cache_dir=args.cache_dir, url=args.url, progress=not args.quiet)
    print(path)
    return 0
