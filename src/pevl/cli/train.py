"""``pevl train --config FILE [--set key=value ...] [--work-dir DIR] [--resume [CKPT] | --new-run | --overwrite]``.

A work dir holds one run: training into one that holds a run continues it (``--resume``), starts a new run in a
timestamped sub-folder (``--new-run``) or deletes the earlier run first (``--overwrite``); otherwise it refuses.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pevl.cli import add_set_option


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` command."""
    parser = subparsers.add_parser(
        "train",
        help="train a model from a YAML config",
        description="Train PeVL (or a baseline) as a YAML run config describes. Runs on one CPU as is and on many "
        "GPUs under `torchrun --nproc-per-node N -m pevl train ...`. Ctrl-C saves a checkpoint; --resume continues.",
    )
    parser.add_argument("--config", "-c", help="YAML run config (see configs/); default: the built-in defaults")
    add_set_option(parser, "override a config value, e.g. --set optim.lr=1e-4 (repeatable)")
    parser.add_argument("--work-dir", "-w", help="run directory (default: work_dirs/<config name>)")
    parser.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="CHECKPOINT",
        help="continue from this checkpoint (a checkpoint dir, its model.safetensors or a work dir), or from the "
        "latest one in the work dir when none is given",
    )
    parser.add_argument(
        "--new-run",
        action="store_true",
        help="start a new run in a timestamped sub-folder of the work dir (WORK_DIR/YYYYmmdd_HHMMSS), leaving the "
        "runs already there untouched",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="delete the run already in the work dir (its config.yaml, metrics.jsonl, train.log, checkpoints and "
        "tensorboard folder) before training",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    parser.set_defaults(func=run)


def resolve_work_dir(config: str | None, work_dir: str | None) -> Path:
    """The run directory: ``--work-dir``, else ``work_dirs/<config file stem>``."""
    from pevl.errors import PevlError

    if work_dir:
        return Path(work_dir)
    if config:
        return Path("work_dirs") / Path(config).stem
    raise PevlError("give --config FILE or --work-dir DIR")


def run(args: argparse.Namespace) -> int:
    """Load the config and train."""
    from pevl.engine.checkpoint import CHECKPOINTS_DIR, load_checkpoint, locate_checkpoint
    from pevl.engine.config import RunConfig, apply_overrides, load_config
    from pevl.engine.distributed import is_main_process
    from pevl.engine.train import train
    from pevl.errors import PevlError

    resume = args.resume
    work_dir_arg = args.work_dir
    if isinstance(resume, str):  # --resume CHECKPOINT: its run's work dir unless --config / --work-dir say otherwise
        resume = locate_checkpoint(resume)
        if not (args.config or work_dir_arg) and resume.parent.name == CHECKPOINTS_DIR:
            work_dir_arg = str(resume.parent.parent)
    work_dir = resolve_work_dir(args.config, work_dir_arg)
    config = args.config
    saved = work_dir / "config.yaml"
    if config is None and resume and saved.is_file():
        config = str(saved)
    if config is None and isinstance(resume, Path):  # a new work dir: the run config the checkpoint holds
        cfg = apply_overrides(RunConfig.from_saved(load_checkpoint(resume).config), args.overrides)
    elif config is None and resume:
        raise PevlError(f"{saved}: not found; give --config FILE to resume with")
    else:
        cfg = load_config(config, args.overrides)  # no config file: the defaults, changed by --set
    result = train(
        cfg,
        work_dir,
        resume=resume,
        progress=not args.no_progress,
        overwrite=args.overwrite,
        new_run=args.new_run,
        inputs=(args.config,) if args.config and not resume else (),
    )
    if not is_main_process() or os.environ.get("RANK", "0") != "0":  # rank 0 reports for the whole job
        return 130 if result.interrupted else 0
    if result.interrupted:
        print(f"interrupted after {result.steps} steps; checkpoint {result.checkpoint}", file=sys.stderr)
        print(f"continue with: pevl train --work-dir {result.work_dir} --resume", file=sys.stderr)
        return 130
    summary = f"trained {result.epochs_completed} epochs, {result.steps} steps; checkpoint {result.checkpoint}"
    if result.metrics:
        m = result.metrics
        summary += f"\nval top1 {100 * m['top1']:.2f}  top5 {100 * m['top5']:.2f}  "
        summary += f"mean class {100 * m['mean_class_accuracy']:.2f}"
    print(summary)
    return 0
