"""``pevl make-synthetic``: write the synthetic fine-grained dive dataset."""

from __future__ import annotations

import argparse
from typing import Any

DESCRIPTION = """\
Render a synthetic fine-grained action dataset: an articulated figure performing dives composed of take-off
(forward, back, reverse, inward) x somersaults x twists x flight position (tucked, piked, straight), with the
exact COCO-17 2D poses. Neighbouring classes differ in a single factor, so a model has to use the motion.

OUT receives videos/<label>/<name>.mp4, poses.pkl (PYSKL format, split train/val), classes.txt, coarse.txt,
train.txt, val.txt and meta.json; train on it with the dataset name 'synthetic' and root OUT. The same settings
always give the same files; an interrupted run picks up where it stopped.
"""


def register(subparsers: Any) -> None:
    """Add the ``make-synthetic`` sub-command."""
    parser = subparsers.add_parser(
        "make-synthetic",
        help="render the synthetic fine-grained dive dataset (videos + exact poses)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("out", metavar="OUT", help="output folder")
    parser.add_argument("--classes", type=int, default=8, metavar="N", help="number of classes (default: 8)")
    parser.add_argument("--per-class", type=int, default=16, metavar="K", help="clips per class (default: 16)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--frames", type=int, default=32, help="frames per clip (default: 32)")
    parser.add_argument("--size", type=int, default=64, help="frame side in pixels, a multiple of 4 (default: 64)")
    parser.add_argument(
        "--val-fraction", type=float, default=0.25, help="share of each class in the val split (default: 0.25)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a set made with other settings")
    parser.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``pevl make-synthetic``."""
    from pevl.data.synthetic import make_synthetic
    from pevl.utils.io import check_output_dir

    check_output_dir(args.out, "dataset folder")  # before any clip is rendered
    meta = make_synthetic(
        args.out,
        num_classes=args.classes,
        per_class=args.per_class,
        seed=args.seed,
        frames=args.frames,
        size=args.size,
        val_fraction=args.val_fraction,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    counts = meta["counts"]
    print(f"{args.out}: {counts['classes']} classes, {counts['train']} train / {counts['val']} val clips")
    return 0
