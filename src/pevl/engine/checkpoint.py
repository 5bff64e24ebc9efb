"""Checkpoints without pickles: safetensors for tensors, JSON for everything else, written atomically.

Layout of a work dir::

    <work_dir>/checkpoints/
        epoch_0003_step_000001200/
            model.safetensors    model weights; its metadata holds the run config, epoch, step, metrics, extra
            state.safetensors    optimiser / scheduler tensors and torch RNG states, under flattened names
            state.json           the rest: optimiser param groups, scheduler, sampler position, Python/numpy RNG
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
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from pevl.engine.rng import capture_rng, restore_rng
from pevl.errors import PevlError, file_error
from pevl.utils.io import atomic_open

FORMAT = "pevl-checkpoint"
FORMAT_VERSION = 1
CHECKPOINTS_DIR = "checkpoints"
MODEL_FILE = "model.safetensors"
STATE_FILE = "state.json"
STATE_TENSORS_FILE = "state.safetensors"
LATEST = "latest"
BEST = "best"
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


# ---- lossless JSON + tensor codec -----------------------------------------------------------------------------------

_MARKERS = ("__tensor__", "__tuple__", "__dict__", "__ndarray__", "__npscalar__")


def _encode(obj: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Turn ``obj`` into JSON data, moving tensors into ``tensors`` under flattened dotted names."""
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj
    if isinstance(obj, torch.Tensor):
        name, n = path, 1
        while name in tensors:
            name, n = f"{path}#{n}", n + 1
        tensors[name] = obj
        return {"__tensor__": name}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype), "shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        return {"__npscalar__": obj.item(), "dtype": str(obj.dtype)}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, f"{path}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, f"{path}.{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, Mapping):
        if all(isinstance(k, str) and k not in _MARKERS for k in obj):
            return {k: _encode(v, f"{path}.{k}", tensors) for k, v in obj.items()}
        return {"__dict__": [[_encode(k, path, tensors), _encode(v, f"{path}.{k}", tensors)] for k, v in obj.items()]}
    raise TypeError(f"cannot store {type(obj).__name__} at '{path}' in a checkpoint (no pickles)")


def _decode(data: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """Inverse of :func:`_encode`."""
    if isinstance(data, list):
        return [_decode(v, tensors) for v in data]
    if not isinstance(data, dict):
        return data
    if "__tensor__" in data:
        return tensors[data["__tensor__"]]
    if "__tuple__" in data:
        return tuple(_decode(v, tensors) for v in data["__tuple__"])
    if "__dict__" in data:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in data["__dict__"]}
    if "__ndarray__" in data:
        return np.asarray(data["__ndarray__"], dtype=data["dtype"]).reshape(data["shape"])
    if "__npscalar__" in data:
        return np.dtype(data["dtype"]).type(data["__npscalar__"])
    return {k: _decode(v, tensors) for k, v in data.items()}


def _tensor_refs(data: Any) -> list[str]:
    if isinstance(data, list):
        return [ref for v in data for ref in _tensor_refs(v)]
    if isinstance(data, dict):
        if "__tensor__" in data:
            return [data["__tensor__"]]
        return [ref for v in data.values() for ref in _tensor_refs(v)]
    return []


def _to_json(obj: Any) -> str:
    return json.dumps(obj, allow_nan=True, separators=(",", ":"))


# ---- safetensors I/O ------------------------------------------------------------------------------------------------


def _prepare_tensors(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """CPU, contiguous, unshared tensors for safetensors; identical tensors under two names become aliases.

    PeVL shares one frozen ViT between its video and pose encoders, so a state dict can name the same tensor
    twice: it is stored once and the second name recorded as an alias.
    """
    out: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen_views: dict[tuple[Any, ...], str] = {}
    seen_storage: set[int] = set()
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"model state entry '{name}' is a {type(tensor).__name__}, not a tensor")
        tensor = tensor.detach()
        if tensor.numel() == 0:
            out[name] = tensor.cpu().contiguous()
            continue
        storage = tensor.untyped_storage().data_ptr()
        view = (storage, tensor.storage_offset(), tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype)
        if view in seen_views:
            aliases[name] = seen_views[view]
            continue
        seen_views[view] = name
        whole = tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()
        if storage in seen_storage or not whole or not tensor.is_contiguous():
            tensor = tensor.clone(memory_format=torch.contiguous_format)
        seen_storage.add(storage)
        out[name] = tensor.cpu()
    return out, aliases


