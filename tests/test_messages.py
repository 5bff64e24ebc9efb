"""Messages as the docs show them, refusals that leave nothing behind, one person per transform, benchmark data."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_extract_poses_reports_a_broken_video_as_docs_data_md_shows(tmp_path):
    from pevl.data.pose.extract import ExtractSummary, extract_poses

    (tmp_path / "clip.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(Exception, match="clip.mp4: cannot open as a video"):
        extract_poses(tmp_path / "clip.mp4", tmp_path / "p.pkl", cache_dir=tmp_path / "c", progress=False)
    summary = ExtractSummary(out=tmp_path / "p.pkl", total=2, extracted=1)
    summary.failed.append(("clip.mp4", "clip.mp4: cannot open as a video (invalid data)"))
    lines = summary.format().splitlines()
    assert "1 skipped" in lines[0] and "failed" not in summary.format()
    assert lines[-1] == "skipped clip.mp4: cannot open as a video (invalid data)"
    docs = (ROOT / "docs" / "data.md").read_text()
    assert "`skipped clip.mp4: cannot open as a video (...)`" in docs  # the line above, as documented


def test_the_multi_label_warning_is_one_line(tmp_path, capsys):
    from pevl.cli import show_warnings_as_lines
    from pevl.data.datasets.lists import check_labels, parse_video_list

    (tmp_path / "list.txt").write_text("a.mp4 0 1\nb.mp4 1\n")
    entries = parse_video_list(tmp_path / "list.txt", kind="videos")
    passed_on = []
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *rest: passed_on.append(str(message))  # Python's own handler
        show_warnings_as_lines()
        check_labels(tmp_path / "list.txt", entries, 2)
        warnings.warn("from elsewhere", UserWarning, stacklevel=1)  # not the package's: Python's own format
    assert passed_on == ["from elsewhere"]
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"warning: {tmp_path / 'list.txt'}: 1 multi-label lines (first: line 1); single-label " \
        "training uses the first label of each"
    assert len(err) == 1  # another package's warning goes to Python's own handler, in its own format


def test_only_rank_0_reports_the_checkpoint_under_torchrun(monkeypatch, tmp_path, capsys):
    import pevl.engine.train
    from pevl.cli import main
    from pevl.engine.train import TrainResult

    def fake_train(cfg, work_dir, resume=False, progress=True, **_):  # noqa: ANN001, ANN202 -- a stand-in
        on_main = os.environ.get("RANK") == "0"
        return TrainResult(Path(work_dir), 1, 2, {}, None, Path(work_dir) / "ckpt" if on_main else None)

    monkeypatch.setattr(pevl.engine.train, "train", fake_train)
    for rank, expected in (("1", ""), ("0", "checkpoint")):
        monkeypatch.setenv("RANK", rank)
        assert main(["train", "--work-dir", str(tmp_path / "w"), "--no-progress"]) == 0
        out = capsys.readouterr().out
        assert (expected in out) if expected else out == ""
        assert "None" not in out


def test_a_refused_run_leaves_no_config(synthetic_set, tmp_path, monkeypatch):
    from pevl.engine.config import load_config
    from pevl.engine.train import train
    from pevl.errors import PevlError

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # not installed
    cfg = load_config(None, [f"data.root={synthetic_set}", "train.tensorboard=true", "data.num_workers=0",
                             "model.overrides.num_video_frames=2", "model.overrides.num_pose_frames=8"])  # fmt: skip
    with pytest.raises(PevlError, match="tensorboard"):
        train(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "config.yaml").exists()
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


@pytest.mark.parametrize("which", ["clip", "pose"])
def test_transforms_take_one_person_and_refuse_a_person_axis(which):
    from pevl.data.transforms import ClipTransform, PoseTransform

    rng = np.random.default_rng(0)
    keypoint = rng.uniform(0, 60, (2, 8, 17, 2)).astype(np.float32)  # [M, T, J, 2] as in a pickle
    score = np.ones((2, 8, 17), np.float32)
    frames = np.zeros((4, 64, 64, 3), np.uint8)

    def apply(kp: np.ndarray, sc: np.ndarray):  # noqa: ANN202
        if which == "clip":
            return ClipTransform(image_size=32)(frames, kp, sc, (64, 64))["pose"]
        return PoseTransform()(kp, sc, (64, 64))

    assert tuple(apply(keypoint[0], score[0]).shape) == (1, 8, 17, 3)
    with pytest.raises(ValueError, match=re.escape("[M, T, J, 2] = [2, 8, 17, 2]")) as err:
        apply(keypoint, score)
    assert "main_person" in str(err.value)
    with pytest.raises(ValueError, match="keypoint must be"):
        apply(keypoint[0], score[0, :4])
    docs = (ROOT / "docs" / "data.md").read_text()
    assert "Both transforms take **one person**" in docs


def test_benchmarks_read_the_real_data_from_pevl_shared_data(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "benchmarks")]),
           "PEVL_SHARED_DATA": str(tmp_path)}  # fmt: skip
    code = "import _report, jhmdb_pose_text; print(_report.SHARED_DATA); print(jhmdb_pose_text.NPZ)"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(tmp_path), str(tmp_path / "skeleton" / "jhmdb14_gt_2d_splits.npz")]
