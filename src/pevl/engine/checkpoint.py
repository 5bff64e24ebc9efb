"""Checkpoints: the weights as safetensors (the release file), the training state as a tensor-only ``torch.save``.

Layout of a work dir::

    <work_dir>/checkpoints/
        epoch_0003_step_000001200/
            model.safetensors    model weights; its metadata holds the run config, epoch, step, metrics, extra (JSON)
            state.pt             optimiser, scheduler, sampler position and RNG states: tensors in plain containers,
                                 read back with ``torch.load(weights_only=True)`` (no code can run while loading)
        latest                   text pointer: the name of the newest checkpoint directory
        best                     text pointer: the name of the best one (kept whatever ``keep_last`` says)

A checkpoint is assembled in a hidden temporary directory and renamed into place, and the pointers are
replaced atomically, so a crash while saving never touches the previous checkpoint. ``model.safetensors``
alone is enough to rebuild the model for prediction.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from pevl.engine.rng import capture_rng, restore_rng
from pevl.errors import PevlError, file_error
from pevl.utils.io import apply_umask, atomic_open

FORMAT = "pevl-checkpoint"
FORMAT_VERSION = 2
CHECKPOINTS_DIR = "checkpoints"
MODEL_FILE = "model.safetensors"
STATE_FILE = "state.pt"
LATEST = "latest"
BEST = "best"
RUN_KEY = "run"  # model-file metadata: the id of the run that saved the checkpoint
_NAME_RE = re.compile(r"^epoch_(\d+)_step_(\d+)(?:-(\d+))?$")


@dataclass
class Checkpoint:
    """Everything read back from a checkpoint."""

    path: Path  # the checkpoint directory, or the lone model file it was read from
    model_state: dict[str, torch.Tensor]  # weights, keyed like model.state_dict()
    config: dict[str, Any]  # the resolved run config (RunConfig.to_dict())
    epoch: int  # epochs completed when saved
    step: int  # optimiser steps taken when saved
    metrics: dict[str, Any] = field(default_factory=dict)  # e.g. validation accuracy at this point
    extra: dict[str, Any] = field(default_factory=dict)  # caller data (class names, model config, ...)
    optimizer_state: dict[str, Any] | None = None  # optimizer.state_dict(); None for a model-only file
    scheduler_state: dict[str, Any] | None = None  # scheduler.state_dict()
    sampler_state: dict[str, Any] | None = None  # ResumableSampler.state_dict()
    rng: list[dict[str, Any]] | None = None  # per-rank RNG states (capture_rng())

    @property
    def model_file(self) -> Path:
        """The ``model.safetensors`` file the weights came from."""
        return self.path if self.path.is_file() else self.path / MODEL_FILE


def _to_json(obj: Any) -> str:
    return json.dumps(obj, allow_nan=True, separators=(",", ":"))


def _fsync(path: Path) -> None:
    """Flush a file or directory to disk (best effort where the OS does not support it)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _safetensors_ready(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous tensors of which no two share memory (safetensors refuses shared or strided tensors)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"model state entry '{name}' is a {type(tensor).__name__}, not a tensor")
        tensor = tensor.detach().cpu()
        storage = tensor.untyped_storage().data_ptr()
        if (tensor.numel() and storage in seen) or not tensor.is_contiguous():
            tensor = tensor.clone(memory_format=torch.contiguous_format)
        seen.add(storage)
        out[name] = tensor
    return out