def _fsync(path: Path) -> None:
    """Flush a file or directory to disk (best effort where the OS does not support it)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_safetensors(path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> None:
    save_file(dict(tensors), str(path), metadata=dict(metadata))
    _fsync(path)


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

    config = json.loads(_to_json(dict(config)))
    meta_extra = json.loads(_to_json(dict(extra or {})))
    meta_metrics = json.loads(_to_json(dict(metrics or {})))
    model_tensors, aliases = _prepare_tensors(model_state)
    model_meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "config": _to_json(config),
        "epoch": str(int(epoch)),
        "step": str(int(step)),
        "metrics": _to_json(meta_metrics),
        "extra": _to_json(meta_extra),
        "aliases": _to_json(aliases),
    }
    state_tensors: dict[str, torch.Tensor] = {}
    optimizer_state = optimizer.state_dict() if isinstance(optimizer, torch.optim.Optimizer) else optimizer
    scheduler_state = scheduler.state_dict() if hasattr(scheduler, "state_dict") else scheduler
    state = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "epoch": int(epoch),
        "step": int(step),
        "config": config,
        "metrics": meta_metrics,
        "extra": meta_extra,
        "optimizer": _encode(optimizer_state, "optimizer", state_tensors),
        "scheduler": _encode(scheduler_state, "scheduler", state_tensors),
        "sampler": _encode(dict(sampler_state) if sampler_state is not None else None, "sampler", state_tensors),
        "rng": _encode([dict(s) for s in (rng_states or [capture_rng()])], "rng", state_tensors),
    }
    state_tensors, state_aliases = _prepare_tensors(state_tensors)
    state["tensor_aliases"] = state_aliases

    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=root))
    try:
        _write_safetensors(tmp / MODEL_FILE, model_tensors, model_meta)
        _write_safetensors(tmp / STATE_TENSORS_FILE, state_tensors, {"format": FORMAT})
        with atomic_open(tmp / STATE_FILE, "w") as f:
            f.write(json.dumps(state, allow_nan=True))
        _fsync(tmp)
        os.replace(tmp, final)
        _fsync(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if is_best:
        _write_pointer(root, BEST, final)
    _write_pointer(root, LATEST, final)
    _prune(root, keep_last, current=final)
    return final


def _prune(root: Path, keep_last: int, current: Path) -> None:
    """Delete checkpoints beyond the ``keep_last`` newest, older revisions of the current step and stale temps."""
    protected = {current, _read_pointer(root, BEST), _read_pointer(root, LATEST)}
    found = list_checkpoints(root)
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


def _locate(path: Path) -> Path:
    """Resolve what a user passed (checkpoint dir, its model file, a pointer file, a work dir) to a path to read."""
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
    try:
        aliases = json.loads(metadata.get("aliases", "{}"))
    except json.JSONDecodeError as err:
        raise file_error(model_file, f"corrupt checkpoint metadata 'aliases' ({err})") from None
    for alias, target in aliases.items():
        if target not in tensors:
            raise file_error(model_file, f"alias '{alias}' names a missing tensor '{target}'")
        tensors[alias] = tensors[target]
    return tensors, metadata


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
    location = _locate(Path(path).expanduser())
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

    state_file = location / STATE_FILE
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise file_error(state_file, f"corrupt checkpoint state ({err})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise file_error(state_file, "not a pevl checkpoint state file")
    tensors_file = location / STATE_TENSORS_FILE
    tensors: dict[str, torch.Tensor] = {}
    if tensors_file.exists():
        tensors, _ = _read_safetensors(tensors_file, "cpu")
    for alias, target in (state.get("tensor_aliases") or {}).items():
        if target in tensors:
            tensors[alias] = tensors[target]
    sections = ("optimizer", "scheduler", "sampler", "rng")
    missing = [ref for key in sections for ref in _tensor_refs(state.get(key)) if ref not in tensors]
    if missing:
        raise file_error(tensors_file, f"tensor '{missing[0]}' referenced by {STATE_FILE} is missing")
    checkpoint.optimizer_state = _decode(state.get("optimizer"), tensors)
    checkpoint.scheduler_state = _decode(state.get("scheduler"), tensors)
    checkpoint.sampler_state = _decode(state.get("sampler"), tensors)
    checkpoint.rng = _decode(state.get("rng"), tensors)
    checkpoint.epoch, checkpoint.step = int(state.get("epoch", epoch)), int(state.get("step", step))
    checkpoint.config = state.get("config", config)
    checkpoint.metrics = state.get("metrics", checkpoint.metrics)
    checkpoint.extra = state.get("extra", checkpoint.extra)
    return checkpoint


def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def load_model_state(
    model: torch.nn.Module,
    state: Mapping[str, torch.Tensor] | Checkpoint,
    strict: bool = True,
    *,
    source: str | Path | None = None,
) -> tuple[list[str], list[str]]:
    """Copy weights into ``model`` after checking every key and shape.

    Args:
        model: The model (a DistributedDataParallel wrapper is unwrapped).
        state: A state dict or a :class:`Checkpoint`.
        strict: Fail on missing or unexpected keys; mis-shaped keys always fail.
        source: The file named in errors (taken from the checkpoint when ``state`` is one).

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
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)
    return missing, unexpected


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
            optimizer.load_state_dict(checkpoint.optimizer_state)
        except (ValueError, KeyError) as err:
            problem = str(err).splitlines()[0]
            raise file_error(checkpoint.path, f"optimizer state does not fit this model ({problem})") from None
    if scheduler is not None and checkpoint.scheduler_state is not None:
        scheduler.load_state_dict(checkpoint.scheduler_state)
    if sampler is not None and checkpoint.sampler_state is not None:
        sampler.load_state_dict(checkpoint.sampler_state)
    if rng and checkpoint.rng:
        restore_rng(checkpoint.rng, rank=rank)
