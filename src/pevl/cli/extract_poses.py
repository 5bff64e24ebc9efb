"""``pevl extract-poses``: estimate COCO-17 poses of videos into a PYSKL skeleton pickle."""

from __future__ import annotations

import argparse
from typing import Any

DESCRIPTION = """\
Estimate the COCO-17 poses of videos and write them in the PYSKL / MMAction2 skeleton format
(split, annotations with frame_dir, total_frames, img_shape, original_shape, label (only when known),
keypoint [M,T,17,2] float32, keypoint_score [M,T,17] float32; pixel coordinates). The pickle loads in PYSKL
and MMAction2 under numpy 1.x and 2.x.

INPUT is a video, a rawframe folder (img_00001.jpg, ...), a folder (searched recursively for videos and
rawframe folders; frame_dir = relative path without extension) or an MMAction2 list (.txt/.lst/.list:
'path [label ...]' video lines or 'folder total_frames [label ...]' rawframe lines; frame_dir = stem).
Finished videos are cached, so a rerun skips them; a video that cannot be read is reported and skipped.

Splits: --split NAME (default: all) holds every written video; each list file adds a split named after it.
Detection gaps of at most --fill-gap frames are interpolated (lower scores); --no-fill keeps raw output.
MediaPipe tracks one person: with --max-persons > 1 a visible second person is reported as a warning; the
rtmlib backend tracks several persons.

Videos that are processed but questionable (nobody found, a single frame, a truncated file) get a warning
line each and are counted in the summary.

Exit status: 0 when every video was processed, 1 when some were skipped (the pickle holds the rest), 2 on bad
input or when no video could be processed.
"""


def register(subparsers: Any) -> None:
    """Add the ``extract-poses`` sub-command."""
    parser = subparsers.add_parser(
        "extract-poses",
        help="estimate poses of videos into a PYSKL skeleton pickle",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="video, rawframe folder, folder, or list file")
    parser.add_argument("--out", "-o", required=True, metavar="FILE", help="output skeleton pickle (.pkl)")
    parser.add_argument(
        "--backend",
        default="mediapipe",
        choices=("mediapipe", "rtmlib", "rtmpose"),
        help="pose estimator: mediapipe (BlazePose, offline default) or rtmlib (RTMPose, pip install "
        "'pevl[rtmpose]', downloads its weights on first use) (default: %(default)s)",
    )
    parser.add_argument("--workers", type=int, default=1, metavar="N", help="worker processes (default: 1)")
    parser.add_argument(
        "--max-persons", type=int, default=1, metavar="M", help="person tracks kept per video (default: 1)"
    )
    parser.add_argument(
        "--cache-dir", metavar="DIR", help="pose cache (default: $PEVL_CACHE/poses or ~/.cache/pevl/poses)"
    )
    parser.add_argument("--root", metavar="DIR", help="folder that relative paths in a video list refer to")
    parser.add_argument(
        "--mode",
        choices=("lightweight", "balanced", "performance"),
        help="rtmlib model size (default: balanced)",
    )
    parser.add_argument("--device", help="rtmlib device: cpu, cuda or mps (default: cpu)")
    parser.add_argument(
        "--split", default="all", metavar="NAME", help="split of the pickle holding every video (default: all)"
    )
    parser.add_argument(
        "--fill-gap",
        type=int,
        default=None,
        metavar="N",
        help=f"interpolate detection gaps of at most N frames (default: {_default_gap()})",
    )
    parser.add_argument("--no-fill", action="store_true", help="write the raw detections, gaps unfilled")
    parser.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    parser.set_defaults(func=run)


def _default_gap() -> int:
    from pevl.data.pose.gaps import DEFAULT_MAX_GAP

    return DEFAULT_MAX_GAP


def run(args: argparse.Namespace) -> int:
    """Run ``pevl extract-poses``."""
    import sys

    from pevl.data.pose.cache import default_cache_dir
    from pevl.data.pose.extract import extract_poses
    from pevl.errors import PevlError
    from pevl.utils.io import check_not_inputs, check_output_dir, check_output_file

    if args.workers < 1:
        raise PevlError(f"--workers must be at least 1, got {args.workers}")
    if args.max_persons < 1:
        raise PevlError(f"--max-persons must be at least 1, got {args.max_persons}")
    if args.fill_gap is not None and (args.fill_gap < 0 or args.no_fill):
        raise PevlError("--fill-gap must be at least 0 and cannot be combined with --no-fill")
    if not args.split.strip():
        raise PevlError("--split needs a name")
    backend_kwargs: dict[str, Any] = {}
    if args.mode or args.device:
        if args.backend == "mediapipe":
            raise PevlError("--mode and --device apply to the rtmlib backend only")
        if args.mode:
            backend_kwargs["mode"] = args.mode
        if args.device:
            backend_kwargs["device"] = args.device
    check_not_inputs({"skeleton pickle": args.out}, args.inputs)  # videos inside folders/lists: extract_poses
    check_output_file(args.out, "skeleton pickle")  # before any video is processed
    check_output_dir(args.cache_dir or default_cache_dir(), "pose cache folder")
    summary = extract_poses(
        args.inputs,
        args.out,
        backend=args.backend,
        workers=args.workers,
        cache_dir=args.cache_dir,
        max_persons=args.max_persons,
        root=args.root,
        progress=not args.no_progress,
        backend_kwargs=backend_kwargs,
        split_name=args.split,
        max_gap=0 if args.no_fill else (_default_gap() if args.fill_gap is None else args.fill_gap),
    )
    for _, warning in summary.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(summary.format())
    return 1 if summary.failed else 0
