"""From a run config to objects: the model, the datasets, the device and the precision context."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pevl.engine.checkpoint import Checkpoint, load_checkpoint, load_model_state
from pevl.engine.config import RunConfig
from pevl.errors import PevlError
from pevl.hub import create_model
from pevl.models.config import PeVLConfig
from pevl.models.pevl import PeVL
from pevl.models.presets import get_config


def _frame_fields(cfg: RunConfig) -> dict[str, Any]:
    frames: dict[str, Any] = {}
    if cfg.data.num_video_frames is not None:
        frames["num_video_frames"] = cfg.data.num_video_frames
    if cfg.data.num_pose_frames is not None:
        frames["num_pose_frames"] = cfg.data.num_pose_frames
    return frames


def model_config(cfg: RunConfig) -> PeVLConfig:
    """The PeVL config a run trains: the preset, the run's frame counts, then ``model.overrides``."""
    return get_config(cfg.model.preset, **_frame_fields(cfg), **cfg.model.overrides)


def build_model(cfg: RunConfig, num_classes: int | None = None, **extra: Any) -> PeVL:
    """Create the run's model, loading the CLIP weights named by ``model.pretrained``.

    Args:
        cfg: The run config.
        num_classes: Number of training classes.
        **extra: More :class:`PeVLConfig` fields (e.g. ``grad_checkpointing``), applied last.
    """
    fields = {**_frame_fields(cfg), **cfg.model.overrides, **extra}
    return create_model(cfg.model.preset, num_classes=num_classes, pretrained=cfg.model.pretrained, **fields)


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
    return build(
        data.dataset,
        split,
        root=data.root,
        train=train,
        num_video_frames=model_cfg.num_video_frames,
        num_pose_frames=model_cfg.num_pose_frames,
        image_size=data.image_size or model_cfg.clip.vision.image_size,
        num_clips=1 if train else (num_clips or data.test_clips),
        num_crops=1 if train else (num_crops or data.test_crops),
        use_video=model_cfg.use_video,
        use_pose=model_cfg.use_pose,
        pose_file=data.pose_file,
        pose_cache_dir=pose_cache_dir or data.pose_cache_dir,
        seed=cfg.train.seed,
        **data.options,
    )


def default_device() -> torch.device:
    """CUDA when available, else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def autocast(device: torch.device, mode: str, training: bool) -> contextlib.AbstractContextManager:
    """The mixed-precision context of a run.

    ``auto`` is bf16 on GPU for training and evaluation, and bf16 on CPU for evaluation and inference only (on CPUs
    with AMX/AVX-512 it is several times faster with the same embeddings); ``off`` is full precision.

    Args:
        device: Where the model runs.
        mode: ``auto``, ``bf16``, ``fp16`` or ``off``.
        training: Training (``auto`` keeps fp32 on CPU) or inference.

    Returns:
        A context manager.
    """
    if mode == "off" or (mode == "auto" and device.type == "cpu" and training):
        return contextlib.nullcontext()
    dtype = torch.float16 if mode == "fp16" else torch.bfloat16
    if device.type == "cpu" and dtype == torch.float16:
        raise PevlError("train.amp=fp16 needs a GPU; use bf16 or off on the CPU")
    return torch.autocast(device.type, dtype=dtype)


@dataclass
class LoadedModel:
    """A trained model read back from a checkpoint, with what it was trained on."""

    model: PeVL
    classes: list[str]  # label texts of the training classes
    coarse: list[str] | None  # coarse action types, if the dataset had them
    run_config: RunConfig | None  # the training run's config (None for a model file without one)
    checkpoint: Checkpoint


def load_trained_model(path: str | Path, device: torch.device | str = "cpu") -> LoadedModel:
    """Rebuild a trained model from a checkpoint directory or its ``model.safetensors``.

    No CLIP weight file is needed: checkpoints hold every weight, frozen ones included.

    Raises:
        PevlError: Not a pevl checkpoint, or its weights do not fit the model it describes.
    """
    checkpoint = load_checkpoint(path, device="cpu")
    model_cfg = checkpoint.extra.get("model_config")
    if not model_cfg:
        raise PevlError(f"{checkpoint.model_file}: no model config in the checkpoint (not written by `pevl train`?)")
    model = PeVL(PeVLConfig.from_dict(model_cfg))
    load_model_state(model, checkpoint)
    model.to(device).eval()
    run_config = RunConfig.from_dict(checkpoint.config) if checkpoint.config else None
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
