"""`pevl export`: ONNX graphs with baked class texts, checked against PyTorch with onnxruntime on real clips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pevl.cli import main as cli_main
from train_helpers import train_tiny

pytest.importorskip("onnx", reason="onnx is not installed (pip install 'pevl[export]')")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'pevl[export]')")


def _train(root: Path, out: Path, preset: str) -> Path:
    return train_tiny(root, out, preset, video_frames=2)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Tiny PeVL (video + pose) and pose-only checkpoints trained for a few steps on synthetic data."""
    from pevl.data.synthetic import make_synthetic

    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic(root, num_classes=3, per_class=4, frames=16, size=32, val_fraction=0.25, progress=False)
    return {preset: _train(root, tmp_path_factory.mktemp(preset), preset) for preset in ("pevl_tiny", "pt_tiny")}


@pytest.mark.parametrize("preset", ["pevl_tiny", "pt_tiny"])
def test_onnx_export_matches_pytorch_on_real_clips(checkpoints, preset, shared_data, tmp_path, capsys):
    out = tmp_path / f"{preset}.onnx"
    videos = [shared_data / "videos" / name for name in ("k400_clean_and_jerk.mp4", "k400_tai_chi.mp4")]
    labels = "clean and jerk;tai chi;archery;arm wrestling"
    args = ["export", str(checkpoints[preset]), "--format", "onnx", "--out", str(out), "--labels", labels,
            "--check", *map(str, videos)]  # fmt: skip
    assert cli_main(args) == 0
    report = capsys.readouterr().out
    assert "max |diff|" in report and "2 real clips" in report
    meta = json.loads((tmp_path / f"{preset}.onnx.json").read_text())
    assert meta["labels"] == labels.split(";")
    assert list(meta["inputs"]) == (["video", "pose"] if preset == "pevl_tiny" else ["pose"])

    import onnxruntime

    from pevl.apps.export import check_onnx
    from pevl.apps.inference import prepare_clip
    from pevl.engine.builder import load_trained_model

    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(meta["inputs"])
    assert all(i.shape[0] == "batch" for i in session.get_inputs())  # dynamic batch size
    # The same clips in batches of 1 and 2 give the same scores, and the scores are distributions.
    loaded = load_trained_model(checkpoints[preset])
    clips = [prepare_clip(v, loaded.model.config) for v in videos]
    feeds = {name: np.concatenate([getattr(c, name).numpy() for c in clips]) for name in meta["inputs"]}
    logits, probs = session.run(None, feeds)
    assert probs.shape == (2, 4) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    single = session.run(None, {name: value[1:] for name, value in feeds.items()})[1]
    assert np.abs(single - probs[1:]).max() < 1e-5
    # The graph scores a clip as `pevl predict` does in fp32 (the model's own path, texts encoded there).
    from pevl.apps.inference import run_model

    for row, clip in enumerate(clips):
        expected, _ = run_model(loaded.model, clip, labels.split(";"), None, amp="off")
        assert np.abs(probs[row] - expected).max() < 1e-4
    # Against PyTorch in full precision.
    from pevl.apps.export import ScoringGraph

    model = loaded.model.float().eval()
    import torch

    with torch.no_grad():
        text = model.encode_class_texts(model.build_class_texts(labels.split(";")))
    worst, checked = check_onnx(out, ScoringGraph(model, text).eval(), videos)
    assert len(checked) == 2 and worst["probabilities"] < 1e-4 and worst["logits"] < 1e-3


def test_export_rejects_bad_input_without_leaving_files(checkpoints, tmp_path, capsys):
    assert cli_main(["export", str(checkpoints["pevl_tiny"]), "--out", str(tmp_path / "m.txt")]) == 2
    assert "m.txt" in capsys.readouterr().err
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 1000)
    args = ["export", str(checkpoints["pevl_tiny"]), "--out", str(tmp_path / "m.onnx"), "--check", str(broken)]
    assert cli_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "broken.mp4" in err and "\n" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.mp4"]  # no model left behind a failed check
