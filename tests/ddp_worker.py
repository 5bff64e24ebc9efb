"""Trains the runs a JSON plan lists, each interrupted by ``train.max_steps`` and resumed: the script the distributed
tests launch with ``torchrun`` (``python -m torch.distributed.run ... tests/ddp_worker.py PLAN``).

A plan is ``{"runs": [{"work_dir": ..., "settings": [...], "stop_at": N}, ...]}``: for each run, ``pevl train`` with
the ``--set`` settings and ``train.max_steps=N``, then ``--resume`` to the end, all in one process group. A run with
``"unfreeze": [names]`` makes those parameters trainable (a model whose loss leaves them out) and writes the error
the training stops with to ``<work_dir>.rank<R>.error``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch


def main(plan_file: str) -> int:
    from pevl.engine.config import load_config
    from pevl.engine.train import train

    torch.set_num_threads(1)
    plan = json.loads(Path(plan_file).read_text())
    for run in plan["runs"]:
        if run.get("unfreeze"):
            _train_with_unused(run, run["unfreeze"])
            continue
        first = load_config(None, [*run["settings"], f"train.max_steps={run['stop_at']}"])
        train(first, run["work_dir"], progress=False)
        train(load_config(None, run["settings"]), run["work_dir"], resume=True, progress=False)
    return 0


def _train_with_unused(run: dict, names: list[str]) -> None:
    """Train with ``names`` trainable although no loss uses them; record the error on each rank."""
    import pevl.models.pevl as pevl_model
    from pevl.engine.config import load_config
    from pevl.engine.distributed import get_rank
    from pevl.engine.train import train
    from pevl.errors import PevlError

    rule = pevl_model.set_trainable

    def also_unused(model: torch.nn.Module, cfg: object) -> None:
        rule(model, cfg)
        for name, param in model.named_parameters():
            if name in names:
                param.requires_grad_(True)

    pevl_model.set_trainable = also_unused
    try:
        train(load_config(None, run["settings"]), run["work_dir"], progress=False)
        message = "no error"
    except PevlError as error:
        message = str(error)
    finally:
        pevl_model.set_trainable = rule
    Path(f"{run['work_dir']}.rank{get_rank()}.error").write_text(message)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
