"""From a run config to objects: the model, the datasets, the device and the precision context."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pevl.engine.checkpoint import Checkpoint, load_checkpoint, load_model_state
from pevl.engine.checkpoint_choice import choose_checkpoint
from pevl.engine.config import RunConfig
from pevl.errors import PevlError
from pevl.models.config import PeVLConfig
from pevl.models.pevl import PeVL
from pevl.models.presets import get_config


def model_config(cfg: RunConfig, **extra: Any) -> PeVLConfig:
    """The PeVL config a run trains: the preset changed by ``model.overrides`` (then ``extra``)."""
    return get_config(cfg.model.preset, **cfg.model.overrides, **extra)


def build_model(model_cfg: PeVLConfig, pretrained: str | None = None) -> PeVL:
    """Create a model from its config, loading the CLIP weights ``pretrained`` names (``model.pretrained``).

    Args:
        model_cfg: The model config (:func:`model_config`, built once per run).
        pretrained: A CLIP weight file or architecture name; ``None`` keeps the random initialisation.
    """
    model = PeVL(model_cfg)
    if pretrained:
        from pevl.hub.weights import load_clip_weights

        load_clip_weights(model.clip, pretrained)
    return model


def build_dataset(
    cfg: RunConfig,
    model_cfg: PeVLConfig,
    split: str,
    train: bool,
    num_clips: int | None = None,
    num_crops: int | None = None,
    pose_cache_dir: str | Path | None = None,
) -> Any:
    """The dataset of ``split`` with the frame counts and image size the model takes.

    Args:
        cfg: The run config (``data`` section).
        model_cfg: The model's config (frame counts, modalities, image size).
        split: Split name, e.g. ``"train"``.
        train: Training pipeline (random sampling and augmentation) or test pipeline (views).
        num_clips: Temporal views at test time (default ``data.test_clips``).
        num_crops: Spatial views at test time (default ``data.test_crops``).
        pose_cache_dir: Where extracted poses are cached (default ``data.pose_cache_dir``).

    Returns:
        A :class:`pevl.data.datasets.ActionDataset`.
    """
    from pevl.data.datasets import build_dataset as build

    data = cfg.data
    settings = {
        "root": data.root,
        "train": train,
        "num_video_frames": model_cfg.num_video_frames,
        "num_pose_frames": model_cfg.num_pose_frames,
        "image_size": model_cfg.clip.vision.image_size,
        "num_clips": 1 if train else (num_clips or data.test_clips),
        "num_crops": 1 if train else (num_crops or data.test_crops),
        "use_video": model_cfg.use_video,
        "use_pose": model_cfg.use_pose,
        "pose_file": data.pose_file,
        "pose_cache_dir": pose_cache_dir or data.pose_cache_dir,
        "seed": cfg.train.seed,
    }
    clash = sorted(set(settings) & set(data.options))
    if clash:
        homes = {"root": "data.root", "pose_file": "data.pose_file", "pose_cache_dir": "data.pose_cache_dir",
                 "seed": "train.seed", "num_clips": "data.test_clips", "num_crops": "data.test_crops",
                 "image_size": "model.overrides.clip", "train": "the command (train or eval)"}  # fmt: skip
        home = homes.get(clash[0], f"model.overrides.{clash[0]}")
        raise PevlError(f"data.options.{clash[0]} is not a dataset option: it is set by {home}")
    return build(data.dataset, split, **settings, **data.options)


def default_device() -> torch.device:
    """CUDA when available, else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


BF16_MIN_WIDTH = 256
"""Narrowest transformer for which ``amp: auto`` uses bf16 on a CPU: below it the casts cost more than bf16 saves."""


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (x86 AVX512-BF16 or AMX-BF16, Arm BF16).

    Read from ``/proc/cpuinfo``; ``False`` where it is absent (macOS, Windows), which keeps fp32 there.
    """
    try:
        return cpuinfo_has_bf16(Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return False


def cpuinfo_has_bf16(cpuinfo: str) -> bool:
    """Whether a ``/proc/cpuinfo`` text lists native bf16 instructions (``avx512_bf16``, ``amx_bf16``, ``bf16``)."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def resolve_amp(device: torch.device, mode: str, training: bool, width: int | None = None) -> torch.dtype | None:
    """The autocast dtype a precision mode means here (``None``: full fp32).

    ``auto`` is bf16 on GPUs (training and inference). On a CPU it keeps fp32 for training (bf16 autocast made a
    training step several times slower there) and picks bf16 for inference only where it is faster: the CPU has
    native bf16 (:func:`cpu_has_native_bf16`) and the model's image tower is at least :data:`BF16_MIN_WIDTH` wide
    (ViT-B/16: 768, 1.4x to 2x faster; the tiny and JHMDB-width models, 64 wide, are faster in fp32). The measurements
    behind the rule are in ``docs/benchmarks.md``.

    Args:
        device: Where the model runs.
        mode: ``auto``, ``bf16``, ``fp16`` or ``off``.
        training: Training or inference.
        width: Token width of the model's image tower (``model.config.clip.vision.width``); ``None`` = wide.

    Returns:
        ``torch.bfloat16``, ``torch.float16`` or ``None``.

    Raises:
        PevlError: ``fp16`` on a CPU.
    """
    if mode == "off":
        return None
    if mode == "auto":
        if device.type != "cpu":
            return torch.bfloat16
        wide = width is None or width >= BF16_MIN_WIDTH
        return torch.bfloat16 if not training and wide and cpu_has_native_bf16() else None
    if mode == "fp16" and device.type == "cpu":
        raise PevlError("train.amp=fp16 needs a GPU; use bf16 or off on the CPU")
    return torch.float16 if mode == "fp16" else torch.bfloat16


