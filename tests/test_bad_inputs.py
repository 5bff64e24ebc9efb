"""The bad inputs ``pevl`` handles, command by command: a clear line or an honest warning, never a confident number.

* ``ERRORS`` (commands x bad inputs): exit status 2, exactly one stderr line ``pevl: error: ...`` that names the
  file (or the option) at fault, no traceback, and no file or folder left behind.
* ``WARNINGS``: content that can be processed but should not be trusted (nobody in the video, a single frame, a
  truncated file): exit 0, one ``warning:`` line per problem, also recorded in the JSON output.
* Then the cases that need more than a command line: training that meets a non-finite loss, a skeleton pickle
  without splits, a pose file for another video, umask, checkpoints used from another folder.

Everything runs in-process on a tiny synthetic set and 1-step tiny models; multi-second cases are marked slow.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
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
    for preset in ("pevl_tiny", "vl_tiny"):
        cfg = load_config(None, [*TINY, f"model.preset={preset}", f"data.root={root}"])
        train(cfg, base / preset, progress=False)
        runs[preset] = find_latest(base / preset)
    video = next((root / "videos").rglob("*.mp4"))
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
    )


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


# ---- the table: commands x bad inputs -> one line, exit 2 -------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A command line with one bad input; ``names`` is what the error line must mention."""

    id: str
    argv: Callable[[SimpleNamespace], list]
    names: Callable[[SimpleNamespace], object]
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

ERRORS = OUTPUTS + NONFINITE + INPUTS
@pytest.mark.parametrize("case", ERRORS, ids=[c.id for c in ERRORS])
def test_bad_input_gives_one_line_naming_it_and_leaves_nothing(case: Case, world, capsys) -> None:
    before = _tree(world.base)
    code, out, err = run_cli(case.argv(world), capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (out, err)
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("pevl: error: "), err
    assert str(case.names(world)) in lines[0], lines[0]
    assert _tree(world.base) == before, "files left behind"


def test_the_table_covers_every_command_that_writes() -> None:
    commands = {case.id.split(":")[0].split()[0] for case in ERRORS}
    assert {"eval", "train", "extract-poses", "explain", "make-synthetic", "demo", "download-weights"} <= commands
    assert {"predict", "profile"} <= commands


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
