"""``pevl profile PRESET``: parameters and GFLOPs per module group, counted on the meta device."""

from __future__ import annotations

import argparse
import json

from pevl.cli import add_set_option


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``profile`` command."""
    parser = subparsers.add_parser(
        "profile",
        help="parameters and GFLOPs of a model preset",
        description="Count total/trainable parameters and forward GFLOPs (multiply-adds) per module group. "
        "The model is built on the meta device, so no memory is needed even for ViT-L/14.",
    )
    parser.add_argument("preset", help="model preset, e.g. pevl_vit_b16 (see `pevl profile --list`)", nargs="?")
    parser.add_argument("--video-frames", type=int, default=8, help="T_v, RGB frames per clip (default 8)")
    parser.add_argument("--pose-frames", type=int, default=32, help="T_p, pose frames per clip (default 32)")
    parser.add_argument("--num-classes", type=int, default=400, help="class texts scored per clip (default 400)")
    add_set_option(parser, "change a model config field, typed like model.overrides, e.g. --set num_ucmr_blocks=2")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--list", action="store_true", help="list the presets and exit")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Profile the preset and print a table or JSON."""
    from pevl.engine.config import parse_model_overrides
    from pevl.errors import PevlError
    from pevl.models.presets import describe_model, list_models
    from pevl.tools.profile import format_profile, profile_model

    if args.list or not args.preset:
        for name in list_models():
            print(f"{name:28s} {describe_model(name)}")
        return 0 if args.list else 2
    overrides = parse_model_overrides(args.overrides)
    video_frames = overrides.pop("num_video_frames", args.video_frames)  # --set num_video_frames=N works too
    pose_frames = overrides.pop("num_pose_frames", args.pose_frames)
    if video_frames < 1 or pose_frames < 1 or args.num_classes < 1:
        raise PevlError("--video-frames, --pose-frames and --num-classes must be positive")
    profile = profile_model(args.preset, video_frames, pose_frames, args.num_classes, **overrides)
    print(json.dumps(profile, indent=2) if args.json else format_profile(profile))
    return 0
