"""The timeline options of ``pevl predict``: sliding windows, segments, an annotated video, live input."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_timeline_options(parser: argparse.ArgumentParser) -> None:
    """Add the timeline, annotated-video and live-input options to the ``predict`` parser."""
    group = parser.add_argument_group(
        "timeline (long videos and live input)",
        "Score sliding windows instead of one clip of the whole video. VIDEO may also be '-' (a stream on stdin), a "
        "URL or a capture device, processed as it arrives.",
    )
    group.add_argument("--timeline", action="store_true",
                       help="score sliding windows (default window: the model's clip of T_p consecutive frames, at "
                       "least 1 s; stride: half the window)")  # fmt: skip
    group.add_argument("--window", type=float, metavar="SECONDS", help="window length in seconds (implies --timeline)")
    group.add_argument("--stride", type=float, metavar="SECONDS", help="seconds between window starts (default: half "
                       "the window; at most the window)")  # fmt: skip
    group.add_argument("--min-score", type=float, default=0.0, help="segments keep windows whose top-1 probability is "
                       "at least this (default 0)")  # fmt: skip
    group.add_argument(
        "--smooth",
        type=int,
        default=1,
        metavar="WINDOWS",
        help="average probabilities over this many neighbouring windows before merging (default 1)",
    )
    group.add_argument("--batch-size", type=int, default=8, help="windows per model call (default 8)")
    group.add_argument("--out-json", metavar="FILE", help="write the timeline (windows and segments) as JSON")
    group.add_argument("--out-csv", metavar="FILE", help="write the windows' top-k as CSV (window, start, end, rank, "
                       "label, probability)")  # fmt: skip
    group.add_argument("--out-video", metavar="FILE", help="write the video with the skeleton, the top-3 actions and a "
                       "timeline bar drawn on it (.mp4; files only)")  # fmt: skip
    group.add_argument("--live", action="store_true", help="treat VIDEO as a live stream even if it is a file name "
                       "(bounded buffer; frames are dropped when processing falls behind)")  # fmt: skip
    group.add_argument("--input-format", help="FFmpeg input format of a stream that cannot be probed (e.g. v4l2, "
                       "mpegts)")  # fmt: skip


def wants_timeline(args: argparse.Namespace) -> bool:
    """Whether the options ask for a timeline rather than one clip."""
    from pevl.apps.sources import is_live_name

    windows = args.timeline or args.window is not None or args.stride is not None
    return bool(windows or args.out_json or args.out_csv or args.out_video or args.live or is_live_name(args.video))


def run_timeline_command(args: argparse.Namespace) -> int:
    """Compute the timeline, print it (each window as it completes for live input) and write the outputs."""
    from pevl.apps.inference import parse_labels
    from pevl.apps.sources import is_live_name, require_source
    from pevl.apps.stream import timeline_video
    from pevl.apps.timeline import Timeline, Window, format_window
    from pevl.cli import checkpoint_inputs
    from pevl.errors import PevlError
    from pevl.utils.io import check_not_inputs, check_output_file

    if args.top_k < 1:
        raise PevlError("--top-k must be at least 1")
    if args.crops != 1:
        raise PevlError("--crops 3 is not supported with a timeline: windows use the centre crop")
    if args.smooth < 1:
        raise PevlError(f"--smooth must be at least 1 window (got {args.smooth})")
    live = args.live or is_live_name(args.video)
    if live and args.out_video:
        raise PevlError("--out-video needs a video file, not a live source")
    require_source(args.video)
    check_not_inputs(
        {"--out-json file": args.out_json, "--out-csv file": args.out_csv, "--out-video file": args.out_video},
        [args.video, args.pose_file, args.labels, *checkpoint_inputs(args.checkpoint)],
    )
    for path, what in ((args.out_json, "timeline JSON"), (args.out_csv, "timeline CSV"), (args.out_video, "video")):
        if path:
            check_output_file(path, what)
    if args.out_video and Path(args.out_video).suffix.lower() not in (".mp4", ".mov", ".mkv"):
        raise PevlError(f"{args.out_video}: the annotated video must be .mp4, .mov or .mkv")

    def on_window(timeline: Timeline, window: Window) -> None:
        if args.json:
            print(json.dumps(timeline.window_dict(window, args.top_k)), flush=True)
        else:
            print(format_window(timeline, window, args.top_k), flush=True)

    timeline = timeline_video(
        args.video,
        args.checkpoint,
        labels=parse_labels(args.labels),
        window=args.window,
        stride=args.stride,
        batch_size=args.batch_size,
        amp=args.amp,
        pose_backend=args.pose_backend,
        pose_file=args.pose_file,
        pose_layout=args.pose_layout,
        keep_poses=bool(args.out_video),
        live=live,
        input_format=args.input_format,
        on_window=on_window if live else None,
        resample_poses=args.resample_poses,
    )
    for warning in timeline.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.out_video:
        from pevl.apps.annotate import annotate_video

        annotate_video(args.video, timeline, args.out_video)
    if args.out_json:
        timeline.write_json(args.out_json, args.top_k, args.min_score, args.smooth)
    if args.out_csv:
        timeline.write_csv(args.out_csv, args.top_k)
    if timeline.dropped_frames:
        print(f"warning: {timeline.dropped_frames} frames dropped (processing fell behind the live source)",
              file=sys.stderr)  # fmt: skip
    if live:
        segments = timeline.segments(args.min_score, args.smooth)
        if args.json:
            print(json.dumps({"segments": [s.to_dict() for s in segments]}), flush=True)
        else:
            print("segments:")
            print("\n".join(f"  {s.start:8.2f} - {s.end:8.2f} s  {100 * s.score:6.2f}%  {s.label}" for s in segments))
    elif args.json:
        print(json.dumps(timeline.to_dict(args.top_k, args.min_score, args.smooth), indent=2))
    else:
        print(timeline.format(args.top_k, args.min_score, args.smooth))
    return 0
