"""Recognition metrics against a hand-computed prediction table, confusion outputs, and the metrics log."""

from __future__ import annotations

import csv
import json
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

from pevl.engine.logger import MetricLogger, read_metrics
from pevl.engine.metrics import (
    average_views,
    confusion_matrix,
    evaluate_scores,
    mean_class_accuracy,
    per_class_accuracy,
    plot_confusion_matrix,
    save_confusion_csv,
    topk_accuracy,
)
from pevl.errors import PevlError

# 7 samples, 4 classes; class 3 ("d") never occurs in the labels but is predicted once.
SCORES = np.array(
    [
        [0.1, 0.5, 0.2, 0.2],  # label 1: rank 0
        [0.4, 0.4, 0.1, 0.1],  # label 1: tied with class 0, which wins the tie -> rank 1
        [0.3, 0.3, 0.2, 0.2],  # label 0: tied with class 1, label wins -> rank 0
        [0.1, 0.2, 0.3, 0.4],  # label 0: rank 3 (predicted class 3)
        [0.2, 0.1, 0.6, 0.1],  # label 2: rank 0
        [0.5, 0.1, 0.3, 0.1],  # label 2: rank 1
        [0.9, 0.05, 0.03, 0.02],  # label 0: rank 0
    ]
)
LABELS = np.array([1, 1, 0, 0, 2, 2, 0])
NAMES = ["a", "b", "c", "d"]


def test_topk_with_ties_and_fewer_than_five_classes():
    acc = topk_accuracy(SCORES, LABELS, ks=(1, 2, 3, 4, 5))
    assert acc[1] == pytest.approx(4 / 7)
    assert acc[2] == pytest.approx(6 / 7)
    assert acc[3] == pytest.approx(6 / 7)
    assert acc[4] == 1.0
    assert acc[5] == 1.0  # k above the number of classes counts everything as correct


def test_top1_agrees_with_argmax():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 3, size=(200, 6)).astype(float)  # many ties
    labels = rng.integers(0, 6, size=200)
    assert topk_accuracy(scores, labels, (1,))[1] == pytest.approx(float((scores.argmax(1) == labels).mean()))


def test_per_class_and_mean_class_accuracy_skip_absent_classes():
    per_class = per_class_accuracy(SCORES, LABELS)
    assert per_class[:3] == pytest.approx([2 / 3, 1 / 2, 1 / 2])
    assert np.isnan(per_class[3])
    assert mean_class_accuracy(SCORES, LABELS) == pytest.approx((2 / 3 + 1 / 2 + 1 / 2) / 3)


