"""``pevl explain VIDEO --checkpoint CKPT [--labels ...] [--out DIR] [--compare VL_CKPT]``: attention figures."""

from __future__ import annotations

import argparse
import sys

from pevl.cli._checkpoint import CHECKPOINT_HELP


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``explain`` command."""
    parser = subparsers.add_parser(
        "explain",
        help="attention figures of a video (spatial, grouping, temporal, concepts) and an index.html",
        description="Run a trained PeVL model on a video and draw what it attends to: P2V-R spatial attention "
        "(Fig. 8), V2P-R background-token grouping (Fig. 9), temporal attention (Fig. 10), semantic concept "
        "attention (Fig. 11) and, with --compare, the VL baseline against PeVL (Fig. 12).",
    )
    parser.add_argument("video", help="the video file")
    parser.add_argument("--checkpoint", "-k", required=True, help=CHECKPOINT_HELP)
    parser.add_argument("--labels", help='label file (one per line) or "a;b;c" (default: the trained classes)')
    parser.add_argument("--out", help="output folder (default: explain_<video name>)")
    parser.add_argument("--compare", help="checkpoint of the VL baseline, for the VL vs PeVL figure")
    parser.add_argument("--pose-file", help="poses of the video as a PYSKL pickle (default: cache, else estimate)")
    parser.add_argument("--pose-layout", help="joint layout of --pose-file when not COCO-17 (e.g. jhmdb15)")
    parser.add_argument("--top-k", type=int, default=5, help="predictions listed on the page (default 5)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the figures and print where they are."""
    from pathlib import Path

    from pevl.apps.explain import OUTPUT_FILES, explain_video, explanation_summary
    from pevl.apps.inference import parse_labels
    from pevl.cli import checkpoint_inputs
    from pevl.errors import PevlError
    from pevl.utils.io import check_not_inputs, check_output_dir

    if args.top_k < 1:
        raise PevlError(f"--top-k must be at least 1, got {args.top_k}")
    out = args.out or f"explain_{Path(args.video).stem}"
    check_not_inputs(
        {f"output {name}": Path(out) / name for name in OUTPUT_FILES},
        [args.video, args.pose_file, args.labels, *checkpoint_inputs(args.checkpoint)]
        + checkpoint_inputs(args.compare),
    )
    check_output_dir(out)  # before the models run
    result = explain_video(
        args.video,
        args.checkpoint,
        out,
        labels=parse_labels(args.labels),
        compare=args.compare,
        pose_file=args.pose_file,
        pose_layout=args.pose_layout,
        top_k=args.top_k,
    )
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(explanation_summary(result))
    return 0
