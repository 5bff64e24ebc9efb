"""``pevl demo [--out DIR]``: train and compare tiny PeVL and VL on synthetic data, offline, in minutes."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` command."""
    parser = subparsers.add_parser(
        "demo",
        help="offline end-to-end demo on synthetic data (a few minutes on a CPU)",
        description="Render a synthetic fine-grained dataset, train tiny PeVL and the tiny VL baseline on it, "
        "evaluate both, predict a few clips and write report.md + report.png. Runs without pretrained weights.",
    )
    parser.add_argument("--out", default="pevl_demo", help="output folder (default: pevl_demo)")
    parser.add_argument("--epochs", type=int, help="training epochs per model (default 30)")
    parser.add_argument("--per-class", type=int, help="synthetic clips per class (default 48)")
    parser.add_argument("--classes", type=int, help="synthetic classes (default 8)")
    parser.add_argument("--seed", type=int, help="dataset and training seed (default 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo and print where the report is."""
    from dataclasses import replace

    from pevl.apps.demo import DemoSettings, run_demo
    from pevl.errors import PevlError
    from pevl.utils.io import check_output_dir

    settings = DemoSettings()
    changes = {"epochs": args.epochs, "per_class": args.per_class, "num_classes": args.classes, "seed": args.seed}
    changes = {k: v for k, v in changes.items() if v is not None}
    if any(v < (0 if k == "seed" else 1) for k, v in changes.items()):
        raise PevlError("--epochs, --per-class and --classes must be positive, --seed non-negative")
    check_output_dir(args.out, "demo folder")  # before minutes of work
    result = run_demo(args.out, replace(settings, **changes), progress=not args.no_progress)
    print()
    for name, m in result.metrics.items():
        on_train = result.train_metrics.get(name, {}).get("top1", float("nan"))
        print(
            f"{name:12s} top1 {100 * m['top1']:5.1f}  top5 {100 * m['top5']:5.1f}  "
            f"mean class {100 * m['mean_class_accuracy']:5.1f}  (top1 on its training clips {100 * on_train:5.1f})"
        )
    classes = replace(settings, **changes).num_classes
    print(f"chance: top1 {100 / classes:.1f}, top5 {100 * min(5, classes) / classes:.1f} ({classes} classes)")
    print("ran without pretrained CLIP weights (random init, trained from scratch on synthetic data)")
    print(f"report: {result.report}")
    return 0
