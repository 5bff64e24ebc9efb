"""Write a synthetic fine-grained dataset: videos, ground-truth poses, class list and split lists.

Layout of ``out_dir``::

    videos/<label>/<label:03d>_<k:04d>.mp4   rendered clips (H.264, square frames)
    poses.pkl                                PYSKL skeleton file, split = {"train": [...], "val": [...]}
    classes.txt                              one label text per line, e.g. "back takeoff, 1.5 somersaults, ..."
    coarse.txt                               the coarse action type of each class ("diving")
    train.txt, val.txt                       "videos/<label>/<name>.mp4 <label>" per line
    meta.json                                seed, version, counts, the factors of every class

Clip ``k`` of class ``c`` is drawn from its own random stream seeded by ``(seed, c, k)``, so the same settings
always give the same files and a larger ``per_class`` keeps the earlier clips. An interrupted run resumes:
videos already written (each is written atomically) are kept, everything else is redone.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np

from pevl.data.labels import COARSE_TYPES
from pevl.data.pose.pyskl import save_pyskl
from pevl.data.synthetic.motion import MAX_CLASSES, ClipStyle, Factors, class_factors, simulate
from pevl.data.synthetic.render import RenderedClip, render_clip
from pevl.errors import PevlError, file_error
from pevl.utils.io import atomic_open, atomic_path, write_json

SYNTHETIC_VERSION = 1
"""Bumped whenever the generator's output changes for the same settings."""

_SETTINGS_FILE = ".make_synthetic.json"


def generate_clip(factors: Factors, rng: np.random.Generator, frames: int = 32, size: int = 64) -> RenderedClip:
    """Simulate and render one dive of the given class.

    Args:
        factors: The class.
        rng: The clip's random generator (style, camera, scene).
        frames: Frames per clip.
        size: Frame side in pixels.

    Returns:
        The frames, figure masks and exact keypoints.
    """
    style = ClipStyle.sample(rng)
    motion = simulate(factors, style, frames)
    return render_clip(motion, style.shape, size, rng)


def clip_rng(seed: int, label: int, index: int) -> np.random.Generator:
    """The random stream of clip ``index`` of class ``label``."""
    return np.random.default_rng([int(seed), int(label), int(index), SYNTHETIC_VERSION])


