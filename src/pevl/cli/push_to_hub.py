"""``pevl push-to-hub CHECKPOINT --repo-id ORG/NAME --out DIR [--push]``: share a trained model on the Hub."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``push-to-hub`` command."""
    parser = subparsers.add_parser(
        "push-to-hub",
        help="write a Hugging Face Hub folder for a trained model (and upload it with --push)",
        description="Write a hub-ready folder for a checkpoint: model.safetensors, config.json (model config, "
        "label list, metrics, training data), labels.txt and a model card (README.md) with the evaluation "
        "metrics and the data the model was trained on. --push uploads it (network and a Hub token needed: "
        "`hf auth login` or HF_TOKEN). Others then use it as `pevl predict VIDEO -k hf-hub:ORG/NAME` or "
        "`pevl.create_model('hf-hub:ORG/NAME')`. Needs pip install 'pevl[hf]' to push.",
    )
    parser.add_argument("checkpoint", help="checkpoint dir, its model.safetensors, or a work dir (latest)")
    parser.add_argument("--repo-id", required=True, metavar="ORG/NAME", help="the Hub repository (ORG/NAME[@rev])")
    parser.add_argument("--out", "-o", required=True, metavar="DIR", help="the folder to write (new or empty)")
    parser.add_argument("--dataset", help="the training dataset's name in the card (default: the run's dataset)")
    parser.add_argument(
        "--metrics", metavar="JSON", help="metrics to report instead of the stored ones, e.g. '{\"top1\": 0.83}'"
    )
    parser.add_argument("--push", action="store_true", help="upload the folder to the Hub after writing it")
    parser.add_argument("--private", action="store_true", help="create the repository as private (with --push)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the folder, then push it when asked."""
    from pevl.errors import PevlError
    from pevl.hub.hf import push_hub_folder, write_hub_folder

    metrics = None
    if args.metrics:
        try:
            metrics = json.loads(args.metrics)
        except json.JSONDecodeError as err:
            raise PevlError(f"--metrics is not JSON ({err})") from None
        if not isinstance(metrics, dict):
            raise PevlError('--metrics must be a JSON object such as {"top1": 0.83}')
    if args.private and not args.push:
        raise PevlError("--private applies to --push only")
    folder = write_hub_folder(args.checkpoint, args.out, args.repo_id, dataset=args.dataset, metrics=metrics)
    print(f"hub folder written to {folder}")
    if args.push:
        print(f"uploaded: {push_hub_folder(folder, args.repo_id, private=args.private)}")
    else:
        print(f"upload it with --push next time, or now with: hf upload {args.repo_id} {folder}")
    return 0
