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

from pevl.engine.builder import autocast, load_trained_model, resolve_amp
from pevl.engine.evaluate import check_finite_scores, check_finite_weights
from pevl.errors import PevlError
from pevl.models.config import PeVLConfig
from pevl.models.pevl import PeVL, PeVLOutput
from pevl.models.text_encoder import TextFeatures


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
    warnings: list[str] = field(default_factory=list)  # content problems, one line each naming the video

    @property
    def detected_fraction(self) -> float:
        """Fraction of pose frames where a person was found."""
        return float((self.keypoint_score > 0).any(axis=-1).mean()) if len(self.keypoint_score) else 0.0


def prepare_clip(
    video: str | Path,
    model_cfg: PeVLConfig,
    image_size: int | None = None,
    crops: int = 1,
    pose_file: str | Path | None = None,
    pose_layout: str | None = None,
    pose_backend: str = "mediapipe",
    pose_cache_dir: str | Path | None = None,
    resample_poses: bool = False,
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
        resample_poses: Resample ``pose_file`` poses by time to the video's frames even when their frame counts
            differ by more than a few percent (within it, they are resampled with a warning).

    Returns:
        The prepared clip.
    """
    from pevl.data.pose.base import create_extractor
    from pevl.data.pose.cache import PoseCache
    from pevl.data.pose.gaps import fill_gaps
    from pevl.data.pose.pyskl import SkeletonFile
    from pevl.data.pose.tracking import main_person
    from pevl.data.quality import content_warnings
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
    pose_warnings: list[str] = []
    keypoint = np.zeros((len(pose_idx), num_joints, 2), np.float32)
    score = np.zeros((len(pose_idx), num_joints), np.float32)
    if model_cfg.use_pose:
        cached = None if pose_file is not None else PoseCache(pose_cache_dir, backend=pose_backend).get(video)
        if pose_file is not None or cached is not None:
            # Poses of every frame of the video: take the sampled ones.
            if pose_file is not None:
                person = SkeletonFile(pose_file, pose_layout).video_poses(
                    video, num_frames=info.num_frames, frame_shape=img_shape, resample=resample_poses
                )
                all_keypoint, all_score, img_shape = person.keypoint, person.score, person.img_shape
                pose_warnings = person.warnings
                source = "file"
            else:
                all_keypoint, all_score = main_person(*fill_gaps(cached.keypoint, cached.keypoint_score))
                img_shape = cached.img_shape
                source = "cache"
            rows = np.clip(pose_idx, 0, all_keypoint.shape[0] - 1)
            keypoint, score = all_keypoint[rows], all_score[rows]
        else:
            # Estimate poses on the sampled frames only (what the model needs), tracking along the clip; kept on
            # disk, so predicting the same video again skips the estimator (pevl.apps.pose_clip_cache).
            from pevl.apps.pose_clip_cache import clip_pose_path, read_clip_poses, write_clip_poses

            entry = clip_pose_path(video, unique, pose_backend)
            stored = read_clip_poses(entry, len(unique))
            if stored is None:
                with create_extractor(pose_backend) as extractor:
                    sequence = extractor.extract(list(decoded), fps=info.fps)
                stored = main_person(sequence.keypoint, sequence.keypoint_score)
                write_clip_poses(entry, *stored)
            main_keypoint, main_score = stored
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
    consequence = "the prediction rests on the video alone" if model_cfg.use_video else "the pose-only score is noise"
    warnings = pose_warnings + content_warnings(video, info, score if model_cfg.use_pose else None, consequence)
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
        warnings,
    )


def parse_labels(labels: str | None) -> list[str] | None:
    """``--labels``: a label-map file (one label per line, ``id: name``, JSON, ...), or ``"a;b;c"``.

    ``None`` keeps the checkpoint's classes.
    """
    if labels is None:
        return None
    path = Path(labels)
    try:
        is_file = path.is_file()
    except OSError:  # e.g. a long list of labels is no valid file name (ENAMETOOLONG)
        is_file = False
    if is_file:
        from pevl.data.datasets.lists import read_class_names

        return read_class_names(path)  # any label-map format; a class named twice is refused, naming both lines
    names = [part.strip() for part in labels.split(";") if part.strip()]
    if len(names) < 2:
        raise PevlError(f"--labels {labels!r}: give a label file or at least two labels separated by ';'")
    _refuse_duplicates(names, "--labels")
    return names


def _refuse_duplicates(names: Sequence[str], source: str) -> None:
    """Refuse a label list naming a class twice: two identical texts would split one action's probability."""
    from pevl.data.labels import first_duplicate

    pair = first_duplicate(names)
    if pair is not None:
        raise PevlError(
            f"{source}: labels {pair[0] + 1} and {pair[1] + 1} are both {names[pair[1]]!r}: two identical texts split "
            "one action's probability; give each class once"
        )


def run_model(
    model: PeVL, clip: ClipInput, labels: Sequence[str], coarse: Sequence[str] | None, amp: str = "auto",
    need_weights: bool = False, texts: TextFeatures | None = None,
) -> tuple[np.ndarray, PeVLOutput]:  # fmt: skip
    """Class probabilities of a prepared clip (crops averaged) and the model output.

    Args:
        model: The model (eval mode).
        clip: From :func:`prepare_clip`.
        labels: Label texts to score.
        coarse: Coarse action types of the labels, or ``None``.
        amp: Precision (``auto``: see :func:`pevl.engine.builder.resolve_amp`).
        need_weights: Also collect attention maps.
        texts: The labels' encoded texts when already at hand (e.g. from the text cache); else encoded here.

    Returns:
        Probabilities ``[C]`` and the :class:`PeVLOutput` of the crops.
    """
    device = next(model.parameters()).device
    if texts is None:
        texts = model.build_class_texts(list(labels), list(coarse) if coarse else None)
    inputs = {
        "video": clip.video.to(device) if clip.video is not None else None,
        "pose": clip.pose.to(device) if clip.pose is not None else None,
    }
    with torch.no_grad(), autocast(device, amp, training=False, width=model.config.clip.vision.width):
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
    text_cache: bool = True,
    text_cache_dir: str | Path | None = None,
    resample_poses: bool = False,
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
        amp: Precision (``auto``: see :func:`pevl.engine.builder.resolve_amp`).
        text_cache: Keep the encoded label texts on disk (:mod:`pevl.apps.text_cache`): later runs with the same
            checkpoint and labels skip the text encoder.
        text_cache_dir: Its folder (default ``$PEVL_CACHE/texts``).
        resample_poses: Resample ``pose_file`` poses by time even when their frame count is far from the video's.

    Returns:
        A JSON-ready dict: ``video``, ``checkpoint``, ``top_k`` (label, index, probability), frame indices,
        pose source and detection rate, and timings (``seconds``: load, decode, pose, texts, model;
        ``texts_cached``).
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
    check_finite_weights(loaded.model, loaded.checkpoint.path)
    model = loaded.model
    device = next(model.parameters()).device
    dtype = resolve_amp(device, amp, training=False, width=model.config.clip.vision.width)
    load_seconds = time.perf_counter() - started
    clip = prepare_clip(video, model.config, crops=crops, pose_file=pose_file, pose_layout=pose_layout,
                        pose_backend=pose_backend, resample_poses=resample_poses)  # fmt: skip
    started = time.perf_counter()
    texts_cached = False
    if text_cache:
        from pevl.apps.text_cache import TextFeatureCache

        cache = TextFeatureCache(loaded.checkpoint.model_file, text_cache_dir)
        features, texts_cached = cache.get_or_encode(model, labels, coarse, dtype)
        clip.warnings.extend(cache.warnings)
    else:
        with torch.no_grad(), autocast(device, amp, training=False, width=model.config.clip.vision.width):
            features = model.encode_class_texts(model.build_class_texts(list(labels), list(coarse) if coarse else None))
    texts_seconds = time.perf_counter() - started
    started = time.perf_counter()
    probs, _ = run_model(model, clip, labels, coarse, amp, texts=features)
    check_finite_scores(probs[None], loaded.checkpoint.path, f"{video} (its video, poses or label texts)")
    model_seconds = time.perf_counter() - started
    order = np.argsort(-probs)[: max(1, min(top_k, len(labels)))]
    return {
        "video": str(video),
        "checkpoint": str(loaded.checkpoint.path),
        "top_k": [{"label": labels[i], "index": int(i), "probability": round(float(probs[i]), 6)} for i in order],
        "video_frames": [int(i) for i in clip.video_indices],
        "pose_frames": [int(i) for i in clip.pose_indices],
        "pose_source": clip.pose_source,  # "none" for a video-only model: it uses no poses
        "person_detected_fraction": round(clip.detected_fraction, 4) if loaded.model.config.use_pose else None,
        "warnings": clip.warnings,
        "seconds": {
            "load": round(load_seconds, 3),
            **{k: round(v, 3) for k, v in clip.seconds.items()},
            "texts": round(texts_seconds, 3),
            "model": round(model_seconds, 3),
        },  # fmt: skip
        "texts_cached": texts_cached,
        "precision": "fp32" if dtype is None else str(dtype).removeprefix("torch."),
    }
