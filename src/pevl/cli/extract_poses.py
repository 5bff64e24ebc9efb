"""``pevl extract-poses``: estimate COCO-17 poses of videos into a PYSKL skeleton pickle."""

from __future__ import annotations

import argparse
from typing import Any

DESCRIPTION = """\
Estimate the COCO-17 poses of videos and write them in the PYSKL / MMAction2 skeleton format
(split, annotations with frame_dir, total_frames, img_shape, original_shape, label, keypoint [M,T,17,2],
keypoint_score [M,T,17]; pixel coordinates).

INPUT is a video, a folder (searched recursively; frame_dir = relative path without extension) or a video
list (.txt/.lst/.list, one 'path [label]' per line as in MMAction2; frame_dir = video stem). Finished videos
are cached, so a rerun skips them; a video that cannot be read is reported and skipped.

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
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="video, folder of videos, or video list file")
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
    parser.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``pevl extract-poses``."""
    from pevl.data.pose.extract import extract_poses
    from pevl.errors import PevlError

    if args.workers < 1:
        raise PevlError(f"--workers must be at least 1, got {args.workers}")
    if args.max_persons < 1:
        raise PevlError(f"--max-persons must be at least 1, got {args.max_persons}")
    backend_kwargs: dict[str, Any] = {}
    if args.mode or args.device:
        if args.backend == "mediapipe":
            raise PevlError("--mode and --device apply to the rtmlib backend only")
        if args.mode:
            backend_kwargs["mode"] = args.mode
        if args.device:
            backend_kwargs["device"] = args.device
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
    )
    print(summary.format())
    return 1 if summary.failed else 0
