"""The timeline engine: frames in, window scores out, for a file or a live stream alike.

Each frame is decoded once (:class:`~pevl.apps.sources.FrameSource`, on a background thread) and, if any window
reads it, its pose is estimated once and its RGB crop is transformed once; windows gather those per-frame results,
so overlapping windows share them. Completed windows are scored in batches (a file) or as soon as they complete
(a live source), against class texts encoded once. Only the frames of windows still open are kept, so memory is
bounded by the window length, not the video length (the per-frame keypoints of a file are kept for drawing:
17 joints, a few hundred bytes a frame).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pevl.apps.sources import FrameSource
from pevl.apps.timeline import (
    Timeline,
    Window,
    is_variable_rate,
    make_window,
    plan_windows,
    plan_windows_by_time,
    window_sizes,
)
from pevl.data.pose.base import _sanitise, create_extractor
from pevl.data.pose.tracking import box_iou, keypoint_box, person_presence
from pevl.data.transforms import ClipTransform, centre_square_box, normalize_keypoints
from pevl.data.video import frame_times
from pevl.engine.builder import autocast, load_trained_model
from pevl.errors import PevlError
from pevl.models.pevl import PeVL

OnWindow = Callable[[Timeline, Window], None]
"""Called with the timeline so far and each window as soon as its scores are known."""


class _MainPersonTracker:
    """Online choice of the main person: the detection overlapping the last choice most, else the most present."""

    def __init__(self) -> None:
        self._box: np.ndarray | None = None

    def choose(self, keypoint: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        joints = keypoint.shape[1] if keypoint.ndim == 3 else 17
        if len(keypoint) == 0:
            return np.zeros((joints, 2), np.float32), np.zeros(joints, np.float32)
        boxes = [keypoint_box(k, s) for k, s in zip(keypoint, score, strict=True)]
        presence = person_presence(keypoint[:, None], score[:, None])  # the one main-person rule, on this frame
        best, best_value = 0, -1.0
        for i, box in enumerate(boxes):
            if box is None:
                continue
            overlap = box_iou(box, self._box) if self._box is not None else 0.0
            value = 1e12 * overlap if overlap > 0.1 else float(presence[i])
            if value > best_value:
                best, best_value = i, value
        self._box = boxes[best] if boxes[best] is not None else self._box
        return keypoint[best], score[best]


@dataclass
class _PoseSupply:
    """Where poses come from: arrays for every frame (a file or the cache), or an extractor run per frame."""

    keypoint: np.ndarray | None = None  # [N, J, 2]
    score: np.ndarray | None = None
    img_shape: tuple[int, int] | None = None
    source: str = "none"
    warnings: list[str] = dataclasses.field(default_factory=list)


def _pose_supply(
    video: str, use_pose: bool, pose_file: str | Path | None, pose_layout: str | None, pose_backend: str,
    pose_cache_dir: str | Path | None, live: bool, num_frames: int | None = None, resample: bool = False,
) -> _PoseSupply:  # fmt: skip
    if not use_pose:
        return _PoseSupply()
    if pose_file is not None:
        if live:
            raise PevlError("--pose-file cannot be used with a live source: poses are estimated as frames arrive")
        from pevl.data.pose.pyskl import SkeletonFile

        person = SkeletonFile(pose_file, pose_layout).video_poses(Path(video), num_frames=num_frames, resample=resample)
        return _PoseSupply(person.keypoint, person.score, person.img_shape, "file", person.warnings)
    if not live:
        from pevl.data.pose.cache import PoseCache
        from pevl.data.pose.gaps import fill_gaps
        from pevl.data.pose.tracking import main_person

        cached = PoseCache(pose_cache_dir, backend=pose_backend).get(Path(video))
        if cached is not None:
            keypoint, score = main_person(*fill_gaps(cached.keypoint, cached.keypoint_score))
            return _PoseSupply(keypoint, score, cached.img_shape, "cache")
    return _PoseSupply(source="extracted")


class _Engine:
    """Per-frame work shared by overlapping windows, and batched scoring."""

    def __init__(self, model: PeVL, labels: Sequence[str], coarse: Sequence[str] | None, amp: str) -> None:
        self.model = model
        self.cfg = model.config
        self.device = next(model.parameters()).device
        self.amp = amp
        texts = model.build_class_texts(list(labels), list(coarse) if coarse else None)
        with torch.no_grad(), autocast(self.device, amp, training=False, width=self.cfg.clip.vision.width):
            self.text = model.encode_class_texts(texts)  # once for the whole run
        self.transform = ClipTransform(image_size=self.cfg.clip.vision.image_size, train=False, crops=1)
        self.crops: dict[int, torch.Tensor] = {}  # frame -> [3, S, S] transformed RGB crop
        self.keypoint: dict[int, np.ndarray] = {}  # frame -> [J, 2] pixels in the pose image
        self.score: dict[int, np.ndarray] = {}
        self.frame_shape: tuple[int, int] | None = None
        self.pose_shape: tuple[int, int] | None = None
        self.seconds = {"pose": 0.0, "transform": 0.0, "model": 0.0}

    def _nearest(self, store: dict, index: int) -> int:
        """``index`` if stored, else the nearest stored frame (a live source may have dropped it)."""
        if index in store:
            return index
        keys = np.fromiter(store.keys(), dtype=np.int64)
        if keys.size == 0:
            raise PevlError("no decoded frame left to score a window with")
        return int(keys[np.argmin(np.abs(keys - index))])

    def add_crop(self, index: int, rgb: np.ndarray) -> None:
        started = time.perf_counter()
        self.crops[index] = self.transform(rgb[None], None, None, rgb.shape[:2])["video"][0, 0]
        self.seconds["transform"] += time.perf_counter() - started

    def window_inputs(self, window: Window) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``([T_v, 3, S, S], [T_p, J, 3])`` of one window, from the per-frame results."""
        video = pose = None
        if self.cfg.use_video:
            video = torch.stack([self.crops[self._nearest(self.crops, int(i))] for i in window.video_frames])
        if self.cfg.use_pose:
            rows = [self._nearest(self.keypoint, int(i)) for i in window.pose_frames]
            keypoint = np.stack([self.keypoint[r] for r in rows])
            score = np.stack([self.score[r] for r in rows])
            frame_h, frame_w = self.frame_shape or self.pose_shape  # type: ignore[misc]
            img_h, img_w = self.pose_shape or self.frame_shape  # type: ignore[misc]
            x0, y0, w, h = centre_square_box(frame_h, frame_w)  # the crop of the RGB stream, in pose pixels
            sx, sy = img_w / frame_w, img_h / frame_h
            pose = torch.from_numpy(normalize_keypoints(keypoint, score, (x0 * sx, y0 * sy, w * sx, h * sy)))
        return video, pose

    def score_windows(self, windows: list[Window]) -> np.ndarray:
        """``[B, C]`` probabilities of a batch of windows."""
        inputs = [self.window_inputs(w) for w in windows]
        started = time.perf_counter()
        video = torch.stack([v for v, _ in inputs]).to(self.device) if self.cfg.use_video else None
        pose = torch.stack([p for _, p in inputs]).to(self.device) if self.cfg.use_pose else None
        with torch.no_grad(), autocast(self.device, self.amp, training=False, width=self.cfg.clip.vision.width):
            out = self.model(video=video, pose=pose, texts=self.text)
        probs = out.logits.float().softmax(dim=-1).cpu().numpy()
        self.seconds["model"] += time.perf_counter() - started
        return probs

    def forget_before(self, frame: int) -> None:
        """Drop per-frame results no open window needs any more."""
        for store in (self.crops, self.keypoint, self.score):
            for key in [k for k in store if k < frame]:
                del store[key]


