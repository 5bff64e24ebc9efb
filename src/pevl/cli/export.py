"""``pevl export CHECKPOINT --format onnx --out model.onnx [--labels ...] [--check VIDEO ...]``."""

from __future__ import annotations

import argparse

from pevl.cli._checkpoint import CHECKPOINT_HELP


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``export`` command."""
    parser = subparsers.add_parser(
        "export",
        help="export a trained model to ONNX (video + pose -> class scores)",
        description="Export a checkpoint for deployment: the class texts are encoded now and baked into the graph; "
        "inputs are the prepared clip (video [B, T_v, 3, S, S], pose [B, T_p, 17, 3]; pose only for skeleton "
        "models) with a dynamic batch size; outputs are logits and probabilities. Attention maps are not exported. "
        "--check scores real clips with onnxruntime and PyTorch and prints the largest difference.",
    )
    parser.add_argument("checkpoint", help=CHECKPOINT_HELP)
    parser.add_argument("--format", default="onnx", choices=("onnx",), help="export format (onnx)")
    parser.add_argument("--out", "-o", required=True, help="the .onnx file to write")
    parser.add_argument("--labels", help='label file (one per line) or "a;b;c" (default: the trained classes)')
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset version (default 17)")
    parser.add_argument("--check", nargs="+", default=[], metavar="VIDEO",
                        help="videos to compare onnxruntime against PyTorch on (needs onnxruntime)")  # fmt: skip
    parser.add_argument("--pose-file", help="poses of the --check videos as a PYSKL pickle (default: estimate)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export and report."""
    from pevl.apps.export import describe, export_onnx
    from pevl.apps.inference import parse_labels
    from pevl.cli import checkpoint_inputs
    from pevl.utils.io import check_not_inputs

    check_not_inputs(
        {"ONNX file": args.out}, [*checkpoint_inputs(args.checkpoint), args.labels, args.pose_file, *args.check]
    )
    result = export_onnx(
        args.checkpoint, args.out, labels=parse_labels(args.labels), opset=args.opset, check_videos=args.check,
        pose_file=args.pose_file,
    )  # fmt: skip
    print(describe(result))
    return 0
