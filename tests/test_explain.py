"""`pevl explain`: the numbers behind the attention figures, and the files written for a real video."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pevl.apps.attention import BACKGROUND, explain_clip
from pevl.apps.explain import explain_video
from pevl.apps.inference import prepare_clip
from pevl.cli import main as cli_main
from pevl.engine.builder import load_trained_model
from pevl.models.prompts import split_phrases
from train_helpers import train_tiny

pytestmark = pytest.mark.slow  # every test reads the checkpoints the module trains first

LABELS = ["back takeoff, 2 somersaults, tuck", "forward takeoff, 1 somersault, 0.5 twist, pike", "free position jump"]


def _train(root: Path, out: Path, preset: str) -> Path:
    return train_tiny(root, out, preset, video_frames=4)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> tuple[Path, Path]:
    """Tiny PeVL and VL-baseline checkpoints trained for a few steps on synthetic dives."""
    from pevl.data.synthetic import make_synthetic

    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic(root, num_classes=3, per_class=4, frames=16, size=32, val_fraction=0.25, progress=False)
    pevl = _train(root, tmp_path_factory.mktemp("pevl"), "pevl_tiny")
    vl = _train(root, tmp_path_factory.mktemp("vl"), "vl_tiny")
    return pevl, vl


@pytest.fixture(scope="module")
def real_explanation(checkpoints, shared_data):
    """PeVL's explanation of a real weightlifting video, with custom comma-separated label texts."""
    loaded = load_trained_model(checkpoints[0])
    clip = prepare_clip(shared_data / "videos" / "k400_clean_and_jerk.mp4", loaded.model.config)
    return explain_clip(loaded.model, clip, LABELS, model_name="pevl_tiny"), loaded.model.config


def test_attention_numbers_are_distributions(real_explanation):
    expl, cfg = real_explanation
    t_v, joints = cfg.num_video_frames, cfg.num_joints
    assert expl.joint_weights.shape == (t_v, joints)
    np.testing.assert_allclose(expl.joint_weights.sum(axis=1), 1.0, atol=1e-5)
    assert (expl.joint_weights >= 0).all()
    side = cfg.clip.vision.image_size // cfg.clip.vision.patch_size
    assert expl.patch_heat.shape == (t_v, side, side)
    np.testing.assert_allclose(expl.patch_heat.sum(axis=(1, 2)), 1.0, atol=1e-5)
    np.testing.assert_allclose(expl.temporal.sum(), 1.0, atol=1e-5)
    assert len(expl.temporal) == len(expl.temporal_frames)
    np.testing.assert_allclose(expl.probabilities.sum(), 1.0, atol=1e-5)


def test_grouping_map_covers_every_patch(real_explanation):
    expl, cfg = real_explanation
    side = cfg.clip.vision.image_size // cfg.clip.vision.patch_size
    assert expl.grouping.shape == (cfg.num_video_frames, side, side)
    assert expl.grouping.min() >= 0 and expl.grouping.max() <= BACKGROUND  # a joint 0-16 or the background token


def test_phrases_follow_the_label_text(real_explanation):
    expl, _ = real_explanation
    assert expl.phrases == split_phrases(expl.predicted_label)
    assert expl.phrase_attention.shape == (len(expl.phrases), len(expl.temporal))
    np.testing.assert_allclose(expl.phrase_attention.sum(axis=1), 1.0, atol=1e-5)
    assert split_phrases(LABELS[1]) == ["forward takeoff", "1 somersault", "0.5 twist", "pike"]


def test_joints_are_in_crop_pixels_on_a_real_frame(real_explanation):
    expl, _ = real_explanation
    side = expl.frames.shape[1]
    visible = expl.joints[expl.joint_visible]
    assert expl.joint_visible.mean() > 0.5  # one full-body athlete
    assert ((visible >= -0.05 * side) & (visible <= 1.05 * side)).mean() > 0.9


def test_explain_writes_every_figure_for_a_real_video(checkpoints, shared_data, tmp_path, capsys):
    pevl, vl = checkpoints
    video = shared_data / "videos" / "k400_tai_chi.mp4"
    out = tmp_path / "explain"
    code = cli_main(
        ["explain", str(video), "--checkpoint", str(pevl), "--compare", str(vl), "--labels", ";".join(LABELS),
         "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    figures = ["spatial.png", "grouping.png", "temporal.png", "concepts.png", "compare.png", "timeline.png"]
    for name in figures:
        data = (out / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 5000, name
    page = (out / "index.html").read_text()
    assert all(f'src="{name}"' in page for name in figures)
    numbers = json.loads((out / "explain.json").read_text())
    assert numbers["figures"] == figures
    assert numbers["model"]["predicted"] in LABELS
    windows = numbers["timeline"]["windows"]  # the timeline of the whole video is on the page too
    assert windows[0]["start_frame"] == 0 and windows[-1]["end_frame"] == 300
    # Fig. 12 compares both models on the class PeVL predicts.
    assert numbers["comparison"]["predicted"] == numbers["model"]["predicted"]
    assert str(out / "index.html") in capsys.readouterr().out


def test_vl_baseline_alone_has_only_the_figures_it_can_have(checkpoints, shared_data, tmp_path):
    _, vl = checkpoints
    result = explain_video(shared_data / "videos" / "k400_tai_chi.mp4", vl, tmp_path, labels=LABELS)
    assert result.files == ["temporal.png", "timeline.png"]
    assert any("no semantic concept attention" in note for note in result.explanation.notes)
    np.testing.assert_allclose(result.explanation.temporal.sum(), 1.0, atol=1e-5)


def test_frames_without_a_person_still_give_figures(checkpoints, shared_data, tmp_path):
    from pevl.data.synthetic.writer import encode_video
    from pevl.data.video import read_frames

    real = read_frames(shared_data / "videos" / "k400_clean_and_jerk.mp4", np.arange(0, 48, 3))
    frames = np.concatenate([real, np.full_like(real, 16)])  # the second half: empty dark frames
    video = tmp_path / "half_empty.mp4"
    encode_video(video, frames, fps=10)
    result = explain_video(video, checkpoints[0], tmp_path / "out", labels=LABELS)
    expl = result.explanation
    assert "spatial.png" in result.files and "temporal.png" in result.files
    assert not expl.joint_visible[-1].any() and expl.joint_visible[0].any()
    assert any("No person was found" in note for note in expl.notes)
    assert "No person was found" in (tmp_path / "out" / "index.html").read_text()
    assert np.isfinite(expl.joint_weights).all() and np.isfinite(expl.patch_heat).all()


def test_bad_video_fails_with_one_line_and_writes_nothing(checkpoints, tmp_path, capsys):
    fake = tmp_path / "broken.mp4"
    fake.write_bytes(b"\x00" * 100)
    out = tmp_path / "never"
    assert cli_main(["explain", str(fake), "--checkpoint", str(checkpoints[0]), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pevl: error:") and "broken.mp4" in err and "\n" not in err
    assert not out.exists()