def run_timeline(
    source: str | Path,
    model: PeVL,
    labels: Sequence[str],
    coarse: Sequence[str] | None = None,
    window: float | None = None,
    stride: float | None = None,
    batch_size: int = 8,
    amp: str = "auto",
    pose_backend: str = "mediapipe",
    pose_file: str | Path | None = None,
    pose_layout: str | None = None,
    pose_cache_dir: str | Path | None = None,
    keep_poses: bool = False,
    live: bool | None = None,
    input_format: str | None = None,
    on_window: OnWindow | None = None,
    resample_poses: bool = False,
) -> Timeline:
    """Score every window of a video file or a live stream.

    Args:
        source: A video file, ``-`` (stdin), a URL or a capture device.
        model: The model (eval mode).
        labels: Label texts to score.
        coarse: Coarse action types of the labels, or ``None``.
        window: Window length in seconds (default: :func:`~pevl.apps.timeline.default_window_seconds`).
        stride: Seconds between window starts (default: half the window).
        batch_size: Windows per model call for a file (a live source scores each window as it completes).
        amp: Precision (``auto`` = bf16 autocast for inference).
        pose_backend: Pose extractor for frames without poses.
        pose_file: Poses of every frame (PYSKL pickle); files only.
        pose_layout: Joint layout of ``pose_file`` when not COCO-17.
        pose_cache_dir: The ``extract-poses`` cache folder.
        keep_poses: Estimate the pose of every frame and keep it in the result (for drawing).
        live: Treat the source as live (default: ``-``, URLs and devices are live).
        input_format: FFmpeg input format for sources that cannot be probed.
        on_window: Called as each window's scores are known.
        resample_poses: Resample ``pose_file`` poses by time even when their frame count is far from the video's.

    Returns:
        The :class:`~pevl.apps.timeline.Timeline`.
    """
    from pevl.apps.timeline import default_window_seconds

    if batch_size < 1:
        raise PevlError(f"--batch-size must be at least 1 (got {batch_size})")
    started = time.perf_counter()
    cfg = model.config
    tp, tv = cfg.num_pose_frames, cfg.num_video_frames
    with FrameSource(source, live=live, input_format=input_format) as frames:
        supply = _pose_supply(frames.name, cfg.use_pose, pose_file, pose_layout, pose_backend, pose_cache_dir,
                              frames.live, frames.num_frames, resample_poses)  # fmt: skip
        window = default_window_seconds(tp, frames.fps) if window is None else window
        length, step = window_sizes(frames.fps, window, stride)
        result = Timeline(frames.name, frames.fps, 0, length, step, list(labels), pose_source=supply.source,
                          window_seconds=window, stride_seconds=window / 2 if stride is None else stride,
                          warnings=list(supply.warnings))  # fmt: skip
        engine = _Engine(model, labels, coarse, amp)
        times = None if frames.live else frame_times(frames.name)
        if not is_variable_rate(times, frames.fps) or len(times) != frames.num_frames:  # type: ignore[arg-type]
            times = None  # a constant rate: frame-exact windows, times are frame / fps
        if times is not None:  # a variable frame rate: windows and every time from the presentation timestamps
            planned = plan_windows_by_time(times, result.window_length, result.stride_length, tp, tv)
            result.times = times
        else:
            planned = plan_windows(frames.num_frames, length, step, tp, tv) if frames.num_frames is not None else None
        live_times: dict[int, float] = {}  # a live source: the timestamps of the frames still needed
        need_pose, need_rgb = _needs(planned, cfg.use_pose, cfg.use_video, keep_poses)
        frames.want_rgb = lambda i: (need_pose is None or i in need_pose) or (need_rgb is None or i in need_rgb)
        extractor = create_extractor(pose_backend) if supply.source == "extracted" else None
        tracker = _MainPersonTracker()
        kept_keypoint: list[np.ndarray] = []
        kept_score: list[np.ndarray] = []
        pending: list[Window] = []
        next_start = 0  # live: start of the next regular window
        to_check = list(planned) if planned is not None else []

        def timed(w: Window) -> Window:
            """A live window with the presentation times of its first frame and of the end of its last one."""
            if not live_times:
                return w
            keys = np.fromiter(live_times.keys(), dtype=np.int64)

            def at(frame: int) -> float:
                return live_times[int(keys[np.argmin(np.abs(keys - frame))])]

            return dataclasses.replace(w, times=(at(w.start), at(w.end - 1) + 1.0 / frames.fps))

        def flush(index: int) -> None:
            if not pending:
                return
            scores = engine.score_windows(pending)
            result.probs = np.concatenate([result.probs, scores]) if result.windows else scores
            for w in pending:
                result.windows.append(w)
                if on_window is not None:
                    on_window(result, w)
            pending.clear()
            # Keep the frames of windows still open; a live stream also keeps its last window's worth of frames
            # (its final window is clamped to wherever the stream ends).
            keep = min((w.start for w in to_check), default=next_start if planned is None else index + 1)
            engine.forget_before(min(keep, index + 1 - length) if planned is None else keep)
            for frame in [k for k in live_times if k < min(keep, index + 1 - length)]:
                del live_times[frame]

        try:
            index = -1
            for item in frames:
                index = item.index
                result.num_frames = index + 1
                if frames.live:
                    live_times[index] = item.time
                wants_pose = cfg.use_pose and (need_pose is None or index in need_pose)
                wants_rgb = cfg.use_video and (need_rgb is None or index in need_rgb)
                if wants_pose or wants_rgb:
                    rgb = item.rgb()
                    engine.frame_shape = engine.frame_shape or (int(rgb.shape[0]), int(rgb.shape[1]))
                    if wants_rgb:
                        engine.add_crop(index, rgb)
                    if wants_pose:
                        tick = time.perf_counter()
                        if extractor is not None:
                            kp, sc = tracker.choose(*_sanitise(*extractor.detect(rgb)))
                            engine.pose_shape = engine.frame_shape
                        else:
                            row = min(index, len(supply.keypoint) - 1)  # type: ignore[arg-type]
                            kp, sc = supply.keypoint[row], supply.score[row]  # type: ignore[index]
                            engine.pose_shape = supply.img_shape
                        engine.keypoint[index], engine.score[index] = kp, sc
                        engine.seconds["pose"] += time.perf_counter() - tick
                        if keep_poses:
                            kept_keypoint.append(kp)
                            kept_score.append(sc)
                elif keep_poses:
                    kept_keypoint.append(np.zeros((cfg.num_joints, 2), np.float32))
                    kept_score.append(np.zeros(cfg.num_joints, np.float32))
                # Windows that end with this frame.
                if planned is None:
                    while next_start + length - 1 <= index:
                        to_check.append(timed(make_window(len(result.windows) + len(pending) + len(to_check),
                                                          next_start, next_start + length, tp, tv)))  # fmt: skip
                        next_start += step
                while to_check and to_check[0].end - 1 <= index:
                    pending.append(to_check.pop(0))
                if len(pending) >= (1 if frames.live else batch_size):
                    flush(index)
            if planned is None and index >= 0:  # the clamped last window of a live stream
                done = pending or result.windows
                if not done or done[-1].end < index + 1:
                    count = len(result.windows) + len(pending)
                    pending.append(timed(make_window(count, max(0, index + 1 - length), index + 1, tp, tv)))
            flush(index)
        finally:
            if extractor is not None:
                extractor.close()
        result.dropped_frames = frames.dropped
        result.seconds = {"decode": frames.decode_seconds, **engine.seconds}
    if keep_poses and kept_keypoint:
        result.keypoint, result.keypoint_score = np.stack(kept_keypoint), np.stack(kept_score)
    result.img_shape = engine.pose_shape or engine.frame_shape or (0, 0)
    result.seconds["total"] = time.perf_counter() - started
    return result


