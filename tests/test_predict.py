"""`pevl predict` and `pevl demo`: a video in, the top-k actions out; the offline demo writes its report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pevl.apps.demo import DemoSettings, run_demo
from pevl.apps.inference import parse_labels, predict_video
from pevl.cli import main as cli_main
from pevl.errors import PevlError

# Training a checkpoint for the module and the demo take seconds; test_label_argument_forms alone is fast.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def trained(tiny_checkpoint: tuple[Path, Path]) -> tuple[Path, Path]:
    return tiny_checkpoint


def test_predict_prints_top_k_json_for_a_real_video(trained, shared_data, capsys):
    checkpoint, _ = trained
    video = shared_data / "videos" / "k400_clean_and_jerk.mp4"
    assert cli_main(["predict", str(video), "--checkpoint", str(checkpoint), "--top-k", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["top_k"]) == 2
    probabilities = [item["probability"] for item in result["top_k"]]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1.0 + 1e-6
    assert result["pose_source"] == "extracted"
    assert result["person_detected_fraction"] >= 0.9  # one full-body athlete
    assert result["pose_frames"] == sorted(result["pose_frames"]) and max(result["pose_frames"]) < 300


def test_new_label_texts_at_predict_time(trained, shared_data):
    checkpoint, _ = trained
    video = shared_data / "videos" / "k400_tai_chi.mp4"
    labels = ["tai chi", "clean and jerk", "arm wrestling", "archery"]
    result = predict_video(video, checkpoint, labels=labels, top_k=4)
    assert sorted(item["label"] for item in result["top_k"]) == sorted(labels)
    assert sum(item["probability"] for item in result["top_k"]) == pytest.approx(1.0, abs=1e-4)


def test_poses_can_come_from_a_skeleton_file(trained):
    checkpoint, root = trained
    video = next((root / "videos").rglob("*.mp4"))
    result = predict_video(video, checkpoint, pose_file=root / "poses.pkl", top_k=1)
    assert result["pose_source"] == "file" and result["person_detected_fraction"] == 1.0


def test_label_argument_forms(tmp_path):
    assert parse_labels("a;b; c ") == ["a", "b", "c"]
    label_file = tmp_path / "labels.txt"
    label_file.write_text("jump\n\nrun\n")
    assert parse_labels(str(label_file)) == ["jump", "run"]
    with pytest.raises(PevlError):
        parse_labels("only one")


def test_bad_inputs_fail_with_one_line(trained, tmp_path, capsys):
    checkpoint, _ = trained
    fake = tmp_path / "clip.mp4"
    fake.write_text("not a video")
    assert cli_main(["predict", str(fake), "--checkpoint", str(checkpoint)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pevl: error:") and "clip.mp4" in err and "\n" not in err
    assert cli_main(["predict", str(fake), "--checkpoint", str(tmp_path / "nothing")]) == 2
    assert "nothing" in capsys.readouterr().err


def test_demo_writes_its_report_offline(tmp_path):
    settings = DemoSettings(num_classes=2, per_class=4, epochs=1, batch_size=4, pose_frames=8, num_predictions=2)
    result = run_demo(tmp_path / "demo", settings, progress=False)
    report = result.report.read_text()
    assert "without pretrained CLIP weights" in report and "pevl download-weights" in report
    assert set(result.metrics) == {"PeVL", "VL baseline"}
    assert (tmp_path / "demo" / "report.png").stat().st_size > 10_000
    assert (tmp_path / "demo" / "eval" / "pevl_tiny" / "confusion.png").is_file()
    assert len(result.predictions) == 2
    # A rerun reuses the finished runs instead of training again.
    again = run_demo(tmp_path / "demo", settings, progress=False)
    assert again.metrics["PeVL"]["top1"] == result.metrics["PeVL"]["top1"]
