"""``pevl eval --checkpoint CKPT [--set ...] [--views CLIPSxCROPS] [--json]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from pevl.cli import add_set_option
from pevl.cli._checkpoint import CHECKPOINT_HELP


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``eval`` command."""
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a checkpoint: top-1/top-5/mean class accuracy, confusion matrix",
        description="Evaluate a trained checkpoint on its run's test split (data.test_split, else data.val_split). "
        "Writes metrics.json, per_class.csv, confusion.csv/.png and scores.npy.",
    )
    parser.add_argument("--checkpoint", "-k", required=True, help=CHECKPOINT_HELP)
    add_set_option(parser, "override the saved run config, e.g. --set data.root=/data/diving48")
    parser.add_argument("--views", help="test views CLIPSxCROPS, e.g. 3x3 (default: the run config's)")
    parser.add_argument("--split", help="split to evaluate (default: data.test_split, else data.val_split)")
    parser.add_argument("--out", help="report folder (default: <checkpoint>/eval_<split>)")
    parser.add_argument("--batch-size", type=int, help="samples per batch (default: data.batch_size)")
    parser.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate and print the metrics."""
    from pevl.cli import checkpoint_inputs
    from pevl.engine.evaluate import REPORT_FILES, metrics_json, run_evaluation, summary_line
    from pevl.errors import PevlError
    from pevl.utils.io import check_not_inputs

    model_keys = [item for item in args.overrides if item.split("=", 1)[0].strip().startswith("model.")]
    if model_keys:
        raise PevlError(
            f"--set {model_keys[0]}: the model is the checkpoint's as trained; model settings cannot change at "
            "evaluation (use --set data.* / train.amp, or train another model)"
        )
    if args.out:
        check_not_inputs({f"report {name}": Path(args.out) / name for name in REPORT_FILES},
                         checkpoint_inputs(args.checkpoint))  # fmt: skip
    result = run_evaluation(
        args.checkpoint,
        args.overrides,
        views=args.views,
        split=args.split,
        out_dir=args.out,
        batch_size=args.batch_size,
        progress=not (args.no_progress or args.json),
    )
    if result.metrics:
        print(
            metrics_json(result.metrics) if args.json else f"{summary_line(result.metrics)}\nreport: {result.out_dir}"
        )
    return 0