def _needs(
    planned: list[Window] | None, use_pose: bool, use_video: bool, keep_poses: bool
) -> tuple[set[int] | None, set[int] | None]:
    """Frames whose pose / RGB crop some window reads (``None`` = every frame: a live source or drawing)."""
    if planned is None:
        return None, None
    pose = None if keep_poses else {int(i) for w in planned for i in w.pose_frames}
    rgb = {int(i) for w in planned for i in w.video_frames}
    return (pose if use_pose else set()), (rgb if use_video else set())


def timeline_video(
    video: str | Path, checkpoint: str | Path, labels: Sequence[str] | None = None, **kwargs: object
) -> Timeline:
    """Load a checkpoint and run :func:`run_timeline` on a video (the library function behind the CLI).

    Args:
        video: A video file, ``-``, a URL or a device.
        checkpoint: A checkpoint directory or ``model.safetensors``.
        labels: Label texts to score (default: the checkpoint's classes).
        **kwargs: Passed to :func:`run_timeline`.

    Returns:
        The timeline.
    """
    loaded = load_trained_model(checkpoint)
    coarse = loaded.coarse if labels is None else None
    names = list(labels) if labels is not None else loaded.classes
    if not names:
        raise PevlError(f"{checkpoint}: the checkpoint names no classes; pass --labels")
    return run_timeline(video, loaded.model, names, coarse, **kwargs)  # type: ignore[arg-type]