def rgb_to_yuv420p(image: np.ndarray) -> np.ndarray:
    """BT.601 limited-range conversion of ``[H, W, 3]`` RGB to a planar ``[H * 3 / 2, W]`` yuv420p image.

    Done here rather than by the encoder's scaler, whose output was seen to vary between runs.
    """
    rgb = image.astype(np.float32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0
    cb = 128.0 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255.0
    cr = 128.0 + (112.0 * r - 93.786 * g - 18.214 * b) / 255.0
    h, w = y.shape

    def half(plane: np.ndarray) -> np.ndarray:
        return plane.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))

    planes = [y, half(cb).reshape(h // 4, w), half(cr).reshape(h // 4, w)]
    return np.clip(np.concatenate(planes) + 0.5, 0, 255).astype(np.uint8)


def encode_video(path: str | Path, frames: np.ndarray, fps: float = 25.0, crf: int = 12) -> None:
    """Encode ``[T, H, W, 3]`` uint8 frames as an H.264 mp4, atomically and deterministically (one thread).

    Args:
        path: Destination ``.mp4``.
        frames: RGB frames; height and width must be even.
        fps: Frame rate.
        crf: Constant rate factor (lower = closer to the rendered pixels).
    """
    import av

    height, width = frames.shape[1:3]
    if height % 4 or width % 2:
        raise PevlError(f"video frames must have a height divisible by 4 and an even width, got {width}x{height}")
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            rate = Fraction(fps).limit_denominator(1001)
            stream = container.add_stream("libx264", rate=rate)
            stream.codec_context.time_base = 1 / rate
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.codec_context.thread_count = 1
            # x264's SIMD code reads past the picture at such small sizes, which made the bytes vary between
            # runs; the plain C path is byte-identical every time and fast enough for 64x64 clips.
            stream.options = {"crf": str(crf), "preset": "fast", "threads": "1", "x264-params": "no-asm=1"}
            for index, image in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(rgb_to_yuv420p(image), format="yuv420p")
                frame.pts = index  # explicit timestamps keep the output byte-identical between runs
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)


def _check_settings(out_dir: Path, settings: dict, overwrite: bool) -> None:
    """Refuse to mix sets: resume only a run with identical settings, replace others only when asked."""
    path = out_dir / _SETTINGS_FILE
    previous = None
    if path.exists():
        try:
            previous = json.loads(path.read_text())
        except (OSError, ValueError):
            previous = {}
    if previous == settings:
        return
    if not overwrite:
        if previous is not None:
            raise file_error(
                out_dir, "holds a synthetic set made with other settings (use another folder or --overwrite)"
            )
        if any(out_dir.iterdir()):
            raise file_error(out_dir, "is not empty (use another folder or --overwrite)")
    # Replace: remove only what this generator writes.
    for video in out_dir.glob("videos/*/[0-9][0-9][0-9]_[0-9][0-9][0-9][0-9].mp4"):
        video.unlink()
    for name in ("poses.pkl", "classes.txt", "coarse.txt", "train.txt", "val.txt", "meta.json"):
        (out_dir / name).unlink(missing_ok=True)
    write_json(path, settings)


def make_synthetic(
    out_dir: str | Path,
    num_classes: int = 8,
    per_class: int = 16,
    seed: int = 0,
    frames: int = 32,
    size: int = 64,
    val_fraction: float = 0.25,
    fps: float = 25.0,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Generate the synthetic fine-grained dive dataset.

    Args:
        out_dir: Output folder (created).
        num_classes: Number of classes (2 to 192), chosen by :func:`~pevl.data.synthetic.motion.class_factors`.
        per_class: Clips per class.
        seed: Random seed; the same settings always give the same files.
        frames: Frames per clip.
        size: Frame side in pixels (a multiple of 4, at least 32).
        val_fraction: Share of each class's clips (the last ones) put in the ``val`` split.
        fps: Frame rate of the videos.
        overwrite: Replace a set made with other settings instead of refusing.
        progress: Show a progress bar.

    Returns:
        The contents of ``meta.json``.

    Raises:
        PevlError: A bad setting, or ``out_dir`` holds other data.
    """
    from tqdm import tqdm

    if not 2 <= num_classes <= MAX_CLASSES:
        raise PevlError(f"--classes must be between 2 and {MAX_CLASSES}, got {num_classes}")
    if per_class < 2:
        raise PevlError(f"--per-class must be at least 2, got {per_class}")
    if frames < 8:
        raise PevlError(f"--frames must be at least 8, got {frames}")
    if size < 32 or size % 4:
        raise PevlError(f"--size must be a multiple of 4 pixels, at least 32, got {size}")
    if not 0.0 < val_fraction < 1.0:
        raise PevlError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    out_dir = Path(out_dir)
    settings = {
        "version": SYNTHETIC_VERSION,
        "num_classes": num_classes,
        "per_class": per_class,
        "seed": seed,
        "frames": frames,
        "size": size,
        "val_fraction": val_fraction,
        "fps": fps,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_settings(out_dir, settings, overwrite)

    classes = class_factors(num_classes)
    num_val = min(per_class - 1, max(1, int(round(per_class * val_fraction))))
    annotations: list[dict] = []
    split: dict[str, list[str]] = {"train": [], "val": []}
    lists: dict[str, list[str]] = {"train": [], "val": []}
    jobs = [(label, k) for label in range(num_classes) for k in range(per_class)]
    for label, k in tqdm(jobs, desc="make-synthetic", unit="clip", disable=not progress):
        name = f"{label:03d}_{k:04d}"
        rel = f"videos/{label}/{name}.mp4"
        clip = generate_clip(classes[label], clip_rng(seed, label, k), frames, size)
        video_path = out_dir / rel
        if not video_path.exists():
            encode_video(video_path, clip.frames, fps)
        subset = "val" if k >= per_class - num_val else "train"
        split[subset].append(name)
        lists[subset].append(f"{rel} {label}")
        annotations.append(
            {
                "frame_dir": name,
                "total_frames": frames,
                "img_shape": (size, size),
                "original_shape": (size, size),
                "label": label,
                "keypoint": clip.keypoint[None],
                "keypoint_score": clip.score[None],
            }
        )
    save_pyskl(out_dir / "poses.pkl", annotations, split)
    for subset, lines in lists.items():
        with atomic_open(out_dir / f"{subset}.txt") as f:
            f.write("\n".join(lines) + "\n")
    with atomic_open(out_dir / "classes.txt") as f:
        f.write("\n".join(c.text for c in classes) + "\n")
    with atomic_open(out_dir / "coarse.txt") as f:
        f.write("\n".join(COARSE_TYPES["synthetic"] for _ in classes) + "\n")
    meta = {
        **settings,
        "generator": "pevl.data.synthetic",
        "counts": {"classes": num_classes, "train": len(split["train"]), "val": len(split["val"])},
        "classes": [{"label": i, "text": c.text, **c.as_dict()} for i, c in enumerate(classes)],
    }
    write_json(out_dir / "meta.json", meta)
    return meta
