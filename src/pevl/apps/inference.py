"""Prediction on a single video: decode, poses (file, cache, or extracted on the fly), transform, score.

The library function behind ``pevl predict``, and the input preparation ``pevl explain`` reuses.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pevl.engine.builder import autocast, load_trained_model
from pevl.errors import PevlError, file_error
from pevl.models.config import PeVLConfig
from pevl.models.pevl import PeVL, PeVLOutput


@dataclass
class ClipInput:
    """One clip of a video, ready for the model, with the raw material the figures draw on."""

    video: torch.Tensor | None  # [V, T_v, 3, S, S] CLIP-normalised (V = crops), None for pose-only models
    pose: torch.Tensor | None  # [V, T_p, 17, 3] normalised to each crop, None for video-only models
    frames: np.ndarray  # [T_v, H, W, 3] uint8, the RGB frames the model sees (before cropping)
    keypoint: np.ndarray  # [T_p, 17, 2] pixels of the main person, in ``img_shape``
    keypoint_score: np.ndarray  # [T_p, 17]; 0 where nobody was found
    img_shape: tuple[int, int]  # (height, width) of the frames
    video_indices: np.ndarray  # [T_v] frame numbers
    pose_indices: np.ndarray  # [T_p] frame numbers
    pose_source: str  # "file", "cache" or "extracted"
    seconds: dict[str, float] = field(default_factory=dict)  # decode / pose timings

    @property
    def detected_fraction(self) -> float:
        """Fraction of pose frames where a person was found."""
        return float((self.keypoint_score > 0).any(axis=-1).mean()) if len(self.keypoint_score) else 0.0


def _main_person(keypoint: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The person track with the highest mean score: ``[M, T, J, 2] -> [T, J, 2]``."""
    best = int(np.argmax(score.reshape(score.shape[0], -1).mean(axis=1))) if score.shape[0] > 1 else 0
    return keypoint[best], score[best]


