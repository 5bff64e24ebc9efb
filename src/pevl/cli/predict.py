"""``pevl predict VIDEO --checkpoint CKPT [--labels FILE|"a;b;c"] [--top-k 5] [--json]``."""

from __future__ import annotations

import argparse
import json
import sys

from pevl.cli._checkpoint import CHECKPOINT_HELP
from pevl.cli._timeline import add_timeline_options, run_timeline_command, wants_timeline


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``predict`` command."""
    parser = subparsers.add_parser(
        "predict",
        help="top-k actions of a video",
        description="Decode a video, get its poses (a pose file, the extract-poses cache, or estimated on the fly) "
        "and print the most likely actions. --labels scores any label texts, not only the trained classes.",
    )
    parser.add_argument("video", help="the video file ('-', a URL or a device for live input: see timeline)")
    parser.add_argument("--checkpoint", "-k", required=True, help=CHECKPOINT_HELP)
    parser.add_argument("--labels", help='label file (one per line) or "a;b;c" (default: the trained classes)')
    parser.add_argument("--top-k", type=int, default=5, help="how many actions to print (default 5)")
    parser.add_argument("--pose-file", help="poses of the video as a PYSKL pickle (default: cache, else estimate)")
    parser.add_argument("--pose-layout", help="joint layout of --pose-file when not COCO-17 (e.g. jhmdb15)")
    parser.add_argument(
        "--resample-poses",
        action="store_true",
        help="use --pose-file poses whose frame count is far from the video's, resampled by time (by default only "
        "a difference of a few percent is resampled, with a warning; more is refused)",
    )
    parser.add_argument("--pose-backend", default="mediapipe", help="pose extractor (default mediapipe)")
    parser.add_argument("--crops", type=int, default=1, choices=(1, 3), help="spatial crops averaged (default 1)")
    parser.add_argument(
        "--amp",
        default="auto",
        choices=("auto", "bf16", "off"),
        help="precision: auto = bf16 autocast where it is faster (GPUs; CPUs with AMX/AVX512-BF16 for ViT-B and "
        "wider models), else fp32; off = fp32",
    )
    parser.add_argument(
        "--no-text-cache",
        action="store_true",
        help="encode the label texts again instead of reading them from $PEVL_CACHE/texts",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="print where the time went (stderr)")
    parser.add_argument("--json", action="store_true", help="print one JSON object (JSON lines for live input)")
    add_timeline_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Predict and print."""
    import time

    if wants_timeline(args):
        return run_timeline_command(args)

    started = time.perf_counter()
    from pevl.apps.inference import parse_labels, predict_video
    from pevl.errors import PevlError

    import_seconds = time.perf_counter() - started

    if args.top_k < 1:
        raise PevlError("--top-k must be at least 1")
    result = predict_video(
        args.video,
        args.checkpoint,
        labels=parse_labels(args.labels),
        top_k=args.top_k,
        pose_file=args.pose_file,
        pose_layout=args.pose_layout,
        pose_backend=args.pose_backend,
        crops=args.crops,
        amp=args.amp,
        text_cache=not args.no_text_cache,
        resample_poses=args.resample_poses,
    )
    if args.verbose:
        _print_timings(result, import_seconds, time.perf_counter() - started)
    for warning in result["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    if result["person_detected_fraction"] is None:
        print(f"{result['video']}  (video-only model: no poses used)")
    else:
        print(
            f"{result['video']}  (poses: {result['pose_source']}, person in "
            f"{100 * result['person_detected_fraction']:.0f}% of pose frames)"
        )
    for rank, item in enumerate(result["top_k"], 1):
        print(f"{rank:>2}. {100 * item['probability']:6.2f}%  {item['label']}")
    return 0


def _print_timings(result: dict, import_seconds: float, total_seconds: float) -> None:
    """The ``--verbose`` breakdown of the command's time, one stage per line, on stderr."""
    seconds = {"imports": import_seconds, **result["seconds"]}
    cached = " (cached)" if result.get("texts_cached") else ""
    for stage, value in seconds.items():
        print(f"{stage + (cached if stage == 'texts' else ''):>16}: {value:7.3f} s", file=sys.stderr)
    print(f"{'total':>16}: {total_seconds:7.3f} s (precision {result.get('precision', '?')}; interpreter start "
          "not included)", file=sys.stderr)  # fmt: skip
