"""The bad inputs ``pevl`` handles, command by command: a clear line or an honest warning, never a confident number.

* ``TABLE``: one row per case, each a command line run in-process. An ``error`` row exits 2 with exactly one stderr
  line ``pevl: error: ...`` that names the file (or the option) at fault, no traceback, and leaves no file or
  folder behind; a ``warning`` row exits 0 with a ``warning:`` line naming it; an ``ok`` row exits 0. A row's
  ``check`` then looks at what the command did (no input overwritten, another run's checkpoints kept, times from
  presentation timestamps, ...). Rows are grouped as the faults they guard against: outputs over inputs, shared
  work dirs, wrong blame, pose/video mismatches, time bases, and smaller input checks.
* Content warnings: content that can be processed but should not be trusted (nobody in the video, a single frame, a
  truncated file): exit 0, one ``warning:`` line per problem, also recorded in the JSON output.
* Then the cases that need more than a command line: training that meets a non-finite loss, a skeleton pickle
  without splits, a pose file for another video, umask, checkpoints used from another folder.

Everything runs in-process on a tiny synthetic set and 1-step tiny models; multi-second cases are marked slow.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pevl.cli import main as cli_main

TINY = [
    "model.preset=pevl_tiny",
    "model.overrides.num_video_frames=2",
    "model.overrides.num_pose_frames=8",
    "data.dataset=synthetic",
    "data.batch_size=4",
    "data.num_workers=0",
    "optim.epochs=1",
    "optim.warmup_epochs=0",
    "train.max_steps=1",
    "train.eval_interval=0",
    "train.log_interval=1",
]
KINETICS_20 = ";".join(
    ["abseiling", "air drumming", "answering questions", "applauding", "applying cream", "archery", "arm wrestling",
     "arranging flowers", "assembling computer", "auctioning", "baby waking up", "baking cookies", "balloon blowing",
     "bandaging", "barbequing", "bartending", "beatboxing", "bee keeping", "belly dancing", "bench pressing"]
)  # fmt: skip


def _writable(folder: Path) -> bool:
    try:
        fd, name = tempfile.mkstemp(dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.unlink(name)
    return True


def _readonly_folder(base: Path) -> Path:
    """A folder this process cannot write in: a chmod-ed one, or ``/sys`` for root (which ignores modes)."""
    folder = base / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    if not _writable(folder):
        return folder
    if Path("/sys").is_dir() and not _writable(Path("/sys")):
        return Path("/sys")
    pytest.skip("no read-only folder available (root without a read-only /sys)")


def _poison(checkpoint: Path, dest: Path) -> Path:
    """A copy of ``checkpoint`` whose weights are all NaN: what a diverged run leaves."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    shutil.copytree(checkpoint, dest)
    model_file = dest / "model.safetensors"
    with safe_open(str(model_file), framework="pt") as f:
        metadata = f.metadata()
        tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 -- safe_open has no __iter__
    tensors = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in tensors.items()}
    save_file(tensors, str(model_file), metadata=metadata)
    return dest


def _write_video(path: Path, frames: int, size: int = 64) -> Path:
    """A small MPEG-4 AVI of coloured noise (nobody in it); noise keeps every frame large next to the header."""
    import av

    rng = np.random.default_rng(frames)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for _ in range(frames):
            image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _skeleton(path: Path, annotations: list[dict], split: dict | None = None) -> Path:
    from pevl.data.pose.pyskl import save_pyskl

    save_pyskl(path, annotations, split or {})
    return path


def _raw_skeleton(path: Path, annotations: list[dict], split: dict | None = None) -> Path:
    """A skeleton pickle written as another tool would, without pevl's checks (for files pevl must refuse)."""
    with open(path, "wb") as f:
        pickle.dump({"split": split or {}, "annotations": annotations}, f)
    return path


def _write_vfr(path: Path, size: int = 32) -> list[float]:
    """A variable-frame-rate MP4: 30 frames at 25 fps (1.2 s), then 30 frames 0.6 s apart (19.2 s in all)."""
    import av

    times = [i * 0.04 for i in range(30)] + [1.2 + i * 0.6 for i in range(30)]
    rng = np.random.default_rng(5)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=25)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for t in times:
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), format="rgb24")
            frame.pts, frame.time_base = round(t * 1000), Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return times


