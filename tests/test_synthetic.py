"""The synthetic fine-grained dive generator: classes, exact poses, determinism, files, CLI."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from pevl.cli import main
from pevl.data.pose.pyskl import load_pyskl
from pevl.data.synthetic import class_factors, generate_clip, make_synthetic
from pevl.data.synthetic.motion import MAX_CLASSES, ClipStyle, Factors, simulate
from pevl.data.synthetic.writer import clip_rng
from pevl.errors import PevlError

FACTOR_NAMES = ("takeoff", "somersaults", "twists", "position")


def _differences(a: Factors, b: Factors) -> int:
    return sum(getattr(a, n) != getattr(b, n) for n in FACTOR_NAMES)


def test_consecutive_classes_differ_in_exactly_one_factor():
    classes = class_factors(24)
    assert len(set(classes)) == 24
    for previous, current in zip(classes, classes[1:], strict=False):
        assert _differences(previous, current) == 1
    first8 = class_factors(8)
    assert first8 == classes[:8]  # more classes keep the first ones
    for name in FACTOR_NAMES:  # every factor varies among the default classes
        assert len({getattr(c, name) for c in first8}) > 1
    assert len({c.text for c in class_factors(MAX_CLASSES)}) == MAX_CLASSES


def test_label_text_reads_like_diving48():
    assert Factors("forward", 1.5, 0.5, "piked").text == "forward takeoff, 1.5 somersaults, 0.5 twist, piked"
    assert Factors("back", 1.0, 0.0, "tucked").text == "back takeoff, 1 somersault, no twist, tucked"


def test_classes_differing_in_twist_look_the_same_until_the_twist_starts():
    style = ClipStyle.sample(np.random.default_rng(3))
    a = simulate(Factors("back", 1.5, 0.0, "piked"), style, 32)
    b = simulate(Factors("back", 1.5, 1.0, "piked"), style, 32)
    np.testing.assert_allclose(a.joints[:8], b.joints[:8], atol=1e-9)  # stand-up and take-off are identical
    assert np.abs(a.joints[12:24] - b.joints[12:24]).max() > 0.05  # mid-flight the twist shows


def test_somersault_count_decides_head_up_or_down_at_the_entry():
    style = ClipStyle.sample(np.random.default_rng(4))
    for somersaults, head_down in ((1.0, False), (1.5, True), (2.0, False)):
        joints = simulate(Factors("forward", somersaults, 0.0, "tucked"), style, 32).joints
        nose_y, ankle_y = joints[-1, 0, 1], joints[-1, 15:17, 1].mean()  # world y points up
        assert (nose_y < ankle_y) == head_down


def test_every_joint_lies_on_the_rendered_figure():
    for label, factors in enumerate(class_factors(8)):
        clip = generate_clip(factors, clip_rng(0, label, 0), frames=24, size=64)
        assert clip.frames.shape == (24, 64, 64, 3) and clip.frames.dtype == np.uint8
        assert clip.keypoint.shape == (24, 17, 2) and clip.score.shape == (24, 17)
        assert clip.score.mean() > 0.95
        t, j = np.nonzero(clip.score > 0)
        cols = np.rint(clip.keypoint[t, j, 0]).astype(int)
        rows = np.rint(clip.keypoint[t, j, 1]).astype(int)
        assert (clip.masks[t, rows, cols] > 0.5).all()
        # The figure is small compared with the frame: a joint pixel is not just "somewhere on a big blob".
        assert clip.masks.mean() < 0.12


def test_same_seed_same_clip_other_seed_other_clip():
    factors = class_factors(2)[1]
    a = generate_clip(factors, clip_rng(5, 1, 2), frames=16)
    b = generate_clip(factors, clip_rng(5, 1, 2), frames=16)
    c = generate_clip(factors, clip_rng(6, 1, 2), frames=16)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.keypoint, b.keypoint)
    assert not np.array_equal(a.keypoint, c.keypoint)


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthetic") / "set"
    make_synthetic(out, num_classes=3, per_class=4, seed=1, frames=16, size=48, progress=False)
    return out


def test_output_files_and_pickle_match_the_rendering(small_set):
    lines = {name: (small_set / name).read_text().splitlines() for name in ("classes.txt", "train.txt", "val.txt")}
    assert lines["classes.txt"] == [f.text for f in class_factors(3)]
    assert (small_set / "coarse.txt").read_text().split("\n")[:3] == ["diving"] * 3
    assert len(lines["train.txt"]) == 9 and len(lines["val.txt"]) == 3
    assert lines["val.txt"][0] == "videos/0/000_0003.mp4 0"
    data = load_pyskl(small_set / "poses.pkl")
    assert data["split"]["val"] == ["000_0003", "001_0003", "002_0003"]
    ann = next(a for a in data["annotations"] if a["frame_dir"] == "002_0001")
    assert ann["label"] == 2 and ann["img_shape"] == (48, 48) and ann["keypoint"].shape == (1, 16, 17, 2)
    clip = generate_clip(class_factors(3)[2], clip_rng(1, 2, 1), frames=16, size=48)
    np.testing.assert_array_equal(ann["keypoint"][0], clip.keypoint)
    np.testing.assert_array_equal(ann["keypoint_score"][0], clip.score)


def test_video_shows_the_rendered_frames(small_set):
    from pevl.data.video import probe_video, read_frames

    path = small_set / "videos" / "2" / "002_0001.mp4"
    info = probe_video(path)
    assert (info.num_frames, info.width, info.height) == (16, 48, 48)
    decoded = read_frames(path, list(range(16))).astype(np.float64)
    rendered = generate_clip(class_factors(3)[2], clip_rng(1, 2, 1), frames=16, size=48).frames
    psnr = 10 * np.log10(255.0**2 / np.mean((decoded - rendered) ** 2))
    assert psnr > 30


def test_generation_is_byte_identical_and_resumes(small_set, tmp_path):
    again = tmp_path / "again"
    make_synthetic(again, num_classes=3, per_class=4, seed=1, frames=16, size=48, progress=False)
    reference = _digests(small_set)
    assert _digests(again) == reference
    # An interrupted run: a video and the pickle never got written. Rerunning restores the same files.
    (again / "videos" / "1" / "001_0002.mp4").unlink()
    (again / "poses.pkl").unlink()
    make_synthetic(again, num_classes=3, per_class=4, seed=1, frames=16, size=48, progress=False)
    assert _digests(again) == reference


def test_other_settings_in_the_same_folder_are_refused(small_set, tmp_path):
    with pytest.raises(PevlError, match="other settings"):
        make_synthetic(small_set, num_classes=3, per_class=4, seed=2, frames=16, size=48, progress=False)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(PevlError, match="not empty"):
        make_synthetic(tmp_path, num_classes=2, per_class=2, frames=8, size=32, progress=False)
    with pytest.raises(PevlError, match="--size"):
        make_synthetic(tmp_path / "x", size=50, progress=False)


def test_cli_writes_a_set_and_reports_bad_values(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["make-synthetic", str(out), "--classes", "2", "--per-class", "2", "--frames", "8", "--size", "32"]
    assert main([*args, "--no-progress"]) == 0
    assert "2 classes, 2 train / 2 val clips" in capsys.readouterr().out
    assert len(list((out / "videos").rglob("*.mp4"))) == 4
    assert main(["make-synthetic", str(tmp_path / "bad"), "--classes", "1"]) == 2
    assert "pevl: error: --classes" in capsys.readouterr().err


def test_style_variation_changes_appearance_not_class():
    factors = Factors("reverse", 2.0, 0.5, "straight")
    clips = [generate_clip(factors, clip_rng(0, 0, k), frames=8) for k in range(4)]
    backgrounds = [c.frames[0][c.masks[0] < 0.01].mean(axis=0) for c in clips]
    assert np.std(backgrounds, axis=0).max() > 10  # colours differ from clip to clip
    starts = [c.keypoint[0, 5:].mean(axis=0) for c in clips]
    assert np.std(starts, axis=0).max() > 1  # so does where the diver stands
