"""Trains the runs a JSON plan lists, each interrupted by ``train.max_steps`` and resumed: the script the distributed
tests launch with ``torchrun`` (``python -m torch.distributed.run ... tests/ddp_worker.py PLAN``).

A plan is ``{"runs": [{"work_dir": ..., "settings": [...], "stop_at": N}, ...]}``: for each run, ``pevl train`` with
the ``--set`` settings and ``train.max_steps=N``, then ``--resume`` to the end, all in one process group.
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
        first = load_config(None, [*run["settings"], f"train.max_steps={run['stop_at']}"])
        train(first, run["work_dir"], progress=False)
        train(load_config(None, run["settings"]), run["work_dir"], resume=True, progress=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
