"""Timelines of long videos: windows, segments, the annotated video, live input from stdin, bad input."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from pevl.apps.annotate import confidence_colour
from pevl.apps.inference import predict_video
from pevl.apps.stream import timeline_video
from pevl.apps.timeline import merge_segments, plan_windows, smooth_probabilities, window_sizes, window_starts
from pevl.cli import main as cli_main
from pevl.data.video import iter_frames, probe_video, read_frames
from pevl.errors import PevlError

LABELS = "clean and jerk;tai chi;arm wrestling"


@pytest.fixture(scope="session")
def trained(tiny_checkpoint: tuple[Path, Path]) -> tuple[Path, Path]:
    return tiny_checkpoint


def _write_video(path: Path, frames: list[np.ndarray], rate: Fraction, codec: str = "libx264", fmt: str | None = None):
    import av

    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = 1 / rate
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            frame.time_base = stream.codec_context.time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


@pytest.fixture(scope="module")
def two_actions(shared_data, tmp_path_factory) -> Path:
    """20 s of video: a real clean-and-jerk clip followed by a real tai-chi clip (both 340x256, 29.97 fps)."""
    videos = shared_data / "videos"
    frames = list(iter_frames(videos / "k400_clean_and_jerk.mp4")) + list(iter_frames(videos / "k400_tai_chi.mp4"))
    path = tmp_path_factory.mktemp("long") / "two_actions.mp4"
    _write_video(path, frames, Fraction(30000, 1001))
    return path


@pytest.fixture(scope="module")
def annotated(trained, two_actions, tmp_path_factory) -> tuple[Path, dict, Path, Path]:
    """``pevl predict --window 2 --stride 1`` on the long video with JSON, CSV and annotated video outputs."""
    out = tmp_path_factory.mktemp("annotated")
    args = ["predict", str(two_actions), "-k", str(trained[0]), "--labels", LABELS, "--window", "2", "--stride", "1",
            "--top-k", "3", "--out-json", str(out / "t.json"), "--out-csv", str(out / "t.csv"),
            "--out-video", str(out / "t.mp4")]  # fmt: skip
    assert cli_main(args) == 0
    return out, json.loads((out / "t.json").read_text()), out / "t.csv", out / "t.mp4"


# ---- windows and segments (pure) ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_windows_cover_the_video_without_gaps_and_are_clamped(seed):
    rng = np.random.default_rng(seed)
    length = int(rng.integers(1, 90))
    stride = int(rng.integers(1, length + 1))
    frames = int(rng.integers(1, 400))
    spans = window_starts(frames, length, stride)
    assert spans[0][0] == 0 and spans[-1][1] == frames  # first and last clamped to the video
    assert all(end - start == min(length, frames) for start, end in spans)
    for (s0, e0), (s1, _) in zip(spans, spans[1:], strict=False):
        assert 0 < s1 - s0 <= stride  # no gap: the next window starts inside the previous one
        assert s1 <= e0
    windows = plan_windows(frames, length, stride, 8, 4)
    for w in windows:
        assert w.start <= w.pose_frames.min() and w.pose_frames.max() < w.end
        assert set(w.video_frames) <= set(w.pose_frames)


def test_window_sizes_reject_gaps_and_nonsense():
    assert window_sizes(30.0, 2.0, None) == (60, 30)
    assert window_sizes(29.97, 1.0, 1.0) == (30, 30)
    with pytest.raises(PevlError, match="stride"):
        window_sizes(30.0, 1.0, 2.0)
    with pytest.raises(PevlError):
        window_sizes(30.0, 0.0, None)


def test_segments_merge_runs_and_partition_time():
    labels = ["a", "b", "c"]
    probs = np.array([[0.8, 0.1, 0.1], [0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.4, 0.35, 0.25]])
    bounds = np.array([0.0, 1.5, 2.5, 3.5, 4.5, 6.0])
    segments = merge_segments(probs, bounds, labels)
    assert [(s.label, s.start, s.end, s.windows) for s in segments] == [
        ("a", 0.0, 2.5, (0, 1)), ("b", 2.5, 4.5, (2, 3)), ("a", 4.5, 6.0, (4, 4))
    ]  # fmt: skip
    assert segments[0].score == pytest.approx(0.75)
    # A minimum score leaves the unsure last window out (a gap), and never merges across it.
    assert [s.label for s in merge_segments(probs, bounds, labels, min_score=0.5)] == ["a", "b"]
    probs2 = np.array([[0.9, 0.1, 0], [0.3, 0.7, 0], [0.9, 0.1, 0]])
    split = merge_segments(probs2, np.arange(4.0), labels, min_score=0.8)
    assert [(s.label, s.windows) for s in split] == [("a", (0, 0)), ("a", (2, 2))]


def test_smoothing_removes_a_one_window_blip():
    probs = np.array([[0.9, 0.1]] * 3 + [[0.4, 0.6]] + [[0.9, 0.1]] * 3)
    bounds = np.arange(8.0)
    assert len(merge_segments(probs, bounds, ["a", "b"])) == 3
    smoothed = merge_segments(probs, bounds, ["a", "b"], smooth=3)
    assert [(s.label, s.start, s.end) for s in smoothed] == [("a", 0.0, 7.0)]
    assert np.allclose(smooth_probabilities(probs, 5).sum(axis=1), 1.0)


# ---- real videos -------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_timeline_json_and_csv_cover_the_long_video(annotated, two_actions):
    _, timeline, csv_path, _ = annotated
    info = probe_video(two_actions)
    assert timeline["num_frames"] == info.num_frames == 600
    windows = timeline["windows"]
    assert windows[0]["start_frame"] == 0 and windows[-1]["end_frame"] == 600  # clamped at both ends
    length = round(2 * info.fps)
    assert all(w["end_frame"] - w["start_frame"] == length for w in windows)
    starts = [w["start_frame"] for w in windows]
    assert all(0 < b - a <= round(info.fps) for a, b in zip(starts, starts[1:], strict=False))
    segments = timeline["segments"]
    assert segments[0]["start"] == 0 and segments[-1]["end"] == pytest.approx(timeline["duration"], abs=1e-3)
    assert all(a["end"] == pytest.approx(b["start"]) for a, b in zip(segments, segments[1:], strict=False))
    assert all(a["label"] != b["label"] for a, b in zip(segments, segments[1:], strict=False))  # runs are merged
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == 3 * len(windows)
    assert {r["label"] for r in rows} <= set(LABELS.split(";"))
    first = [float(r["probability"]) for r in rows[:3]]
    assert first == sorted(first, reverse=True) and sum(first) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.slow
def test_annotated_video_keeps_frames_size_rate_and_shows_the_skeleton(annotated, two_actions):
    out, timeline, _, video = annotated
    got, want = probe_video(video), probe_video(two_actions)
    assert (got.num_frames, got.width, got.height) == (want.num_frames, want.width, want.height)
    assert got.fps == pytest.approx(want.fps, rel=1e-3)
    # The skeleton is drawn on the person: below the label box and above the timeline bar, the pixels that changed
    # lie in the box of the joints BlazePose finds on the input frame, and some have the confident-joint colour.
    from pevl.data.pose.base import create_extractor

    frame_no = 450  # tai chi, one full-body person
    original, drawn = read_frames(two_actions, [frame_no])[0], read_frames(video, [frame_no])[0]
    with create_extractor("mediapipe") as extractor:
        keypoint, score = extractor.detect(original)
    joints = keypoint[0][score[0] > 0.3]
    (x0, y0), (x1, y1) = joints.min(axis=0) - 10, joints.max(axis=0) + 10
    changed = np.abs(original.astype(int) - drawn.astype(int)).sum(axis=-1) > 60
    changed[:70] = changed[-10:] = False
    ys, xs = np.nonzero(changed)
    assert len(ys) > 100
    inside = (xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)
    assert inside.mean() > 0.9
    confident = confidence_colour(np.array(1.0)).astype(int)
    assert (np.abs(drawn[changed].astype(int) - confident).sum(axis=-1) < 120).sum() > 10


@pytest.mark.slow
def test_portrait_video_stays_portrait(trained, shared_data, tmp_path):
    video = shared_data / "videos" / "pose2sim_lunge_portrait_60fps.mp4"
    out = tmp_path / "portrait.mp4"
    timeline = timeline_video(video, trained[0], labels=LABELS.split(";"), window=1.0, keep_poses=True)
    from pevl.apps.annotate import annotate_video

    annotate_video(video, timeline, out)
    got, want = probe_video(out), probe_video(video)
    assert (got.width, got.height, got.num_frames) == (want.width, want.height, want.num_frames) == (1080, 1920, 100)
    assert got.fps == pytest.approx(60.0, rel=1e-3) and got.rotation == 0  # upright pixels, no rotation tag needed
    assert (timeline.keypoint_score > 0).any(axis=-1).mean() > 0.9  # the man is found in the upright frames


@pytest.mark.slow
def test_one_window_over_the_whole_clip_equals_predict(trained):
    checkpoint, root = trained
    video = next((root / "videos").rglob("*.mp4"))
    labels = ["a dive", "a jump", "a turn"]
    expected = predict_video(video, checkpoint, labels=labels, top_k=3, pose_file=root / "poses.pkl", amp="off")
    timeline = timeline_video(video, checkpoint, labels=labels, window=100.0, pose_file=root / "poses.pkl", amp="off")
    assert len(timeline.windows) == 1 and timeline.windows[0].end == probe_video(video).num_frames
    for item in expected["top_k"]:
        assert timeline.probs[0, labels.index(item["label"])] == pytest.approx(item["probability"], abs=1e-5)


@pytest.mark.slow
def test_truncated_or_broken_input_gives_one_line_and_no_output(trained, shared_data, tmp_path, capsys):
    data = (shared_data / "videos" / "k400_clean_and_jerk.mp4").read_bytes()
    broken = tmp_path / "cut.mp4"
    broken.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    out.mkdir()
    args = ["--labels", LABELS, "--timeline", "--out-video", str(out / "a.mp4"), "--out-json", str(out / "a.json")]
    assert cli_main(["predict", str(broken), "-k", str(trained[0]), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pevl: error:") and "cut.mp4" in err and "\n" not in err
    assert list(out.iterdir()) == []  # nothing written, no temporary file left
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00" * 4096)
    assert cli_main(["predict", str(garbage), "-k", str(trained[0]), *args]) == 2
    assert "garbage.mp4" in capsys.readouterr().err and list(out.iterdir()) == []


@pytest.mark.slow
def test_interrupt_while_writing_leaves_no_partial_video(trained, shared_data, tmp_path, monkeypatch):
    from pevl.apps import annotate

    video = shared_data / "videos" / "k400_tai_chi.mp4"
    timeline = timeline_video(video, trained[0], labels=LABELS.split(";"), window=2.0)
    calls = {"n": 0}
    original = annotate.draw_skeleton

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 50:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(annotate, "draw_skeleton", interrupted)
    timeline.keypoint = np.zeros((timeline.num_frames, 17, 2), np.float32)
    timeline.keypoint_score = np.zeros((timeline.num_frames, 17), np.float32)
    with pytest.raises(KeyboardInterrupt):
        annotate.annotate_video(video, timeline, tmp_path / "x.mp4")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_live_stream_on_stdin_at_real_time_pace(trained, shared_data, tmp_path):
    """A real clip sent as MPEG-TS through a pipe, paced like a camera; windows print as JSON lines."""
    # 3.3 s: the last window is clamped.
    frames = list(iter_frames(shared_data / "videos" / "k400_tai_chi.mp4"))[:100]
    stream = tmp_path / "clip.ts"
    _write_video(stream, frames, Fraction(30000, 1001), fmt="mpegts")
    data = stream.read_bytes()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "pevl", "predict", "-", "-k", str(trained[0]), "--labels", LABELS,
               "--window", "1", "--stride", "0.5", "--json", "--top-k", "2"]  # fmt: skip
    errors = tmp_path / "stderr.txt"
    with errors.open("wb") as err:
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=env)

    def feed() -> None:
        chunks = 30
        for i in range(chunks):  # 3.3 s of video over 3.3 s
            process.stdin.write(data[i * len(data) // chunks : (i + 1) * len(data) // chunks])
            process.stdin.flush()
            time.sleep(3.3 / chunks)
        process.stdin.close()

    feeder = threading.Thread(target=feed)
    feeder.start()
    stdout = process.stdout.read()
    feeder.join()
    assert process.wait(timeout=60) == 0, errors.read_text()
    lines = [json.loads(line) for line in stdout.decode().splitlines()]
    windows, summary = lines[:-1], lines[-1]
    assert "segments" in summary and summary["segments"]
    # The live windows are those of the same 100 frames read from a file: every 15 frames, the last one clamped.
    assert [(w["start_frame"], w["end_frame"]) for w in windows] == window_starts(100, 30, 15)
    assert all(len(w["top_k"]) == 2 for w in windows)


@pytest.mark.slow
def test_each_frame_is_posed_once_and_texts_encoded_once(trained, shared_data, monkeypatch):
    """Overlapping windows share per-frame work: pose once per frame read, texts once, windows in batches."""
    from pevl.apps import stream
    from pevl.engine.builder import load_trained_model

    detected: list[int] = []

    class CountingExtractor:
        def __init__(self) -> None:
            self.calls = 0

        def detect(self, frame):
            detected.append(self.calls)
            self.calls += 1
            keypoint = np.tile(np.array([[170.0, 128.0]], np.float32), (17, 1))[None]
            return keypoint, np.full((1, 17), 0.9, np.float32)

        def close(self) -> None:
            pass

    monkeypatch.setattr(stream, "create_extractor", lambda backend: CountingExtractor())
    model = load_trained_model(trained[0]).model
    encoded, forwards = [], []
    monkeypatch.setattr(
        model, "encode_class_texts", lambda texts, f=model.encode_class_texts: encoded.append(1) or f(texts)
    )
    original_forward = model.forward
    monkeypatch.setattr(model, "forward", lambda **kw: forwards.append(len(kw["pose"])) or original_forward(**kw))
    video = shared_data / "videos" / "k400_clean_and_jerk.mp4"
    timeline = stream.run_timeline(video, model, LABELS.split(";"), window=2.0, stride=0.5, batch_size=4)
    windows = plan_windows(300, 60, 15, model.config.num_pose_frames, model.config.num_video_frames)
    assert [(w.start, w.end) for w in timeline.windows] == [(w.start, w.end) for w in windows]
    needed = {int(i) for w in windows for i in w.pose_frames}
    assert len(detected) == len(needed) < 300  # once per frame a window reads; 17 windows overlap 4-fold
    assert len(encoded) == 1
    assert forwards == [4] * (len(windows) // 4) + ([len(windows) % 4] if len(windows) % 4 else [])


def test_a_live_source_that_falls_behind_drops_old_frames_instead_of_queueing(shared_data):
    from pevl.apps.sources import FrameSource

    video = shared_data / "videos" / "k400_clean_and_jerk.mp4"
    seen = []
    with FrameSource(video, live=True, buffer_seconds=0.2) as source:  # a buffer of 6 frames
        for item in source:
            seen.append(item.index)
            if len(seen) <= 20:
                time.sleep(0.05)  # a slow consumer while the decoder runs ahead
    assert seen == sorted(set(seen)) and seen[0] == 0  # in order, never repeated
    assert source.dropped > 0 and len(seen) + source.dropped == 300  # every frame either seen or counted as dropped
