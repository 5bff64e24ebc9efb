"""``pevl profile PRESET``: parameters and GFLOPs per module group, counted on the meta device."""

from __future__ import annotations

import argparse
import json

from pevl.cli import add_set_option


def parse_assignments(items: list[str]) -> dict[str, object]:
    """Parse ``key=value`` strings; values are read as YAML scalars (``2``, ``false``, ``[video, pose]``)."""
    import yaml

    from pevl.errors import PevlError

    parsed: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise PevlError(f"--set expects key=value, got {item!r}")
        try:
            parsed[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise PevlError(f"--set {key}: cannot parse value {value!r} ({err.__class__.__name__})") from None
    return parsed


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
    add_set_option(parser, "override a model config field, e.g. --set num_ucmr_blocks=2")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--list", action="store_true", help="list the presets and exit")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Profile the preset and print a table or JSON."""
    from pevl.errors import PevlError
    from pevl.models.presets import describe_model, list_models
    from pevl.tools.profile import format_profile, profile_model

    if args.list or not args.preset:
        for name in list_models():
            print(f"{name:28s} {describe_model(name)}")
        return 0 if args.list else 2
    if args.video_frames < 1 or args.pose_frames < 1 or args.num_classes < 1:
        raise PevlError("--video-frames, --pose-frames and --num-classes must be positive")
    profile = profile_model(
        args.preset, args.video_frames, args.pose_frames, args.num_classes, **parse_assignments(args.overrides)
    )
    print(json.dumps(profile, indent=2) if args.json else format_profile(profile))
    return 0