def _read_safetensors(path: Path, device: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            metadata = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 -- safe_open has no __iter__
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        problem = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise file_error(path, f"not a readable safetensors file ({problem})") from None
    return tensors, metadata


# ---- saving ---------------------------------------------------------------------------------------------------------


def checkpoints_root(work_dir: str | Path) -> Path:
    """Where a run's checkpoints live: ``<work_dir>/checkpoints``."""
    return Path(work_dir) / CHECKPOINTS_DIR


def _parse_name(name: str) -> tuple[int, int, int] | None:
    match = _NAME_RE.match(name)
    if not match:
        return None
    return int(match.group(2)), int(match.group(1)), int(match.group(3) or 0)


def _is_complete(path: Path) -> bool:
    return (path / MODEL_FILE).is_file() and (path / STATE_FILE).is_file()


def list_checkpoints(work_dir: str | Path) -> list[Path]:
    """Complete checkpoint directories of a run, oldest first (by step)."""
    root = _resolve_root(Path(work_dir))
    if not root.is_dir():
        return []
    found = [(key, p) for p in root.iterdir() if p.is_dir() and (key := _parse_name(p.name)) and _is_complete(p)]
    return [p for _, p in sorted(found)]


def _resolve_root(path: Path) -> Path:
    """Accept a work dir or its ``checkpoints`` folder."""
    return path / CHECKPOINTS_DIR if (path / CHECKPOINTS_DIR).is_dir() else path


def _read_pointer(root: Path, name: str) -> Path | None:
    try:
        target = (root / name).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not target or "/" in target or "\\" in target or target.startswith("."):
        return None
    path = root / target
    return path if path.is_dir() and _is_complete(path) else None


def _write_pointer(root: Path, name: str, target: Path) -> None:
    with atomic_open(root / name, "w") as f:
        f.write(target.name + "\n")


def find_latest(work_dir: str | Path) -> Path | None:
    """The newest complete checkpoint directory of a run, or ``None`` when there is none.

    Follows the ``latest`` pointer; when it is missing or stale (a crash at the wrong moment), falls back to
    the checkpoint with the highest step.
    """
    root = _resolve_root(Path(work_dir))
    pointed = _read_pointer(root, LATEST)
    if pointed is not None:
        return pointed
    found = list_checkpoints(root)
    return found[-1] if found else None


def find_best(work_dir: str | Path) -> Path | None:
    """The checkpoint directory the ``best`` pointer names, or ``None``."""
    return _read_pointer(_resolve_root(Path(work_dir)), BEST)


def save_checkpoint(
    work_dir: str | Path,
    *,
    model_state: Mapping[str, torch.Tensor],
    optimizer: torch.optim.Optimizer | Mapping[str, Any] | None = None,
    scheduler: Any = None,
    sampler_state: Mapping[str, Any] | None = None,
    epoch: int,
    step: int,
    config: Mapping[str, Any],
    metrics: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    keep_last: int = 2,
    is_best: bool = False,
    rng_states: Sequence[Mapping[str, Any]] | None = None,
    run: str | None = None,
) -> Path:
    """Save a training checkpoint atomically and prune old ones. Call it on the main process only.

    Args:
        work_dir: The run directory; checkpoints go to ``<work_dir>/checkpoints/epoch_E_step_S``.
        model_state: The (unwrapped) model's ``state_dict()``.
        optimizer: An optimiser or its ``state_dict()``.
        scheduler: A learning-rate scheduler or its ``state_dict()``.
        sampler_state: ``ResumableSampler.state_dict()``.
        epoch: Epochs completed (an interrupted epoch counts as not completed).
        step: Optimiser steps taken.
        config: The resolved run config as a dict (``RunConfig.to_dict()``).
        metrics: Evaluation results at this point.
        extra: Other JSON-serialisable data (class names, the model config, ...); stored in the model file too.
        keep_last: Most recent checkpoints kept besides ``best``; 0 keeps all.
        is_best: Point ``best`` at this checkpoint.
        rng_states: One :func:`capture_rng` snapshot per rank (gathered by the caller); default: this process.
        run: The id of the training run saving it: pruning only ever deletes checkpoints of the same run, so a
            run never removes another run's files (``None``: checkpoints saved without an id).

    Returns:
        The new checkpoint directory.
    """
    root = checkpoints_root(work_dir)
    root.mkdir(parents=True, exist_ok=True)
    base = f"epoch_{int(epoch):04d}_step_{int(step):09d}"
    name, rev = base, 0
    while (root / name).exists():  # never overwrite: a re-save at the same step gets a new revision
        rev += 1
        name = f"{base}-{rev}"
    final = root / name

    model_meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "config": _to_json(dict(config)),
        "epoch": str(int(epoch)),
        "step": str(int(step)),
        "metrics": _to_json(dict(metrics or {})),
        "extra": _to_json(dict(extra or {})),
    }
    if run:
        model_meta[RUN_KEY] = str(run)
    state = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "epoch": int(epoch),
        "step": int(step),
        "optimizer": optimizer.state_dict() if isinstance(optimizer, torch.optim.Optimizer) else optimizer,
        "scheduler": scheduler.state_dict() if hasattr(scheduler, "state_dict") else scheduler,
        "sampler": dict(sampler_state) if sampler_state is not None else None,
        "rng": [dict(s) for s in (rng_states or [capture_rng()])],
    }
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=root))
    try:
        save_file(_safetensors_ready(model_state), str(tmp / MODEL_FILE), metadata=model_meta)
        torch.save(state, tmp / STATE_FILE)
        for written in (tmp / MODEL_FILE, tmp / STATE_FILE, tmp):
            _fsync(written)
        apply_umask(tmp / MODEL_FILE)  # safetensors creates its file 0600 whatever the umask
        apply_umask(tmp / STATE_FILE)
        apply_umask(tmp, directory=True)  # mkdtemp made it 0700 whatever the umask
        os.replace(tmp, final)
        _fsync(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if is_best:
        _write_pointer(root, BEST, final)
    _write_pointer(root, LATEST, final)
    _prune(root, keep_last, current=final, run=run)
    return final


def checkpoint_run(path: Path) -> str | None:
    """The id of the run that saved the checkpoint at ``path`` (``None``: saved without one, or unreadable)."""
    try:
        with safe_open(str(Path(path) / MODEL_FILE), framework="pt") as f:
            return (f.metadata() or {}).get(RUN_KEY)
    except (SafetensorError, OSError, ValueError, RuntimeError):
        return None


def _prune(root: Path, keep_last: int, current: Path, run: str | None = None) -> None:
    """Delete this run's checkpoints beyond the ``keep_last`` newest, its older revisions of this step, stale temps.

    Checkpoints of any other run (another ``run`` id) are never touched.
    """
    protected = {current, _read_pointer(root, BEST), _read_pointer(root, LATEST)}
    found = [p for p in list_checkpoints(root) if checkpoint_run(p) == run]
    key = _parse_name(current.name)
    doomed = [p for p in found if p != current and (k := _parse_name(p.name)) and k[:2] == key[:2]] if key else []
    survivors = [p for p in found if p not in doomed]
    if keep_last > 0:
        doomed += survivors[:-keep_last]
    for path in doomed:
        if path not in protected:
            shutil.rmtree(path, ignore_errors=True)
    for path in root.glob(".tmp-*"):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


# ---- loading --------------------------------------------------------------------------------------------------------


def locate_checkpoint(path: str | Path) -> Path:
    """Resolve what a user passed (checkpoint dir, its model file, a pointer file, a work dir) to a path to read.

    Raises:
        PevlError: Nothing to read there.
    """
    path = Path(path).expanduser()
    if path.is_file():
        if path.name in (LATEST, BEST):
            target = _read_pointer(path.parent, path.name)
            if target is None:
                raise file_error(path, "points to a checkpoint that does not exist")
            return target
        if path.name == MODEL_FILE and (path.parent / STATE_FILE).is_file():
            return path.parent
        return path
    if path.is_dir():
        if (path / MODEL_FILE).is_file():
            return path
        latest = find_latest(path)
        if latest is None:
            raise file_error(path, "no checkpoint found in this directory")
        return latest
    raise file_error(path, "checkpoint not found")


def _model_from_file(model_file: Path, device: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    tensors, metadata = _read_safetensors(model_file, device)
    if metadata.get("format") != FORMAT:
        raise file_error(model_file, "not a pevl checkpoint (its safetensors metadata has no pevl format tag)")
    return tensors, metadata


def _read_state(state_file: Path) -> dict[str, Any]:
    """The training state, read with ``weights_only=True``: tensors and plain containers only, no code."""
    try:
        state = torch.load(state_file, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as err:
        problem = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise file_error(state_file, f"corrupt checkpoint state ({problem})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise file_error(state_file, "not a pevl checkpoint state file")
    return state


def _meta_json(model_file: Path, metadata: Mapping[str, str], key: str, default: Any) -> Any:
    if key not in metadata:
        return default
    try:
        return json.loads(metadata[key])
    except json.JSONDecodeError as err:
        raise file_error(model_file, f"corrupt checkpoint metadata '{key}' ({err})") from None


def load_checkpoint(path: str | Path, device: str = "cpu") -> Checkpoint:
    """Read a checkpoint.

    Args:
        path: A checkpoint directory, its ``model.safetensors`` (a lone model file works too: no training
            state then), a ``latest``/``best`` pointer file, or a work dir (its latest checkpoint).
        device: Where to put the tensors.

    Returns:
        The checkpoint.

    Raises:
        PevlError: The path is missing, not a pevl checkpoint, or corrupt (naming the file).
    """
    location = locate_checkpoint(path)
    model_file = location if location.is_file() else location / MODEL_FILE
    model_state, metadata = _model_from_file(model_file, device)
    config = _meta_json(model_file, metadata, "config", {})
    try:
        epoch, step = int(metadata.get("epoch", 0)), int(metadata.get("step", 0))
    except ValueError:
        raise file_error(model_file, "corrupt checkpoint metadata (epoch/step are not integers)") from None
    checkpoint = Checkpoint(
        path=location,
        model_state=model_state,
        config=config,
        epoch=epoch,
        step=step,
        metrics=_meta_json(model_file, metadata, "metrics", {}),
        extra=_meta_json(model_file, metadata, "extra", {}),
    )
    if location.is_file():
        return checkpoint

    state = _read_state(location / STATE_FILE)
    checkpoint.optimizer_state = state.get("optimizer")
    checkpoint.scheduler_state = state.get("scheduler")
    checkpoint.sampler_state = state.get("sampler")
    checkpoint.rng = state.get("rng")
    checkpoint.epoch, checkpoint.step = int(state.get("epoch", epoch)), int(state.get("step", step))
    return checkpoint


def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def load_model_state(
    model: torch.nn.Module,
    state: Mapping[str, torch.Tensor] | Checkpoint,
    strict: bool = True,
    *,
    source: str | Path | None = None,
    assign: bool = False,
) -> tuple[list[str], list[str]]:
    """Copy weights into ``model`` after checking every key and shape.

    Args:
        model: The model (a DistributedDataParallel wrapper is unwrapped).
        state: A state dict or a :class:`Checkpoint`.
        strict: Fail on missing or unexpected keys; mis-shaped keys always fail.
        source: The file named in errors (taken from the checkpoint when ``state`` is one).
        assign: Make the model use the checkpoint's tensors themselves (memory-mapped, no copy) instead of
            copying them into its own.

    Returns:
        The missing and unexpected keys (both empty when ``strict``).

    Raises:
        PevlError: Naming the file and the first missing, unexpected or mis-shaped key.
    """
    if isinstance(state, Checkpoint):
        source = source or state.model_file
        state = state.model_state
    label = str(source) if source is not None else "checkpoint"
    model = getattr(model, "module", model) if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key in state and tuple(state[key].shape) != tuple(tensor.shape):
            raise PevlError(
                f"{label}: model key '{key}' has shape {_shape(state[key])} in the checkpoint "
                f"but {_shape(tensor)} in the model"
            )
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if strict and missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        close = [k for k in unexpected if k.rsplit(".", 1)[-1] == missing[0].rsplit(".", 1)[-1]]
        hint = f"; the checkpoint has '{close[0]}'" if close else ""
        raise PevlError(f"{label}: missing model key '{missing[0]}'{more}{hint}")
    if strict and unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise PevlError(f"{label}: unexpected model key '{unexpected[0]}'{more} (not in the model)")
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False, assign=assign)
    return missing, unexpected


def without_frozen(state: dict[str, Any], optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """An optimiser state saved when more parameters trained, cut down to those the optimiser holds now.

    Older versions trained parameters that no loss uses (CLIP's own logit scale with ``freeze_clip: false``); their
    checkpoints still resume, without the state of those parameters. Anything else that differs is left for
    ``load_state_dict`` to refuse.
    """
    saved = state.get("param_groups", [])
    names_now = [group.get("param_names") for group in optimizer.param_groups]
    if len(saved) != len(names_now) or any(n is None for n in names_now) or any("param_names" not in g for g in saved):
        return state
    groups, kept, dropped = [], set(), []
    for group, names in zip(saved, names_now, strict=True):
        ids = dict(zip(group["param_names"], group["params"], strict=True))
        if not set(names) <= set(ids):
            return state
        dropped += [name for name in group["param_names"] if name not in set(names)]
        groups.append({**group, "params": [ids[n] for n in names], "param_names": list(names)})
        kept.update(ids[n] for n in names)
    if not dropped:
        return state
    print(f"note: optimizer state of {', '.join(dropped)} not restored: it no longer trains", file=sys.stderr)
    return {**state, "param_groups": groups, "state": {k: v for k, v in state["state"].items() if k in kept}}


def restore_training_state(
    checkpoint: Checkpoint,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    sampler: Any = None,
    rank: int = 0,
    rng: bool = True,
) -> None:
    """Put a run back where the checkpoint left it (model weights are loaded with :func:`load_model_state`).

    Build the optimiser and scheduler first, exactly as for a fresh run, then call this.

    Args:
        checkpoint: A full checkpoint (not a lone model file).
        optimizer: Receives the optimiser state (moments, step counts, learning rates).
        scheduler: Receives the scheduler state.
        sampler: Receives the sampler position (epoch, samples already consumed).
        rank: This process's rank, to pick its RNG state.
        rng: Also restore the Python, numpy and torch generators.

    Raises:
        PevlError: The checkpoint holds no training state, or it does not fit the optimiser.
    """
    if checkpoint.path.is_file():
        raise file_error(checkpoint.path, "a lone model file has no training state to resume from")
    if optimizer is not None:
        if checkpoint.optimizer_state is None:
            raise file_error(checkpoint.path, "checkpoint has no optimizer state")
        try:
            optimizer.load_state_dict(without_frozen(checkpoint.optimizer_state, optimizer))
        except (ValueError, KeyError) as err:
            problem = str(err).splitlines()[0]
            raise file_error(checkpoint.path, f"optimizer state does not fit this model ({problem})") from None
    if scheduler is not None and checkpoint.scheduler_state is not None:
        scheduler.load_state_dict(checkpoint.scheduler_state)
    if sampler is not None and checkpoint.sampler_state is not None:
        sampler.load_state_dict(checkpoint.sampler_state)
    if rng and checkpoint.rng:
        restore_rng(checkpoint.rng, rank=rank)
