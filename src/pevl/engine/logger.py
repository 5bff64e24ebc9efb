"""Training metrics to ``metrics.jsonl`` (one JSON object per line), ``train.log`` (plain text) and TensorBoard.

``train.log`` is what users tail and paste into bug reports, one line per logged step or evaluation, in the
manner of MMAction2's log::

    2026-11-30 02:10:11 - pevl - INFO - Epoch(train) [1][4/8]  step: 4  lr: 1.0000e-03  eta: 0:00:12  time: 0.512
        loss: 2.0794  ...
    2026-11-30 02:10:13 - pevl - INFO - Epoch(val) [1]  step: 8  top1: 0.5000  top5: 1.0000  ...

A resumed run appends to it (after a line saying where it resumed from).
"""

from __future__ import annotations

import datetime
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from pevl.errors import PevlError, file_error
from pevl.utils.io import atomic_open

METRICS_FILE = "metrics.jsonl"
LOG_FILE = "train.log"


def _plain_value(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().item() if value.numel() == 1 else value.detach().cpu().tolist()
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    return value


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Read a ``metrics.jsonl`` file (a work dir works too).

    A half-written last line (the process was killed while writing) is ignored.

    Raises:
        PevlError: The file is missing or a complete line is not a JSON object (naming the line).
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise file_error(path, "metrics file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise file_error(path, f"cannot read metrics file ({err})") from None
    lines = text.split("\n")
    complete, partial = lines[:-1], lines[-1]
    records = []
    for number, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise file_error(path, f"line {number} is not valid JSON ({err.msg})") from None
        if not isinstance(record, dict):
            raise file_error(path, f"line {number} is not a JSON object")
        records.append(record)
    if partial.strip():
        try:
            record = json.loads(partial)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            records.append(record)
    return records


class MetricLogger:
    """Append metrics as JSON lines (flushed at once) and mirror numeric ones to TensorBoard.

    Args:
        work_dir: Run directory; lines go to ``<work_dir>/metrics.jsonl``, TensorBoard events to
            ``<work_dir>/tensorboard``.
        tensorboard: Also write TensorBoard events (requires the ``tensorboard`` package).
        enabled: ``False`` on non-main processes: every call does nothing.
        purge_after: When resuming from step S, drop the lines logged after S by the interrupted run
            (TensorBoard's ``purge_step`` likewise), so that the log reads like an uninterrupted run.
            ``train.log`` is only appended to.
        total_steps: Optimiser steps of the whole run, for the time left (``eta``) in ``train.log``.
        steps_per_epoch: Optimiser steps per epoch, for the ``[epoch][iter/iters]`` of ``train.log``.

    Raises:
        PevlError: TensorBoard was requested but is not installed.
    """

    def __init__(
        self,
        work_dir: str | Path,
        tensorboard: bool = False,
        enabled: bool = True,
        purge_after: int | None = None,
        total_steps: int | None = None,
        steps_per_epoch: int | None = None,
    ) -> None:
        self.path = Path(work_dir) / METRICS_FILE
        self.log_path = Path(work_dir) / LOG_FILE
        self.enabled = enabled
        self.total_steps = total_steps
        self.steps_per_epoch = steps_per_epoch
        self._last = (time.time(), purge_after or 0)  # (time, step) of the previous training line, for eta
        self._writer: Any = None
        self._file: Any = None
        self._text: Any = None
        if not enabled:
            return
        if tensorboard:  # before anything is written: a refused run leaves nothing behind
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise PevlError(
                    "TensorBoard logging was requested (train.tensorboard: true) but the 'tensorboard' package "
                    "is not installed: pip install tensorboard, or set train.tensorboard=false"
                ) from None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if purge_after is not None and self.path.exists():
            self._purge(purge_after)
        elif self.path.exists():
            self._drop_partial_line()
        if tensorboard:
            purge_step = None if purge_after is None else purge_after + 1
            self._writer = SummaryWriter(log_dir=str(Path(work_dir) / "tensorboard"), purge_step=purge_step)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 -- kept open for the run
        self._text = open(self.log_path, "a", encoding="utf-8")  # noqa: SIM115 -- kept open for the run

    def _purge(self, step: int) -> None:
        kept = [r for r in read_metrics(self.path) if not isinstance(r.get("step"), int) or r["step"] <= step]
        with atomic_open(self.path, "w") as f:
            for record in kept:
                f.write(json.dumps(record) + "\n")

    def _drop_partial_line(self) -> None:
        """Cut a half-written last line so the next line does not get glued to it."""
        with open(self.path, "rb+") as f:
            data = f.read()
            if data and not data.endswith(b"\n"):
                f.truncate(data.rfind(b"\n") + 1)

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Append ``{"step": step, "time": <unix seconds>, **metrics}`` as one line, flushed to disk.

        Args:
            step: The optimiser step (the x axis).
            metrics: Names to numbers (0-d tensors and numpy scalars are converted) or short strings.
        """
        if not self.enabled:
            return
        record = {"step": int(step), "time": round(time.time(), 3)}
        record.update({str(k): _plain_value(v) for k, v in metrics.items()})
        self._file.write(json.dumps(record, allow_nan=True) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        line = self._text_line(record)
        if line:
            self.note(line, stamp=record["time"])
        if self._writer is not None:
            for key, value in record.items():
                if key in ("step", "time") or isinstance(value, bool) or not isinstance(value, (int, float)):
                    continue
                self._writer.add_scalar(key, value, global_step=int(step))
            self._writer.flush()

    def note(self, message: str, stamp: float | None = None) -> None:
        """Append one plain-text line to ``train.log``, after a time stamp (e.g. where a run resumed from)."""
        if self._text is None:
            return
        when = datetime.datetime.fromtimestamp(time.time() if stamp is None else stamp)
        self._text.write(f"{when:%Y-%m-%d %H:%M:%S} - pevl - INFO - {message}\n")
        self._text.flush()

    def _text_line(self, record: Mapping[str, Any]) -> str | None:
        """The ``train.log`` line of a metrics record: a training step or an evaluation, else nothing."""
        step, epoch = record["step"], record.get("epoch")
        shown = {k[4:]: v for k, v in record.items() if k.startswith("val/")}
        if shown:
            head = f"Epoch(val) [{epoch}]  step: {step}"
        elif "loss" in record:
            where = f"[{epoch}]"
            if self.steps_per_epoch and isinstance(epoch, int):
                where += f"[{step - (epoch - 1) * self.steps_per_epoch}/{self.steps_per_epoch}]"
            last_time, last_step = self._last
            per_step = (record["time"] - last_time) / max(step - last_step, 1)
            self._last = (record["time"], step)
            head = f"Epoch(train) {where}  step: {step}  lr: {record.get('lr', float('nan')):.4e}"
            if self.total_steps:
                eta = datetime.timedelta(seconds=round(per_step * max(self.total_steps - step, 0)))
                head += f"  eta: {eta}"
            head += f"  time: {per_step:.3f}"
            shown = {k: v for k, v in record.items() if k not in ("step", "time", "epoch", "lr")}
            shown = {"loss": shown.pop("loss"), **shown}
        else:
            return None
        parts = [f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}" for k, v in shown.items()]
        return "  ".join([head, *parts])

    def close(self) -> None:
        """Flush and close the files."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._text is not None:
            self._text.close()
            self._text = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> MetricLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
