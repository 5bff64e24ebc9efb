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
A rawframe line reads exactly its listed frames; --with-offset, --multi-class and --start-index are
MMAction2's with_offset, multi_class and start_index ('imgs 2 5 127' is refused as ambiguous without
one of the first two). A line repeating an earlier one is dropped with a warning.
Finished videos are cached, so a rerun skips them; a video that cannot be read is reported and skipped.

Unlabelled videos get no 'label' key (MMAction2 loads that); for PYSKL, whose pipelines collect
'label', pass --placeholder-label -1.

Splits: --split NAME (default: all) holds every written video; each list file adds a split named after it.
Detection gaps of at most --fill-gap frames are interpolated (lower scores); --no-fill keeps raw output.
MediaPipe tracks one person: with --max-persons > 1 a visible second person is reported as a warning; the
rtmlib backend tracks several persons.

Videos that are processed but questionable (nobody found, a single frame, a truncated file) get a warning
line each and are counted in the summary.

Dataset scale: under torchrun (any number of processes and nodes) each rank extracts its share of the
videos into the pose cache and rank 0 merges once all are done. For job arrays, run one task per
--shard K/N (K = 0 .. N-1), then once with --merge. Shards share the pose cache (--cache-dir on a shared
filesystem across machines); every shard is resumable, and the merged pickle equals a one-process run's.

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
        "--with-offset",
        action="store_true",
        help="rawframe list lines are 'folder offset total_frames [label ...]' (MMAction2's with_offset)",
    )
    parser.add_argument(
        "--multi-class",
        action="store_true",
        help="several labels on a list line are a multi-label line (MMAction2's multi_class; the pickle gets "
        "the first)",
    )
    parser.add_argument(
        "--start-index",
        type=int,
        metavar="N",
        help="number of a rawframe folder's first frame file (MMAction2's start_index; default: the number of "
        "the folder's first file)",
    )
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
    parser.add_argument(
        "--placeholder-label",
        type=int,
        metavar="N",
        help="label written for unlabelled videos (default: none, as PYSKL's tool writes them); PYSKL's pipelines "
        "collect 'label', so pass -1 to run them on unlabelled videos",
    )
    parser.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    parser.add_argument(
        "--shard",
        metavar="K/N",
        help="process only shard K of N (K = 0 .. N-1, e.g. $SLURM_ARRAY_TASK_ID/N) into the cache; then --merge",
    )
    parser.add_argument(
        "--merge", action="store_true", help="write the pickle from the cache filled by the --shard runs"
    )
    parser.add_argument(
        "--wait-timeout",
        type=float,
        default=120.0,
        metavar="MIN",
        help="under torchrun: minutes a finished rank waits for the others before failing (default: 120)",
    )
    parser.set_defaults(func=run)


def _default_gap() -> int:
    from pevl.data.pose.gaps import DEFAULT_MAX_GAP

    return DEFAULT_MAX_GAP


def run(args: argparse.Namespace) -> int:
    """Run ``pevl extract-poses``."""
    from pevl.data.pose.cache import default_cache_dir
    from pevl.data.pose.extract import extract_poses
    from pevl.data.pose.shards import parse_shard
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
    shard = parse_shard(args.shard) if args.shard else None
    if shard is not None and args.merge:
        raise PevlError("--shard and --merge are separate steps: run every shard, then --merge once")
    if args.start_index is not None and args.start_index < 0:
        raise PevlError(f"--start-index must be at least 0, got {args.start_index}")
    if args.wait_timeout <= 0:
        raise PevlError(f"--wait-timeout must be positive, got {args.wait_timeout}")
    check_not_inputs({"skeleton pickle": args.out}, args.inputs)  # videos inside folders/lists: extract_poses
    check_output_file(args.out, "skeleton pickle")  # before any video is processed
    check_output_dir(args.cache_dir or default_cache_dir(), "pose cache folder")
    options: dict[str, Any] = dict(
        backend=args.backend,
        workers=args.workers,
        cache_dir=args.cache_dir,
        max_persons=args.max_persons,
        root=args.root,
        progress=not args.no_progress,
        backend_kwargs=backend_kwargs,
        split_name=args.split,
        max_gap=0 if args.no_fill else (_default_gap() if args.fill_gap is None else args.fill_gap),
        placeholder_label=args.placeholder_label,
        list_options={"with_offset": args.with_offset, "multi_class": args.multi_class,
                      "start_index": args.start_index},  # fmt: skip
    )
    if shard is None and not args.merge and _torchrun_world_size() > 1:
        return _run_ranks(args, options)
    summary = extract_poses(args.inputs, args.out, shard=shard, merge=args.merge, **options)
    _report(summary)
    return 1 if summary.failed else 0


def _report(summary: Any) -> None:
    import sys

    for _, warning in summary.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(summary.format())


def _torchrun_world_size() -> int:
    import os

    try:
        return int(os.environ.get("WORLD_SIZE") or 1)
    except ValueError:
        return 1


def _run_ranks(args: argparse.Namespace, options: dict[str, Any]) -> int:
    """Under torchrun: this rank's shard, a barrier (gloo, ``--wait-timeout``), then rank 0 merges."""
    from pevl.data.pose.extract import extract_poses
    from pevl.engine.distributed import barrier, cleanup, init_distributed

    info = init_distributed("gloo", timeout_minutes=args.wait_timeout)
    try:
        summary = extract_poses(args.inputs, args.out, shard=(info.rank, info.world_size), **options)
        print(f"rank {info.rank}/{info.world_size}: {summary.format()}")
        barrier()  # every shard's videos are in the cache and its report is written
        if not info.is_main:
            return 0  # rank 0 reports the failures of every rank
        merged = extract_poses(args.inputs, args.out, merge=True, **{**options, "workers": 1})
        _report(merged)
        return 1 if merged.failed else 0
    finally:
        cleanup()