def autocast(
    device: torch.device, mode: str, training: bool, width: int | None = None
) -> contextlib.AbstractContextManager:
    """The mixed-precision context of a run: autocast to :func:`resolve_amp`'s dtype, or nothing for fp32.

    Args:
        device: Where the model runs.
        mode: ``auto``, ``bf16``, ``fp16`` or ``off``.
        training: Training (``auto`` keeps fp32 on CPU) or inference.
        width: Token width of the model's image tower, for ``auto`` on a CPU.

    Returns:
        A context manager.
    """
    dtype = resolve_amp(device, mode, training, width)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


@contextlib.contextmanager
def skip_random_init() -> Iterator[None]:
    """Build modules without filling their weights with random numbers (the ``torch.nn.init`` functions do nothing).

    For a model whose every weight is about to be replaced by a checkpoint's: ViT-B/16 PeVL is built in a tenth
    of the time. Not thread-safe: it patches ``torch.nn.init`` while the block runs.
    """
    init = torch.nn.init
    names = [name for name in dir(init) if name.endswith("_") and not name.startswith("_")]
    saved = {name: getattr(init, name) for name in names}

    def keep(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return tensor

    try:
        for name in names:
            setattr(init, name, keep)
        yield
    finally:
        for name, fn in saved.items():
            setattr(init, name, fn)


@dataclass
class LoadedModel:
    """A trained model read back from a checkpoint, with what it was trained on."""

    model: PeVL
    classes: list[str]  # label texts of the training classes
    coarse: list[str] | None  # coarse action types, if the dataset had them
    run_config: RunConfig | None  # the training run's config (None for a model file without one)
    checkpoint: Checkpoint


def load_trained_model(path: str | Path, device: torch.device | str = "cpu") -> LoadedModel:
    """Rebuild a trained model from a work dir, a checkpoint dir, its ``model.safetensors`` or ``hf-hub:org/name``.

    A work dir is resolved by :func:`pevl.engine.checkpoint_choice.choose_checkpoint` (best, else latest;
    ``WORKDIR:latest`` / ``WORKDIR:best`` to choose), which prints the checkpoint it chose.

    No CLIP weight file is needed: checkpoints hold every weight, frozen ones included.

    Raises:
        PevlError: Not a pevl checkpoint, or its weights do not fit the model it describes.
    """
    from pevl.hub.hf import resolve_model_source

    checkpoint = load_checkpoint(choose_checkpoint(resolve_model_source(path)), device="cpu")
    model_cfg = checkpoint.extra.get("model_config")
    if not model_cfg:
        raise PevlError(f"{checkpoint.model_file}: no model config in the checkpoint (not written by `pevl train`?)")
    with skip_random_init():  # every weight comes from the checkpoint
        model = PeVL(PeVLConfig.from_dict(model_cfg))
    load_model_state(model, checkpoint, assign=True)  # the memory-mapped tensors themselves: no copy
    model.to(device).eval()
    run_config = RunConfig.from_saved(checkpoint.config) if checkpoint.config else None
    return LoadedModel(model, list(checkpoint.extra.get("classes") or []), checkpoint.extra.get("coarse"),
                       run_config, checkpoint)  # fmt: skip


def flatten_views(tensor: torch.Tensor | None) -> torch.Tensor | None:
    """``[B, V, ...] -> [B * V, ...]`` (views of a sample are consecutive)."""
    return None if tensor is None else tensor.flatten(0, 1)


def batch_inputs(batch: dict[str, Any], device: torch.device) -> tuple[dict[str, torch.Tensor | None], int]:
    """Model inputs of a collated batch, views flattened into the batch, and the number of views."""
    video, pose = batch.get("video"), batch.get("pose")
    views = (video if video is not None else pose).shape[1]
    inputs = {
        "video": flatten_views(video).to(device, non_blocking=True) if video is not None else None,
        "pose": flatten_views(pose).to(device, non_blocking=True) if pose is not None else None,
    }
    return inputs, views


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Temporarily switch a model to eval mode (restoring its mode afterwards)."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