def _write_tiny(path: Path, side: int = 2, frames: int = 10) -> Path:
    """A ``side`` x ``side`` video (4:4:4 H.264, or MPEG-4 where there is no H.264 encoder)."""
    import av

    with av.open(str(path), "w") as container:
        h264 = "libx264" in av.codecs_available
        stream = container.add_stream("libx264" if h264 else "mpeg4", rate=25)
        stream.width = stream.height = side
        stream.pix_fmt = "yuv444p" if h264 else "yuv420p"
        for i in range(frames):
            image = np.full((side, side, 3), 20 * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _annotation(name: str, frames: int, shape: tuple[int, int] = (32, 32), score: float = 1.0) -> dict:
    rng = np.random.default_rng(0)
    keypoint = rng.uniform(4, min(shape) - 4, size=(1, frames, 17, 2)).astype(np.float32)
    return {
        "frame_dir": name,
        "label": 0,
        "img_shape": shape,
        "original_shape": shape,
        "total_frames": frames,
        "keypoint": keypoint,
        "keypoint_score": np.full((1, frames, 17), score, np.float32),
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> SimpleNamespace:
    """Tiny synthetic data, 1-step PeVL and VL checkpoints, a NaN copy, and bad files of every kind."""
    from pevl.data.synthetic import make_synthetic
    from pevl.engine.checkpoint import find_latest
    from pevl.engine.config import load_config
    from pevl.engine.train import train

    base = tmp_path_factory.mktemp("bad_inputs")
    root = base / "synthetic"
    make_synthetic(root, num_classes=2, per_class=4, frames=8, size=32, val_fraction=0.25, progress=False)
    runs = {}
    for preset, name, seed in (("pevl_tiny", "pevl_tiny", 0), ("vl_tiny", "vl_tiny", 0), ("pevl_tiny", "run_b", 1)):
        cfg = load_config(None, [*TINY, f"model.preset={preset}", f"data.root={root}", f"train.seed={seed}"])
        train(cfg, base / name, progress=False)
        runs[name] = find_latest(base / name)
    video = next((root / "videos").rglob("*.mp4"))
    far = _annotation(video.stem, 8)
    far["keypoint"][0, 3, 5, 0] = 1e30
    text_file = base / "notes.txt"
    text_file.write_text("not weights\n")
    a_file = base / "a_file"
    a_file.write_text("x")
    folder = base / "a_folder"
    folder.mkdir()
    clips = base / "clips"
    clips.mkdir()
    return SimpleNamespace(
        base=base,
        root=root,
        ckpt=runs["pevl_tiny"],
        vl_ckpt=runs["vl_tiny"],
        nan_ckpt=_poison(runs["pevl_tiny"], base / "diverged"),
        video=video,
        poses=root / "poses.pkl",
        other_poses=_skeleton(base / "other.pkl", [_annotation("another_clip", 5)]),
        nobody_poses=_skeleton(base / "nobody.pkl", [_annotation(video.stem, 8, score=0.0)]),
        no_split_poses=_skeleton(
            base / "no_split.pkl", [_annotation(f"clip{i}", 8) | {"label": i % 2} for i in range(10)]
        ),
        text_file=text_file,
        file=a_file,
        folder=folder,
        readonly=_readonly_folder(base),
        one_frame=_write_video(clips / "one_frame.avi", 1),
        truncated=_truncate(_write_video(base / "full.avi", 60), clips / "truncated.avi"),
        empty_scene=_write_video(clips / "empty_scene.avi", 12),
        run_a=base / "pevl_tiny",
        ckpt_b=runs["run_b"],
        far_poses=_raw_skeleton(base / "far.pkl", [far]),
        zero_poses=_raw_skeleton(base / "zero.pkl", [_annotation(video.stem, 0)]),
        zero_train_poses=_raw_skeleton(
            base / "zero_train.pkl", [_annotation(f"clip{i}", 8) | {"label": i % 2} for i in range(4)]
            + [_annotation("clip_empty", 0) | {"label": 1}], {"train": ["clip0", "clip1", "clip_empty"],
                                                             "val": ["clip2", "clip3"]},
        ),  # fmt: skip
        short_poses=_skeleton(base / "short.pkl", [_annotation(video.stem, 5)]),
        short_train_poses=_retimed(root / "poses.pkl", base / "short_train.pkl", 5),
        near_train_poses=_retimed(root / "poses.pkl", base / "near_train.pkl", 9),
        long_poses=_skeleton(base / "long.pkl", [_annotation(video.stem, 320)]),
        near_poses=_skeleton(base / "near.pkl", [_annotation(video.stem, 9)]),
        twice_poses=_raw_skeleton(
            base / "twice.pkl", [_annotation(video.stem, 8), _annotation(video.stem, 8) | {"label": 1}]
        ),
        split_poses=_skeleton(
            base / "three_classes.pkl", [_annotation(f"c{i}", 8) | {"label": i % 3} for i in range(9)],
            {"train": [f"c{i}" for i in range(6)], "val": ["c0", "c1", "c3", "c4"]},
        ),  # fmt: skip
        vfr=base / "vfr.mp4",
        vfr_times=_write_vfr(base / "vfr.mp4"),
        tiny_video=_write_tiny(base / "tiny.mp4"),
    )


def _retimed(poses: Path, dest: Path, frames: int) -> Path:
    """A copy of a pose file whose every annotation has ``frames`` frames (resampled by time)."""
    from pevl.data.pose.pyskl import load_pyskl, resample_by_time

    data = load_pyskl(poses)
    annotations = []
    for ann in data["annotations"]:
        keypoint = np.moveaxis(resample_by_time(np.moveaxis(ann["keypoint"], 1, 0), frames), 0, 1)
        score = np.moveaxis(resample_by_time(np.moveaxis(ann["keypoint_score"], 1, 0), frames), 0, 1)
        annotations.append(ann | {"keypoint": keypoint, "keypoint_score": score, "total_frames": frames})
    return _skeleton(dest, annotations, data["split"])


def _truncate(source: Path, dest: Path) -> Path:
    data = source.read_bytes()
    dest.write_bytes(data[: len(data) // 2])
    return dest


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PEVL_CACHE", str(tmp_path / "cache"))


def _tree(base: Path) -> set[str]:
    return {str(p.relative_to(base)) for p in base.rglob("*")}


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run ``pevl`` in-process; returns (exit status, stdout, stderr)."""
    capsys.readouterr()
    code = cli_main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# ---- the table: one row per case --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One command line and what it must do.

    Attributes:
        id: The case, as the test id.
        argv: The command line (``w.here`` is a fresh folder of the case).
        names: What the error / warning line must mention.
        expect: ``"error"`` (exit 2, one line, nothing left behind), ``"warning"`` (exit 0, a warning line naming
            ``names``) or ``"ok"`` (exit 0).
        setup: Prepares the case's files in ``w.here`` before the command runs.
        check: Further assertions on ``(w, stdout, stderr)`` after it ran.
        slow: Takes more than a few seconds.
    """

    id: str
    argv: Callable[[SimpleNamespace], list]
    names: Callable[[SimpleNamespace], object] | None = None
    expect: str = "error"
    setup: Callable[[SimpleNamespace], object] | None = None
    check: Callable[[SimpleNamespace, str, str], None] | None = None
    slow: bool = False


def _train(w: SimpleNamespace, *extra: str) -> list:
    return ["train", "--no-progress", "--set", *TINY, f"data.root={w.root}", *extra]


def _explain(w: SimpleNamespace, *extra: str) -> list:
    return ["explain", w.video, "-k", w.ckpt, "--pose-file", w.poses, *extra]


OUTPUTS: list[Case] = []
for kind, place, shown in (
    ("read-only folder", lambda w: w.readonly / "out", lambda w: w.readonly / "out"),
    ("a file where a folder is needed", lambda w: w.file, lambda w: w.file),
    ("a file on the folder's path", lambda w: w.file / "out", lambda w: w.file),
):
    OUTPUTS += [
        Case(f"eval --out: {kind}", lambda w, p=place: ["eval", "-k", w.ckpt, "--out", p(w)], shown),
        Case(f"train --work-dir: {kind}", lambda w, p=place: [*_train(w), "--work-dir", p(w)], shown),
        Case(f"explain --out: {kind}", lambda w, p=place: [*_explain(w), "--out", p(w)], shown),
        Case(f"make-synthetic OUT: {kind}", lambda w, p=place: ["make-synthetic", p(w), "--no-progress"], shown),
        Case(f"demo --out: {kind}", lambda w, p=place: ["demo", "--out", p(w), "--no-progress"], shown),
        Case(
            f"download-weights --cache-dir: {kind}",
            lambda w, p=place: ["download-weights", "ViT-B/16", "--cache-dir", p(w), "--quiet"],
            shown,
        ),
        Case(
            f"extract-poses --cache-dir: {kind}",
            lambda w, p=place: ["extract-poses", w.video, "-o", w.base / "ok.pkl", "--cache-dir", p(w)],
            shown,
        ),
    ]
OUTPUTS += [
    Case("extract-poses --out: read-only folder", lambda w: ["extract-poses", w.video, "-o", w.readonly / "p.pkl"],
         lambda w: w.readonly / "p.pkl"),
    Case("extract-poses --out: a folder where a file is needed", lambda w: ["extract-poses", w.video, "-o", w.folder],
         lambda w: w.folder),
    Case("extract-poses --out: a file on the file's path", lambda w: ["extract-poses", w.video, "-o", w.file / "p.pkl"],
         lambda w: w.file),
]  # fmt: skip

NONFINITE: list[Case] = [
    Case("eval: checkpoint with NaN weights", lambda w: ["eval", "-k", w.nan_ckpt], lambda w: w.nan_ckpt),
    Case("predict: checkpoint with NaN weights",
         lambda w: ["predict", w.video, "-k", w.nan_ckpt, "--pose-file", w.poses], lambda w: w.nan_ckpt),
    Case("explain: checkpoint with NaN weights",
         lambda w: ["explain", w.video, "-k", w.nan_ckpt, "--pose-file", w.poses, "--out", w.base / "x"],
         lambda w: w.nan_ckpt),
]  # fmt: skip

INPUTS: list[Case] = [
    Case("predict --pose-file: the only annotation is another video's",
         lambda w: ["predict", w.video, "-k", w.ckpt, "--pose-file", w.other_poses], lambda w: w.other_poses),
    Case("train: skeleton pickle without splits, unknown split name",
         lambda w: ["train", "--work-dir", w.base / "nosplit", "--set", *TINY, "model.preset=pt_tiny",
                    "data.dataset=pyskl", f"data.pose_file={w.no_split_poses}",
                    "data.train_split=xsub_train"],
         lambda w: w.no_split_poses),
    Case("train: model.pretrained is a text file", lambda w: _train(w, f"model.pretrained={w.text_file}") + [
         "--work-dir", w.base / "pretrained_run"], lambda w: w.text_file),
    Case("download-weights --url: a local path that does not exist",
         lambda w: ["download-weights", "ViT-B/16", "--url", w.base / "ViT-B-16.pt", "--cache-dir", w.base / "wc"],
         lambda w: w.base / "ViT-B-16.pt"),
    Case("explain --top-k 0", lambda w: [*_explain(w), "--top-k", "0", "--out", w.base / "x"], lambda w: "--top-k"),
    Case("eval --batch-size 0", lambda w: ["eval", "-k", w.ckpt, "--batch-size", "0"], lambda w: "--batch-size"),
    Case("predict --top-k 0", lambda w: ["predict", w.video, "-k", w.ckpt, "--top-k", "0"], lambda w: "--top-k"),
    Case("profile --set use_pose=maybe", lambda w: ["profile", "pevl_tiny", "--set", "use_pose=maybe"],
         lambda w: "use_pose"),
    Case("train: freeze_clip given as the string 'no'",
         lambda w: _train(w, 'model.overrides.freeze_clip="no"') + ["--work-dir", w.base / "typed1"],
         lambda w: "freeze_clip"),
    Case("train: num_ucmr_blocks=two", lambda w: _train(w, "model.overrides.num_ucmr_blocks=two") + [
         "--work-dir", w.base / "typed2"], lambda w: "num_ucmr_blocks"),
    Case("eval: --set data.root to a missing folder", lambda w: ["eval", "-k", w.ckpt, "--set",
         f"data.root={w.base / 'moved_away'}"], lambda w: w.base / "moved_away"),
]  # fmt: skip


# ---- 0. a loader worker that hangs ------------------------------------------------------------------------------

HANG: list[Case] = [
    Case("train: data.worker_start=fork (deadlocks once threads run)", lambda w: _train(w, "data.worker_start=fork")
         + ["--work-dir", w.here / "run"], lambda w: "data.worker_start"),
    Case("train: data.worker_timeout=0", lambda w: _train(w, "data.worker_timeout=0") + ["--work-dir", w.here / "run"],
         lambda w: "data.worker_timeout"),
    Case("train: loader workers and evaluation with progress bars (fork-after-threads)",
         lambda w: ["train", "--set", *TINY, f"data.root={w.root}", "data.num_workers=2", "train.eval_interval=1",
                    "optim.epochs=2", "train.max_steps=4", "data.batch_size=2", "--work-dir", w.here / "run"],
         expect="ok", check=lambda w, out, err: _assert_evaluated_twice(w.here / "run"), slow=True),
]  # fmt: skip


def _assert_evaluated_twice(run: Path) -> None:
    from pevl.engine.logger import read_metrics

    assert len([r for r in read_metrics(run) if "val/top1" in r]) == 2


# ---- 1. outputs that would overwrite an input -------------------------------------------------------------------


def _link(kind: str, target: Callable[[SimpleNamespace], Path], name: str) -> Callable[[SimpleNamespace], None]:
    def setup(w: SimpleNamespace) -> None:
        path = w.here / name
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.symlink_to if kind == "symlink" else path.hardlink_to)(target(w))

    return setup


def _copy_run(w: SimpleNamespace) -> None:
    shutil.copytree(w.run_a, w.here / "run")


def _damaged_cache_file(w: SimpleNamespace) -> None:
    from pevl.hub.download import cached_weights_path

    w.cached = cached_weights_path("ViT-B/16", w.here / "c")
    w.cached.parent.mkdir(parents=True)
    w.cached.write_bytes(b"a copy that fails its checksum")


def _still_there(path: Path) -> None:
    assert path.read_bytes() == b"a copy that fails its checksum"


def _video_unchanged(w: SimpleNamespace, out: str, err: str) -> None:
    import av

    with av.open(str(w.video)) as container:
        assert container.streams.video  # still a video


def _predict(w: SimpleNamespace, *extra: object) -> list:
    return ["predict", w.video, "-k", w.vl_ckpt, "--window", "0.16", *extra]


OVERWRITES: list[Case] = [
    Case("predict --out-json: the input video", lambda w: _predict(w, "--out-json", w.video), lambda w: w.video,
         check=_video_unchanged),
    Case("predict --out-csv: a symlink to the input video", lambda w: _predict(w, "--out-csv", w.here / "t.csv"),
         lambda w: w.here / "t.csv", setup=_link("symlink", lambda w: w.video, "t.csv"), check=_video_unchanged),
    Case("predict --out-video: a hard link to the input video", lambda w: _predict(w, "--out-video", w.here / "a.mp4"),
         lambda w: w.here / "a.mp4", setup=_link("hard", lambda w: w.video, "a.mp4"), check=_video_unchanged),
    Case("predict --out-json and --out-csv: one file", lambda w: _predict(w, "--out-json", w.here / "t",
         "--out-csv", w.here / "t"), lambda w: w.here / "t"),
    Case("predict --out-json: the --pose-file", lambda w: ["predict", w.video, "-k", w.ckpt, "--pose-file", w.poses,
         "--out-json", w.poses], lambda w: w.poses),
    Case("extract-poses --out: the input video", lambda w: ["extract-poses", w.video, "-o", w.video],
         lambda w: w.video, check=_video_unchanged),
    Case("extract-poses --out: a video of the input folder",
         lambda w: ["extract-poses", w.base / "clips", "-o", w.here / "v.pkl"], lambda w: w.here / "v.pkl",
         setup=_link("hard", lambda w: w.one_frame, "v.pkl")),
    Case("export --out: a symlink to the checkpoint's weights", lambda w: ["export", w.ckpt, "-o", w.here / "m.onnx"],
         lambda w: w.here / "m.onnx", setup=_link("symlink", lambda w: w.ckpt / "model.safetensors", "m.onnx")),
    Case("explain --out: index.html is a hard link to the video", lambda w: [*_explain(w), "--out", w.here / "x"],
         lambda w: w.here / "x" / "index.html", setup=_link("hard", lambda w: w.video, "x/index.html")),
    Case("eval --out: metrics.json is a symlink to the checkpoint's weights",
         lambda w: ["eval", "-k", w.ckpt, "--out", w.here / "r"], lambda w: w.here / "r" / "metrics.json",
         setup=_link("symlink", lambda w: w.ckpt / "model.safetensors", "r/metrics.json")),
    Case("download-weights --url: the cache file it would replace",
         lambda w: ["download-weights", "ViT-B/16", "--url", w.cached, "--cache-dir", w.here / "c", "--quiet"],
         lambda w: w.cached, setup=_damaged_cache_file, check=lambda w, out, err: _still_there(w.cached)),
    Case("train --overwrite: the --config is the earlier run's config.yaml",
         lambda w: ["train", "--no-progress", "--config", w.here / "run" / "config.yaml", "--work-dir", w.here / "run",
                    "--overwrite"], lambda w: w.here / "run" / "config.yaml", setup=_copy_run),
]  # fmt: skip


# ---- 2. work dirs shared by runs --------------------------------------------------------------------------------


def _checkpoints(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir() if p.is_dir() and not p.name.startswith("."))


def _kept_the_earlier_run(w: SimpleNamespace, out: str, err: str) -> None:
    run = w.here / "run"
    assert _checkpoints(run) == _checkpoints(w.run_a)  # untouched
    assert (run / "metrics.jsonl").read_text() == (w.run_a / "metrics.jsonl").read_text()
    subs = [p for p in run.iterdir() if p.is_dir() and p.name[:8].isdigit()]
    assert len(subs) == 1 and _checkpoints(subs[0]) and str(subs[0]) in out


def _replaced_the_earlier_run(w: SimpleNamespace, out: str, err: str) -> None:
    from pevl.engine.logger import read_metrics

    run = w.here / "run"
    assert len([r for r in read_metrics(run) if "loss" in r]) == 1  # only the new run's step
    assert not (run / ".pevl-lock").exists()


def _kept_run_a_checkpoint(w: SimpleNamespace, out: str, err: str) -> None:
    from pevl.engine.checkpoint import checkpoint_run

    run = w.here / "run"
    names = _checkpoints(run)
    assert set(_checkpoints(w.run_a)) <= set(names)  # run A's checkpoint survives run B's pruning
    runs = {checkpoint_run(run / "checkpoints" / n) for n in names}
    assert len(runs) == 2 and len(names) == len(_checkpoints(w.run_a)) + 1  # keep_last=1 pruned B's own older one


def _lock(pid: Callable[[], int]) -> Callable[[SimpleNamespace], None]:
    def setup(w: SimpleNamespace) -> None:
        (w.here / "run").mkdir()
        holder = {"pid": pid(), "host": socket.gethostname(), "since": "2026-01-01T00:00:00"}
        (w.here / "run" / ".pevl-lock").write_text(json.dumps(holder))

    return setup


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=60)
    return child.pid


WORK_DIRS: list[Case] = [
    Case("train: a work dir that holds a run", lambda w: _train(w, "optim.lr=1e-3") + ["--work-dir", w.here / "run"],
         lambda w: "--resume", setup=_copy_run),
    Case("train --new-run: a timestamped sub-run beside the earlier run",
         lambda w: _train(w, "optim.lr=1e-3") + ["--work-dir", w.here / "run", "--new-run"], expect="ok",
         setup=_copy_run, check=_kept_the_earlier_run),
    Case("train --overwrite: the earlier run is replaced, with a warning",
         lambda w: _train(w, "optim.lr=1e-3") + ["--work-dir", w.here / "run", "--overwrite"],
         lambda w: w.here / "run", expect="warning", setup=_copy_run, check=_replaced_the_earlier_run),
    Case("train --resume another run's checkpoint: pruning keeps the work dir's run",
         lambda w: _train(w, "train.max_steps=3", "train.save_every_steps=1", "train.keep_last=1", "optim.epochs=2",
                          "data.batch_size=2", "train.seed=1") + ["--work-dir", w.here / "run", "--resume", w.ckpt_b],
         expect="ok", setup=_copy_run, check=_kept_run_a_checkpoint),
    Case("train: a work dir locked by a live run", lambda w: _train(w) + ["--work-dir", w.here / "run"],
         lambda w: f"process {os.getppid()} on {socket.gethostname()}", setup=_lock(os.getppid)),
    Case("train: a stale lock (its process is gone)", lambda w: _train(w) + ["--work-dir", w.here / "run"],
         lambda w: "no longer runs", expect="warning", setup=_lock(_dead_pid),
         check=lambda w, out, err: _assert_no_lock(w.here / "run")),
    Case("train: --resume with --overwrite", lambda w: _train(w) + ["--work-dir", w.here / "run", "--resume",
         "--overwrite"], lambda w: "--overwrite", setup=_copy_run),
]  # fmt: skip


def _assert_no_lock(run: Path) -> None:
    assert _checkpoints(run) and not (run / ".pevl-lock").exists()


# ---- 3. blame: inputs checked where they enter ------------------------------------------------------------------


def _cache_entry(w: SimpleNamespace, change: str) -> None:
    """Predict once (filling the text cache), remember the answer, then damage the cache entry."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from pevl.apps.inference import predict_video

    w.expected = predict_video(w.video, w.vl_ckpt, pose_file=w.poses)["top_k"]
    entries = list((Path(os.environ["PEVL_CACHE"]) / "texts").glob("*.safetensors"))
    assert len(entries) == 1
    w.entry = entry = entries[0]
    if change == "bytes":  # NaN bytes over the middle of the tensor data
        data = bytearray(entry.read_bytes())
        start = 8 + int.from_bytes(data[:8], "little")
        middle = (start + len(data)) // 2
        data[middle : middle + 64] = b"\xff" * 64
        entry.write_bytes(bytes(data))
    else:  # well-formed, finite, other tensors under the same name and metadata
        with safe_open(str(entry), framework="pt") as f:
            metadata = f.metadata()
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        tensors = {k: -v if v.is_floating_point() else v for k, v in tensors.items()}
        save_file(tensors, str(entry), metadata=metadata)


def _same_answer_as_before(w: SimpleNamespace, out: str, err: str) -> None:
    from pevl.apps.inference import predict_video

    got = json.loads(out)["top_k"]
    assert [x["label"] for x in got] == [x["label"] for x in w.expected]
    assert np.allclose([x["probability"] for x in got], [x["probability"] for x in w.expected], atol=1e-5)
    again = predict_video(w.video, w.vl_ckpt, pose_file=w.poses)  # the entry was rebuilt: a clean hit now
    assert again["texts_cached"] and not again["warnings"] and again["top_k"][0]["label"] == got[0]["label"]


BLAME: list[Case] = [
    Case("predict --pose-file: a coordinate of 1e30", lambda w: ["predict", w.video, "-k", w.ckpt, "--pose-file",
         w.far_poses], lambda w: f"{w.far_poses}: annotation {w.video.stem!r}: frame 3 has a coordinate 1e+30"),
    Case("predict: a text-cache entry damaged mid-file",
         lambda w: ["predict", w.video, "-k", w.vl_ckpt, "--json", "--pose-file", w.poses], lambda w: w.entry,
         expect="warning", setup=lambda w: _cache_entry(w, "bytes"), check=_same_answer_as_before),
    Case("predict: a well-formed text-cache entry holding other tensors",
         lambda w: ["predict", w.video, "-k", w.vl_ckpt, "--json", "--pose-file", w.poses], lambda w: w.entry,
         expect="warning", setup=lambda w: _cache_entry(w, "tensors"), check=_same_answer_as_before),
]  # fmt: skip


# ---- 4. pose frames that do not match the video -----------------------------------------------------------------


def _resampled(frames: int) -> Callable[[SimpleNamespace, str, str], None]:
    def check(w: SimpleNamespace, out: str, err: str) -> None:
        result = json.loads(out)
        assert any(f"{frames} pose frames" in warning and "resampled" in warning for warning in result["warnings"])

    return check


POSE_FRAMES: list[Case] = [
    Case("predict --pose-file: 5 pose frames for an 8-frame video", lambda w: ["predict", w.video, "-k", w.ckpt,
         "--pose-file", w.short_poses], lambda w: "has 5 pose frames, the video"),
    Case("predict --pose-file: 320 pose frames for an 8-frame video", lambda w: ["predict", w.video, "-k", w.ckpt,
         "--pose-file", w.long_poses], lambda w: "has 320 pose frames, the video"),
    Case("predict --pose-file: 9 pose frames for 8 (within the tolerance)", lambda w: ["predict", w.video, "-k",
         w.ckpt, "--pose-file", w.near_poses, "--json"], lambda w: "9 pose frames", expect="warning",
         check=_resampled(9)),
    Case("predict --pose-file --resample-poses: 5 pose frames for 8", lambda w: ["predict", w.video, "-k", w.ckpt,
         "--pose-file", w.short_poses, "--resample-poses", "--json"], lambda w: "5 pose frames", expect="warning",
         check=_resampled(5)),
]  # fmt: skip


POSE_FRAMES += [
    Case("train: a pose file of 5-frame annotations for 8-frame videos", lambda w: _train(w,
         f"data.pose_file={w.short_train_poses}") + ["--work-dir", w.here / "run"],
         lambda w: f"{w.short_train_poses}: annotation '000_0000' has 5 pose frames, the video"),
    Case("train: 9 pose frames for 8-frame videos (within the tolerance)", lambda w: _train(w,
         f"data.pose_file={w.near_train_poses}") + ["--work-dir", w.here / "run"],
         lambda w: f"{w.near_train_poses}: annotation '000_0000' has 9 pose frames", expect="warning",
         check=lambda w, out, err: _resampled_once(err, 9)),
    Case("train data.options.resample_poses=true: 5 pose frames for 8", lambda w: _train(w,
         f"data.pose_file={w.short_train_poses}", "data.options.resample_poses=true") + ["--work-dir", w.here / "run"],
         lambda w: "has 5 pose frames, the video", expect="warning", check=lambda w, out, err: _resampled_once(err, 5)),
]  # fmt: skip


def _resampled_once(err: str, frames: int) -> None:
    """One warning for the training set, naming both counts and how many annotations differ."""
    lines = [line for line in err.splitlines() if f"has {frames} pose frames, the video" in line]
    assert len(lines) == 1 and "resampled by time" in lines[0] and " annotations differ" in lines[0], err


# ---- 5. variable frame rate: presentation timestamps ------------------------------------------------------------


def _times_are_presentation_times(w: SimpleNamespace, out: str, err: str) -> None:
    times = np.asarray(w.vfr_times)
    result = json.loads((w.here / "t.json").read_text())
    assert result["variable_frame_rate"] and abs(result["duration"] - 19.2) < 1e-6
    windows = result["windows"]
    assert len(windows) == 18 and windows[-1]["end"] == result["duration"] and windows[0]["start"] == 0
    for k, win in enumerate(windows[:-1]):
        shown = times[win["start_frame"] : win["end_frame"]]
        assert shown.min() >= k * 1.0 - 1e-6 and shown.max() < k * 1.0 + 2.0  # the frames shown in [k, k + 2) s
        assert win["start"] == round(float(times[win["start_frame"]]), 3)
    rows = (w.here / "t.csv").read_text().splitlines()[1:]
    assert {(float(r.split(",")[1]), float(r.split(",")[2])) for r in rows} == {(x["start"], x["end"]) for x in windows}
    assert "over 19.20 s" in out


def _annotated_keeps_the_timing(w: SimpleNamespace, out: str, err: str) -> None:
    from pevl.data.video import frame_times

    written = frame_times(w.here / "a.mp4")
    assert written is not None and np.abs(written - np.asarray(w.vfr_times)).max() < 2e-3


TIME_BASES: list[Case] = [
    Case("predict --window 2 --stride 1: a variable-frame-rate video (JSON, CSV, table)",
         lambda w: ["predict", w.vfr, "-k", w.vl_ckpt, "--window", "2", "--stride", "1", "--out-json",
                    w.here / "t.json", "--out-csv", w.here / "t.csv"], expect="ok",
         check=_times_are_presentation_times),
    Case("predict --out-video: a variable-frame-rate video keeps its timing",
         lambda w: ["predict", w.vfr, "-k", w.vl_ckpt, "--window", "2", "--out-video", w.here / "a.mp4"],
         expect="ok", check=_annotated_keeps_the_timing),
]  # fmt: skip


# ---- 6-8. annotations, tiny videos and smaller checks -----------------------------------------------------------


def _decodes(path: Callable[[SimpleNamespace], Path], side: int, frames: int) -> Callable:
    def check(w: SimpleNamespace, out: str, err: str) -> None:
        from pevl.data.video import probe_video

        info = probe_video(path(w))
        assert (info.width, info.height, info.num_frames) == (side, side, frames)

    return check


def _labels_file(w: SimpleNamespace) -> None:
    (w.here / "labels.txt").write_text("diving\nrunning\nDiving\n")


def _label_map(w: SimpleNamespace) -> None:
    (w.here / "classes.txt").write_text("first\nsecond\nthird\n")


def _label_map_twice(w: SimpleNamespace) -> None:
    (w.here / "classes.txt").write_text("first\nsecond\n\nFirst\n")


def _umask_0022(w: SimpleNamespace) -> None:
    os.umask(0o022)


def _files_are_0644(w: SimpleNamespace, out: str, err: str) -> None:
    from pevl.engine.checkpoint import find_latest

    checkpoint = find_latest(w.here / "run")
    assert stat.S_IMODE(checkpoint.stat().st_mode) == 0o755
    for path in (*checkpoint.iterdir(), w.here / "run" / "config.yaml", w.here / "run" / "metrics.jsonl"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def _pyskl_train(w: SimpleNamespace, pose_file: Path, *extra: str) -> list:
    return ["train", "--no-progress", "--work-dir", w.here / "run", "--set", *TINY, "model.preset=pt_tiny",
            "data.dataset=pyskl", f"data.pose_file={pose_file}", *extra]  # fmt: skip


SMALLER: list[Case] = [
    Case("predict --pose-file: a zero-frame annotation", lambda w: ["predict", w.video, "-k", w.ckpt, "--pose-file",
         w.zero_poses], lambda w: f"{w.zero_poses}: annotation {w.video.stem!r}: has 0 frames"),
    Case("train: a zero-frame annotation in the training split", lambda w: _pyskl_train(w, w.zero_train_poses),
         lambda w: f"{w.zero_train_poses}: annotation 'clip_empty': has 0 frames"),
    Case("predict --out-video: a 2x2 video", lambda w: ["predict", w.tiny_video, "-k", w.vl_ckpt, "--window", "0.2",
         "--out-video", w.here / "a.mp4"], expect="ok", check=_decodes(lambda w: w.here / "a.mp4", 2, 10)),
    Case("predict --pose-file: one frame_dir twice with two labels", lambda w: ["predict", w.video, "-k", w.ckpt,
         "--pose-file", w.twice_poses], lambda w: f"annotations #0 and #1 are both {w.video.stem!r}"),
    Case("predict --labels: one class twice", lambda w: ["predict", w.video, "-k", w.vl_ckpt, "--labels",
         "diving;running;diving"], lambda w: "--labels: labels 1 and 3 are both 'diving'"),
    Case("predict --labels: a label file naming one class twice", lambda w: ["predict", w.video, "-k", w.vl_ckpt,
         "--labels", w.here / "labels.txt"], lambda w: w.here / "labels.txt", setup=_labels_file),
    Case("train: the val split lacks the highest label", lambda w: _pyskl_train(w, w.split_poses,
         "train.eval_interval=1"), lambda w: f"{w.split_poses}: the val split has 2 classes and the train split 3"),
    Case("train: the val split lacks the highest label, a label map gives the classes",
         lambda w: _pyskl_train(w, w.split_poses, "train.eval_interval=1",
                                f"data.options.label_map={w.here / 'classes.txt'}"), expect="ok", setup=_label_map),
    Case("train: a label map naming one class twice", lambda w: _pyskl_train(w, w.split_poses,
         f"data.options.label_map={w.here / 'classes.txt'}"),
         lambda w: f"{w.here / 'classes.txt'}: lines 1 and 4 both name 'first' and 'First'", setup=_label_map_twice),
    Case("eval --set model.*", lambda w: ["eval", "-k", w.ckpt, "--set", "model.preset=vl_tiny"],
         lambda w: "--set model.preset=vl_tiny"),
    Case("export --opset 99", lambda w: ["export", w.ckpt, "-o", w.here / "m.onnx", "--opset", "99"],
         lambda w: "--opset 99"),
    Case("download-weights: a failed first download leaves no folder",
         lambda w: ["download-weights", "ViT-B/16", "--url", "http://127.0.0.1:9/ViT-B-16.pt", "--cache-dir",
                    w.here / "weights", "--quiet"], lambda w: "http://127.0.0.1:9/ViT-B-16.pt"),
    Case("train under umask 0022: every file 0644, folders 0755", lambda w: _train(w) + ["--work-dir", w.here / "run"],
         expect="ok", setup=_umask_0022, check=_files_are_0644),
]  # fmt: skip

TABLE = OUTPUTS + NONFINITE + INPUTS + HANG + OVERWRITES + WORK_DIRS + BLAME + POSE_FRAMES + TIME_BASES + SMALLER


@pytest.mark.parametrize(
    "case", [pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.slow else []) for c in TABLE]
)
def test_bad_input(case: Case, world, capsys, tmp_path, monkeypatch) -> None:
    import pevl.engine.workdir as workdir

    monkeypatch.setattr(workdir, "LOCK_WAIT_S", 0.5)  # a live lock is waited for, briefly
    world.here = tmp_path / "case"
    world.here.mkdir()
    umask = _umask()
    try:
        if case.setup is not None:
            case.setup(world)
        before = _tree(world.base), _tree(world.here)
        code, out, err = run_cli(case.argv(world), capsys)
    finally:
        os.umask(umask)
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    if case.expect == "error":
        assert code == 2, (out, err)
        assert len(lines) == 1 and lines[0].startswith("pevl: error: "), err
        assert str(case.names(world)) in lines[0], lines[0]
        assert (_tree(world.base), _tree(world.here)) == before, "files left behind"
    else:
        assert code == 0 and "pevl: error" not in err, (out, err)
    if case.expect == "warning":
        warnings = [line for line in lines if line.startswith("warning: ")]
        assert any(str(case.names(world)) in line for line in warnings), err
    if case.check is not None:
        case.check(world, out, err)


@pytest.mark.slow
def test_two_trainings_started_together_into_one_work_dir(world, capsys, monkeypatch, tmp_path) -> None:
    """The second of two live runs is refused, naming the first; the first ends normally and releases the lock."""
    import time

    import pevl.engine.workdir as workdir

    monkeypatch.setattr(workdir, "LOCK_WAIT_S", 0.5)
    work = tmp_path / "run"
    argv = [str(a) for a in _train(world, "optim.epochs=20", "train.max_steps=40", "--work-dir", work)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, "-m", "pevl", *argv], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not (work / ".pevl-lock").exists():
            assert first.poll() is None and time.monotonic() < deadline, first.communicate(timeout=60)
            time.sleep(0.05)
        code, _, err = run_cli(_train(world) + ["--work-dir", work], capsys)
        assert code == 2 and f"process {first.pid} on {socket.gethostname()}" in err, err
    finally:
        out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert "40 steps" in out and not (work / ".pevl-lock").exists()
    lines = (work / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len({json.loads(line)["step"] for line in lines})  # one run's log, not two interleaved


def test_live_windows_carry_the_streams_presentation_timestamps(world, monkeypatch) -> None:
    """Live input (here the VFR file read as a stream, with a buffer large enough that no frame is dropped)."""
    from pevl.apps import sources, stream
    from pevl.engine.builder import load_trained_model

    class Unhurried(sources.FrameSource):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **{**kwargs, "buffer_seconds": 1000.0})

    monkeypatch.setattr(stream, "FrameSource", Unhurried)
    loaded = load_trained_model(world.vl_ckpt)
    timeline = stream.run_timeline(world.vfr, loaded.model, loaded.classes, window=1.0, live=True)
    times = np.asarray(world.vfr_times)
    assert timeline.windows and timeline.dropped_frames == 0
    for window in timeline.windows:
        start, end = timeline.window_span(window)
        assert start == pytest.approx(times[window.start])
        assert end == pytest.approx(times[window.end - 1] + 1 / timeline.fps)


def test_the_table_covers_every_command_that_writes() -> None:
    commands = {case.id.split(":")[0].split()[0] for case in TABLE}
    assert {"eval", "train", "extract-poses", "explain", "make-synthetic", "demo", "download-weights"} <= commands
    assert {"predict", "profile", "export"} <= commands
    assert len(TABLE) == len({case.id for case in TABLE})  # one row per case


# ---- content warnings: exit 0, one line each, in the JSON ---------------------------------------------------------


@pytest.mark.parametrize(
    "video, checkpoint, pose_file, expected",
    [
        ("video", "ckpt", "nobody_poses", "no person found"),
        ("one_frame", "vl_ckpt", None, "single frame"),
        ("truncated", "vl_ckpt", None, "truncated"),
    ],
    ids=["nobody found", "1-frame video", "truncated video"],
)
def test_predict_warns_about_questionable_content(world, capsys, video, checkpoint, pose_file, expected) -> None:
    argv = ["predict", getattr(world, video), "-k", getattr(world, checkpoint), "--json"]
    argv += ["--pose-file", getattr(world, pose_file)] if pose_file else []
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and expected in warnings[0] and str(getattr(world, video)) in warnings[0]
    assert [expected in w for w in json.loads(out)["warnings"]] == [True]


def test_a_good_video_gets_no_warning_and_a_video_only_model_says_it_uses_no_poses(world, capsys) -> None:
    code, out, err = run_cli(["predict", world.video, "-k", world.vl_ckpt], capsys)
    assert code == 0 and "warning" not in err
    assert "no poses used" in out.splitlines()[0] and "person in" not in out


@pytest.mark.slow
def test_extract_poses_warns_counts_and_still_writes(world, capsys, tmp_path) -> None:
    pytest.importorskip("mediapipe")
    out_file = tmp_path / "poses.pkl"
    code, out, err = run_cli(["extract-poses", world.base / "clips", "-o", out_file, "--no-progress"], capsys)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert any("single frame" in w and "one_frame" in w for w in warnings)
    assert any("truncated" in w and "truncated.avi" in w for w in warnings)
    assert any("no person found" in w and "empty_scene" in w for w in warnings)
    assert "3/3 videos written" in out and "3 with warnings" in out
    assert out_file.is_file()


def test_labels_longer_than_a_file_name_are_labels(world, capsys) -> None:
    assert len(KINETICS_20) > 255
    code, out, err = run_cli(["predict", world.video, "-k", world.vl_ckpt, "--labels", KINETICS_20, "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["top_k"][0]["label"] in KINETICS_20.split(";")


# ---- training that meets a non-finite loss --------------------------------------------------------------------


def _nan_on_steps(monkeypatch, bad_calls: set[int]) -> None:
    """Make the training inputs NaN on the given (1-based) batches."""
    import pevl.engine.train as train_module

    original = train_module.batch_inputs
    calls = {"n": 0}

    def poisoned(batch, device):
        inputs, views = original(batch, device)
        calls["n"] += 1
        if calls["n"] in bad_calls:
            inputs = {k: None if v is None else torch.full_like(v, float("nan")) for k, v in inputs.items()}
        return inputs, views

    monkeypatch.setattr(train_module, "batch_inputs", poisoned)


def _all_finite(checkpoint: Path) -> bool:
    from safetensors.torch import load_file

    return all(torch.isfinite(t).all() for t in load_file(str(checkpoint / "model.safetensors")).values())


@pytest.mark.slow
def test_training_stops_on_a_nonfinite_loss_and_keeps_the_last_good_checkpoint(world, capsys, monkeypatch, tmp_path):
    from pevl.engine.checkpoint import find_latest, load_checkpoint

    _nan_on_steps(monkeypatch, {2})
    work = tmp_path / "run"
    argv = _train(world, "train.max_steps=3", "train.save_every_steps=1", "data.batch_size=2")
    code, _, err = run_cli([*argv, "--work-dir", work], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err
    assert "not finite" in lines[0] and "step 2" in lines[0] and "train.nonfinite=skip" in lines[0]
    assert "the inputs of" in lines[0] and "hold NaN or inf" in lines[0]  # the data is blamed, with its samples
    latest = find_latest(work)
    assert str(latest) in lines[0] and load_checkpoint(latest).step == 1 and _all_finite(latest)


@pytest.mark.slow
def test_training_can_skip_nonfinite_steps(world, capsys, monkeypatch, tmp_path):
    from pevl.engine.checkpoint import find_latest

    _nan_on_steps(monkeypatch, {2})
    work = tmp_path / "run"
    argv = _train(world, "train.max_steps=3", "train.nonfinite=skip", "data.batch_size=2", "optim.epochs=2")
    code, out, err = run_cli([*argv, "--work-dir", work], capsys)
    assert code == 0, err
    assert [line for line in err.splitlines() if "step skipped" in line] != []
    assert "3 steps" in out and _all_finite(find_latest(work))


# ---- skeleton pickles without splits: a held-out share, announced ------------------------------------------------


def test_a_pickle_without_splits_holds_out_a_seeded_share(world, capsys) -> None:
    from pevl.data.datasets import build_dataset

    options = {"pose_file": str(world.no_split_poses), "split_seed": 3}
    kwargs = {"root": None, "use_video": False, "num_pose_frames": 8, "num_video_frames": 8}
    train_set = build_dataset("pyskl", "train", train=True, **kwargs, **options)
    val_set = build_dataset("pyskl", "val", train=False, **kwargs, **options)
    train_names = {r.name for r in train_set.records}
    val_names = {r.name for r in val_set.records}
    assert not train_names & val_names and len(train_names | val_names) == 10
    assert sorted({r.label for r in val_set.records}) == [0, 1]  # per class
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and str(world.no_split_poses) in warnings[0] and "held out" in warnings[0]
    again = build_dataset("pyskl", "val", train=False, **kwargs, **options)
    assert {r.name for r in again.records} == val_names  # seeded: the same share every time


# ---- a pose file for another video (real data) ------------------------------------------------------------------


def test_the_ucf_pose_file_fits_its_video_and_not_another(shared_data) -> None:
    from pevl.data.pose.pyskl import SkeletonFile
    from pevl.data.video import probe_video
    from pevl.errors import PevlError

    poses = SkeletonFile(shared_data / "skeleton" / "ucf101_apply_eye_makeup_pyskl.pkl")
    for name, fits in (("ucf101_apply_eye_makeup.avi", True), ("k400_tai_chi.mp4", False)):
        video = shared_data / "videos" / name
        info = probe_video(video)
        if fits:
            person = poses.video_poses(video, info.num_frames, (info.height, info.width))
            # 163 pose frames for 164 decoded ones: resampled by time to the video's frames, with both counts said
            assert person.keypoint.shape[0] == info.num_frames == 164
            assert len(person.warnings) == 1 and "163 pose frames" in person.warnings[0] and "164" in person.warnings[0]
        else:
            with pytest.raises(PevlError, match="not for k400_tai_chi.mp4"):
                poses.video_poses(video, info.num_frames, (info.height, info.width))


def test_a_truncated_real_video_is_recognised(shared_data, tmp_path) -> None:
    from pevl.data.quality import content_warnings
    from pevl.data.video import probe_video

    cut = _truncate(shared_data / "videos" / "k400_archery.avi", tmp_path / "archery_cut.avi")
    info = probe_video(cut)
    assert info.truncated and info.declared_frames == 131 and info.num_frames < 131
    assert not probe_video(shared_data / "videos" / "k400_archery.avi").truncated
    assert [w for w in content_warnings(cut, info) if "truncated" in w]


# ---- output files respect the umask; checkpoints travel -----------------------------------------------------------


def test_outputs_respect_the_umask(tmp_path) -> None:
    from pevl.utils.io import write_json

    previous = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {})
        assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
        os.umask(0o077)
        write_json(tmp_path / "b.json", {})
        assert stat.S_IMODE((tmp_path / "b.json").stat().st_mode) == 0o600
    finally:
        os.umask(previous)


def test_a_checkpoint_folder_respects_the_umask(world) -> None:
    assert stat.S_IMODE(world.ckpt.stat().st_mode) == 0o777 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.slow
def test_checkpoints_store_a_resolved_root_and_eval_works_from_elsewhere(world, capsys, monkeypatch, tmp_path):
    from pevl.engine.checkpoint import find_latest, load_checkpoint
    from pevl.engine.config import load_config
    from pevl.engine.train import train

    monkeypatch.chdir(world.base)
    train(load_config(None, [*TINY, "data.root=synthetic"]), tmp_path / "run", progress=False)
    checkpoint = find_latest(tmp_path / "run")
    assert load_checkpoint(checkpoint).config["data"]["root"] == str(world.root.resolve())
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(["eval", "-k", checkpoint, "--json", "--out", tmp_path / "report"], capsys)
    assert code == 0, err
    moved = tmp_path / "moved"
    shutil.copytree(world.root, moved)
    argv = ["eval", "-k", checkpoint, "--set", f"data.root={moved}", "--out", tmp_path / "r2"]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err


def test_confusion_matrix_labels_of_the_demo_classes_stay_distinct(world) -> None:
    from pevl.engine.metrics import short_labels

    names = (world.root / "classes.txt").read_text().splitlines()
    names += [f"back takeoff, 1.5 somersaults, 0.5 twist, {position}, then a long tail that gets cut off"
              for position in ("tucked", "piked")]  # fmt: skip
    labels = short_labels(names)
    assert len(set(labels)) == len(set(names)) and all(len(label) <= 56 for label in labels)