def _poses_from_file(
    pose_file: Path, video: Path, layout: str | None
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """The video's annotation in a PYSKL pickle: by ``frame_dir`` (path without extension, or stem), or the only one."""
    from pevl.data.pose.layouts import to_coco17
    from pevl.data.pose.pyskl import load_pyskl

    annotations = load_pyskl(pose_file)["annotations"]
    wanted = {video.stem, str(video.with_suffix("")), video.name}
    matches = [a for a in annotations if str(a["frame_dir"]) in wanted or Path(str(a["frame_dir"])).name == video.stem]
    if not matches and len(annotations) == 1:
        matches = annotations
    if not matches:
        raise file_error(pose_file, f"no annotation for {video.name} (frame_dir {video.stem!r})")
    ann = matches[0]
    keypoint = np.asarray(ann["keypoint"], dtype=np.float32)
    score = ann.get("keypoint_score")
    if keypoint.shape[-1] == 3:
        score, keypoint = keypoint[..., 2], keypoint[..., :2]
    score = np.ones(keypoint.shape[:-1], np.float32) if score is None else np.asarray(score, np.float32)
    if keypoint.shape[-2] != 17 or layout:
        keypoint, score = to_coco17(keypoint, score, layout or "coco17")
    img_shape = tuple(int(v) for v in ann.get("img_shape") or ann.get("original_shape"))
    return keypoint, score, img_shape  # type: ignore[return-value]


def prepare_clip(
    video: str | Path,
    model_cfg: PeVLConfig,
    image_size: int | None = None,
    crops: int = 1,
    pose_file: str | Path | None = None,
    pose_layout: str | None = None,
    pose_backend: str = "mediapipe",
    pose_cache_dir: str | Path | None = None,
) -> ClipInput:
    """Sample and prepare the centre clip of a video for a model.

    Poses come from ``pose_file`` (a PYSKL pickle) if given, else from the ``extract-poses`` cache, else they are
    estimated on the fly on the sampled pose frames only.

    Args:
        video: The video file.
        model_cfg: The model's config (frame counts, modalities).
        image_size: Crop side (default: the CLIP input size).
        crops: 1 (centre) or 3 crops.
        pose_file: Poses of this video in a PYSKL pickle.
        pose_layout: Joint layout of ``pose_file`` when it is not COCO-17 (e.g. ``jhmdb15``).
        pose_backend: Extractor for the cache lookup and on-the-fly estimation.
        pose_cache_dir: The pose cache folder (default ``$PEVL_CACHE/poses``).

    Returns:
        The prepared clip.
    """
    from pevl.data.pose.base import create_extractor
    from pevl.data.pose.cache import PoseCache
    from pevl.data.sampling import sample_clip_indices
    from pevl.data.transforms import ClipTransform
    from pevl.data.video import probe_video, read_frames

    video = Path(video)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    info = probe_video(video)
    indices = sample_clip_indices(info.num_frames, model_cfg.num_pose_frames, model_cfg.num_video_frames)
    pose_idx, video_idx = indices.pose[0], indices.video[0]
    unique, inverse = np.unique(pose_idx, return_inverse=True)
    decoded = read_frames(video, unique)
    frames = decoded[inverse]  # [T_p, H, W, 3]
    seconds["decode"] = time.perf_counter() - started

    started = time.perf_counter()
    img_shape = (int(frames.shape[1]), int(frames.shape[2]))
    num_joints = model_cfg.num_joints
    source = "none"
    keypoint = np.zeros((len(pose_idx), num_joints, 2), np.float32)
    score = np.zeros((len(pose_idx), num_joints), np.float32)
    if model_cfg.use_pose:
        cached = None if pose_file is not None else PoseCache(pose_cache_dir, backend=pose_backend).get(video)
        if pose_file is not None or cached is not None:
            # Poses of every frame of the video: take the sampled ones.
            if pose_file is not None:
                all_keypoint, all_score, img_shape = _poses_from_file(Path(pose_file), video, pose_layout)
                source = "file"
            else:
                all_keypoint, all_score, img_shape = cached.keypoint, cached.keypoint_score, cached.img_shape
                source = "cache"
            all_keypoint, all_score = _main_person(all_keypoint, all_score)
            rows = np.clip(pose_idx, 0, all_keypoint.shape[0] - 1)
            keypoint, score = all_keypoint[rows], all_score[rows]
        else:
            # Estimate poses on the sampled frames only (what the model needs), tracking along the clip.
            with create_extractor(pose_backend) as extractor:
                sequence = extractor.extract(list(decoded), fps=info.fps)
            main_keypoint, main_score = _main_person(sequence.keypoint, sequence.keypoint_score)
            keypoint, score = main_keypoint[inverse], main_score[inverse]
            source = "extracted"
    seconds["pose"] = time.perf_counter() - started

    window = model_cfg.pose_window
    rgb = frames[np.arange(model_cfg.num_video_frames) * window + window // 2]  # video_idx[t] = pose_idx[t*w + w//2]
    transform = ClipTransform(image_size=image_size or model_cfg.clip.vision.image_size, train=False, crops=crops)
    out = transform(
        rgb if model_cfg.use_video else None,
        keypoint if model_cfg.use_pose else None,
        score if model_cfg.use_pose else None,
        img_shape,
    )
    return ClipInput(
        out.get("video"),
        out.get("pose"),
        rgb,
        keypoint,
        score,
        img_shape,
        video_idx,
        pose_idx,
        source,
        seconds,
    )


def parse_labels(labels: str | None) -> list[str] | None:
    """``--labels``: a file with one label per line, or ``"a;b;c"``; ``None`` keeps the checkpoint's classes."""
    if labels is None:
        return None
    path = Path(labels)
    if path.is_file():
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not names:
            raise file_error(path, "no labels in the file")
        return names
    names = [part.strip() for part in labels.split(";") if part.strip()]
    if len(names) < 2:
        raise PevlError(f"--labels {labels!r}: give a label file or at least two labels separated by ';'")
    return names


def run_model(
    model: PeVL, clip: ClipInput, labels: Sequence[str], coarse: Sequence[str] | None, amp: str = "auto",
    need_weights: bool = False,
) -> tuple[np.ndarray, PeVLOutput]:  # fmt: skip
    """Class probabilities of a prepared clip (crops averaged) and the model output.

    Args:
        model: The model (eval mode).
        clip: From :func:`prepare_clip`.
        labels: Label texts to score.
        coarse: Coarse action types of the labels, or ``None``.
        amp: Precision (``auto`` = bf16 autocast for inference).
        need_weights: Also collect attention maps.

    Returns:
        Probabilities ``[C]`` and the :class:`PeVLOutput` of the crops.
    """
    device = next(model.parameters()).device
    texts = model.build_class_texts(list(labels), list(coarse) if coarse else None)
    inputs = {
        "video": clip.video.to(device) if clip.video is not None else None,
        "pose": clip.pose.to(device) if clip.pose is not None else None,
    }
    with torch.no_grad(), autocast(device, amp, training=False):
        out = model(**inputs, texts=texts, need_weights=need_weights)
    probs = out.logits.float().softmax(dim=-1).mean(dim=0)
    return probs.cpu().numpy(), out


def predict_video(
    video: str | Path,
    checkpoint: str | Path,
    labels: Sequence[str] | None = None,
    top_k: int = 5,
    pose_file: str | Path | None = None,
    pose_layout: str | None = None,
    pose_backend: str = "mediapipe",
    crops: int = 1,
    amp: str = "auto",
) -> dict[str, Any]:
    """Top-k actions of a video (the library function behind ``pevl predict``).

    Args:
        video: The video file.
        checkpoint: A checkpoint directory or ``model.safetensors``.
        labels: Label texts to choose from; default: the classes the checkpoint was trained on.
        top_k: How many actions to return.
        pose_file: Poses of the video (PYSKL pickle); default: cache, else estimated on the fly.
        pose_layout: Joint layout of ``pose_file`` if not COCO-17.
        pose_backend: Pose extractor for on-the-fly estimation.
        crops: 1 or 3 spatial crops.
        amp: Precision (``auto`` = bf16 autocast on CPU and GPU).

    Returns:
        A JSON-ready dict: ``video``, ``checkpoint``, ``top_k`` (label, index, probability), frame indices,
        pose source and detection rate, and timings.
    """
    started = time.perf_counter()
    loaded = load_trained_model(checkpoint)
    coarse = loaded.coarse
    if labels is None:
        labels = loaded.classes
        if not labels:
            raise PevlError(f"{checkpoint}: the checkpoint names no classes; pass --labels")
    else:
        coarse = None
    load_seconds = time.perf_counter() - started
    clip = prepare_clip(video, loaded.model.config, crops=crops, pose_file=pose_file, pose_layout=pose_layout,
                        pose_backend=pose_backend)  # fmt: skip
    started = time.perf_counter()
    probs, _ = run_model(loaded.model, clip, labels, coarse, amp)
    model_seconds = time.perf_counter() - started
    order = np.argsort(-probs)[: max(1, min(top_k, len(labels)))]
    return {
        "video": str(video),
        "checkpoint": str(loaded.checkpoint.path),
        "top_k": [{"label": labels[i], "index": int(i), "probability": round(float(probs[i]), 6)} for i in order],
        "video_frames": [int(i) for i in clip.video_indices],
        "pose_frames": [int(i) for i in clip.pose_indices],
        "pose_source": clip.pose_source,
        "person_detected_fraction": round(clip.detected_fraction, 4),
        "seconds": {
            "load": round(load_seconds, 3),
            **{k: round(v, 3) for k, v in clip.seconds.items()},
            "model": round(model_seconds, 3),
        },  # fmt: skip
    }