def test_confusion_matrix_rows_are_true_classes():
    expected = np.array([[2, 0, 0, 1], [1, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(confusion_matrix(SCORES, LABELS), expected)
    np.testing.assert_array_equal(confusion_matrix(SCORES.argmax(1), LABELS, num_classes=4), expected)


def test_evaluate_scores_report():
    report = evaluate_scores(torch.tensor(SCORES), torch.tensor(LABELS), NAMES)
    assert report["top1"] == pytest.approx(4 / 7)
    assert report["top5"] == 1.0
    assert report["mean_class_accuracy"] == pytest.approx(5 / 9)
    assert report["per_class"] == pytest.approx({"a": 2 / 3, "b": 0.5, "c": 0.5, "d": None})
    assert (report["num_samples"], report["num_classes"]) == (7, 4)
    json.dumps(report, allow_nan=False)  # JSON-ready: no NaN


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="labels must lie"):
        topk_accuracy(SCORES, np.array([0, 1, 2, 3, 4, 0, 0]))
    with pytest.raises(ValueError, match="no samples"):
        topk_accuracy(np.zeros((0, 3)), np.zeros(0, dtype=int))
    with pytest.raises(ValueError, match="class names"):
        evaluate_scores(SCORES, LABELS, ["a", "b"])


def test_views_of_a_video_are_consecutive_rows_and_averaged():
    # 2 videos x 3 views (e.g. 3 clips x 1 crop), 2 classes.
    flat = np.array([[1, 0], [2, 0], [3, 3], [0, 4], [0, 2], [6, 0]], dtype=float)
    expected = np.array([[2, 1], [2, 2]], dtype=float)
    np.testing.assert_allclose(average_views(flat, num_views=3), expected)
    np.testing.assert_allclose(average_views(flat.reshape(2, 3, 2)), expected)
    as_tensor = average_views(torch.tensor(flat), num_views=3)
    assert isinstance(as_tensor, torch.Tensor)
    np.testing.assert_allclose(as_tensor.numpy(), expected)


def test_prob_mode_averages_softmaxed_views():
    views = torch.tensor([[[0.0, 10.0], [10.0, 0.0], [0.0, 0.0]]])
    probs = average_views(views, mode="prob")
    manual = torch.stack([v.softmax(-1) for v in views[0]]).mean(0, keepdim=True)
    torch.testing.assert_close(probs, manual)
    with pytest.raises(ValueError, match="do not split"):
        average_views(np.zeros((5, 2)), num_views=2)
    with pytest.raises(ValueError, match="num_views"):
        average_views(np.zeros((4, 2)))


def test_confusion_csv(tmp_path):
    cm = confusion_matrix(SCORES, LABELS)
    path = save_confusion_csv(cm, ["a", "b, with comma", "c", "d"], tmp_path / "out" / "confusion.csv")
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["true \\ predicted", "a", "b, with comma", "c", "d"]
    assert rows[1] == ["a", "2", "0", "0", "1"]
    assert rows[4] == ["d", "0", "0", "0", "0"]


@pytest.mark.slow
@pytest.mark.parametrize("num_classes", [4, 400])
def test_confusion_png_is_readable_for_small_and_large_label_sets(tmp_path, num_classes):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, num_classes, size=num_classes * 3)
    preds = np.where(rng.random(len(labels)) < 0.7, labels, rng.integers(0, num_classes, size=len(labels)))
    cm = confusion_matrix(preds, labels, num_classes=num_classes)
    names = [f"class number {i} with a rather long descriptive name" for i in range(num_classes)]
    path = plot_confusion_matrix(cm, names, tmp_path / "confusion.png", title="val")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        width, height = image.size
    assert height >= 8 * num_classes and width >= 8 * num_classes  # at least 8 pixels per class row/column
    assert max(height, width) < 8000
    assert list(tmp_path.iterdir()) == [path]  # no temporary files left behind


def test_metric_logger_appends_flushed_json_lines(tmp_path):
    logger = MetricLogger(tmp_path)
    logger.log(1, {"loss": torch.tensor(0.5), "lr": np.float32(0.25), "phase": "train"})
    assert read_metrics(tmp_path)[0]["loss"] == 0.5  # readable before close: flushed at once
    logger.log(2, {"loss": 0.25})
    logger.close()
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2]
    assert records[0]["lr"] == 0.25 and records[0]["phase"] == "train"
    assert isinstance(records[0]["time"], float)


def test_resumed_logger_drops_lines_after_the_checkpoint_and_half_written_lines(tmp_path):
    with MetricLogger(tmp_path) as logger:
        for step in range(1, 6):
            logger.log(step, {"loss": 1.0 / step})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "lo')  # killed while writing
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4, 5]
    with MetricLogger(tmp_path, purge_after=3) as logger:
        logger.log(4, {"loss": 0.0})
    assert [(r["step"], r["loss"]) for r in read_metrics(tmp_path)][-2:] == [(3, 1 / 3), (4, 0.0)]


def test_disabled_logger_writes_nothing(tmp_path):
    MetricLogger(tmp_path, enabled=False).log(1, {"loss": 1.0})
    assert not (tmp_path / "metrics.jsonl").exists()


def test_corrupt_metrics_line_is_reported(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(PevlError, match=r"metrics\.jsonl: line 2 is not valid JSON"):
        read_metrics(tmp_path)
    with pytest.raises(PevlError, match="metrics file not found"):
        read_metrics(tmp_path / "missing.jsonl")


def test_tensorboard_requested_but_not_installed(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as when not installed
    with pytest.raises(PevlError, match="'tensorboard' package is not installed"):
        MetricLogger(tmp_path, tensorboard=True)


def test_tensorboard_receives_numeric_metrics(tmp_path, monkeypatch):
    calls = []

    class FakeWriter:
        def __init__(self, log_dir, purge_step=None):
            calls.append(("init", log_dir, purge_step))

        def add_scalar(self, tag, value, global_step):
            calls.append((tag, value, global_step))

        def flush(self):
            pass

        def close(self):
            calls.append(("close",))

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = FakeWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    with MetricLogger(tmp_path, tensorboard=True, purge_after=9) as logger:
        logger.log(10, {"loss": 0.5, "phase": "train", "top1": 1})
    assert calls == [
        ("init", str(tmp_path / "tensorboard"), 10),
        ("loss", 0.5, 10),
        ("top1", 1, 10),
        ("close",),
    ]
