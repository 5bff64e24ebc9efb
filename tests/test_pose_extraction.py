"""Pose extraction: the extractor interface, tracking, the cache, `extract-poses`, and BlazePose on real video."""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path

import av
import numpy as np
import pytest

import pevl.data.pose.base as pose_base
from pevl.cli import main as cli_main
from pevl.data.pose.base import PoseExtractor, PoseSequence, cache_tag, create_extractor, extract_video
from pevl.data.pose.cache import PoseCache, default_cache_dir
from pevl.data.pose.extract import collect_videos, extract_poses, read_video_list
from pevl.data.pose.pyskl import load_pyskl
from pevl.data.pose.tracking import select_main_tracks
from pevl.errors import PevlError

HAS_MEDIAPIPE = importlib.util.find_spec("mediapipe") is not None
needs_mediapipe = pytest.mark.skipif(not HAS_MEDIAPIPE, reason="mediapipe is not installed (pevl[pose])")


def write_video(path: Path, levels: list[int], size: tuple[int, int] = (64, 48)) -> Path:
    """A tiny h264 video whose frame i is a uniform grey of ``levels[i]``."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.options = {"crf": "10"}
        for level in levels:
            image = np.full((size[1], size[0], 3), level, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


class GreyLevelExtractor(PoseExtractor):
    """A stand-in backend: one person whose joints sit at (grey level, grey level); nobody on black frames."""

    name = "fake"
    frames_seen = 0

    def __init__(self) -> None:
        self.resets = 0

    def reset(self) -> None:
        self.resets += 1

    def detect(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        GreyLevelExtractor.frames_seen += 1
        level = float(frame.mean())
        if level < 5:
            return np.zeros((0, 17, 2), np.float32), np.zeros((0, 17), np.float32)
        score = np.full((1, 17), 0.5, np.float32)
        score[0, 3] = np.nan  # a backend glitch must not leak NaN
        return np.full((1, 17, 2), level, np.float32), score


@pytest.fixture
def fake_backend(monkeypatch):
    monkeypatch.setitem(pose_base.BACKENDS, "fake", f"{__name__}:GreyLevelExtractor")
    GreyLevelExtractor.frames_seen = 0
    return "fake"


# --- the result and the interface ----------------------------------------------------------------------------


def test_annotation_has_exactly_the_pyskl_keys_and_types():
    seq = PoseSequence(np.ones((1, 5, 17, 2)), np.full((1, 5, 17), 0.5), img_shape=(480, 640), fps=30)
    ann = seq.to_annotation("class_a/video_1", label=3)
    assert set(ann) == {
        "frame_dir",
        "total_frames",
        "img_shape",
        "original_shape",
        "label",
        "keypoint",
        "keypoint_score",
    }
    assert ann["frame_dir"] == "class_a/video_1" and ann["total_frames"] == 5 and ann["label"] == 3
    assert ann["img_shape"] == ann["original_shape"] == (480, 640)
    assert ann["keypoint"].dtype == np.float32 and ann["keypoint"].shape == (1, 5, 17, 2)
    assert ann["keypoint_score"].dtype == np.float32 and ann["keypoint_score"].shape == (1, 5, 17)


def test_extract_resets_tracking_per_video_and_marks_empty_frames_with_score_zero():
    extractor = GreyLevelExtractor()
    frames = [np.full((20, 30, 3), v, np.uint8) for v in (100, 0, 150)]
    seq = extractor.extract(frames, fps=25.0)
    assert extractor.resets == 1
    assert seq.keypoint.shape == (1, 3, 17, 2) and seq.img_shape == (20, 30) and seq.fps == 25.0
    assert np.isfinite(seq.keypoint).all() and np.isfinite(seq.keypoint_score).all()
    assert seq.detected().tolist() == [True, False, True]
    assert np.all(seq.keypoint_score[0, 1] == 0) and np.all(seq.keypoint[0, 1] == 0)
    assert seq.keypoint_score[0, 0, 3] == 0 and seq.keypoint[0, 2, 0, 0] == pytest.approx(150)


def test_unknown_backend_and_missing_optional_backend_are_clear_errors():
    with pytest.raises(PevlError, match="unknown pose backend 'openpose'"):
        create_extractor("openpose")
    if importlib.util.find_spec("rtmlib") is None:
        with pytest.raises(PevlError, match=r"pip install 'pevl\[rtmpose\]'"):
            create_extractor("rtmpose")


def test_rtmlib_adapter_feeds_bgr_skips_empty_frames_and_clips_scores(monkeypatch):
    seen = {}

    class StubBody:  # rtmlib.Body's two stages, without models
        def __init__(self, mode, to_openpose, backend, device):
            seen["args"] = (mode, to_openpose, backend, device)
            self.det_model = lambda image: [] if image.mean() < 5 else [[0, 0, 8, 8], [2, 2, 6, 6]]
            self.pose_model = self.estimate

        def estimate(self, image, bboxes):
            seen["pixel"] = image[0, 0].tolist()
            return np.full((len(bboxes), 17, 2), 3.0), np.full((len(bboxes), 17), 1.7)

    monkeypatch.setitem(sys.modules, "rtmlib", types.SimpleNamespace(Body=StubBody))
    extractor = create_extractor("rtmpose", mode="lightweight")
    assert seen["args"] == ("lightweight", False, "onnxruntime", "cpu")
    keypoint, score = extractor.detect(np.zeros((8, 8, 3), np.uint8))
    assert keypoint.shape == (0, 17, 2) and score.shape == (0, 17)
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 200
    keypoint, score = extractor.detect(red)
    assert seen["pixel"] == [0, 0, 200]  # OpenCV channel order
    assert keypoint.shape == (2, 17, 2) and score.max() == 1.0
    with pytest.raises(PevlError, match="unknown rtmlib mode"):
        create_extractor("rtmlib", mode="huge")


def test_cache_tag_separates_backends_and_settings():
    assert cache_tag("mediapipe") == "mediapipe"
    assert cache_tag("rtmpose", max_persons=2, mode="lightweight") == "rtmlib-m2-mode=lightweight"


def test_frames_decoded_ahead_arrive_in_order_and_errors_are_not_lost():
    from pevl.data.pose.base import _prefetched

    def frames_then_damage():
        for i in range(5):
            yield np.full((2, 2, 3), i, np.uint8)
        raise PevlError("clip.mp4: corrupt video data after frame 5")

    received = []
    with pytest.raises(PevlError, match="after frame 5"):
        for frame in _prefetched(frames_then_damage(), depth=2):
            received.append(int(frame[0, 0, 0]))
    assert received == [0, 1, 2, 3, 4]


def test_stopping_early_closes_the_decoder():
    from pevl.data.pose.base import _prefetched

    closed = []

    def endless():
        try:
            while True:
                yield np.zeros((2, 2, 3), np.uint8)
        finally:
            closed.append(True)

    stream = _prefetched(endless(), depth=2)
    next(stream)
    stream.close()
    assert closed == [True]


# --- tracking ------------------------------------------------------------------------------------------------


def person(cx: float, cy: float, size: float, score: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.linspace(-0.5, 0.5, 17, dtype=np.float32)
    keypoint = np.stack([cx + offsets * size, cy + offsets[::-1] * size], axis=-1)
    return keypoint, np.full(17, score, np.float32)


def frame_of(*people: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    if not people:
        return np.zeros((0, 17, 2), np.float32), np.zeros((0, 17), np.float32)
    return np.stack([p[0] for p in people]), np.stack([p[1] for p in people])


def test_tracking_follows_the_main_actor_whatever_the_detection_order():
    rng = np.random.default_rng(0)
    detections = []
    for t in range(20):
        actor = person(100 + 3 * t, 200, 150)  # large, walking right
        bystander = person(400, 100 + 2 * t, 40, score=0.6)  # small
        people = [actor, bystander] if rng.random() < 0.5 else [bystander, actor]
        detections.append(frame_of(*people) if t != 7 else frame_of(bystander))  # the actor is missed once
    keypoint, score = select_main_tracks(detections, max_persons=2)
    assert keypoint.shape == (2, 20, 17, 2)
    actor_x = keypoint[0, :, 8, 0]  # middle joint = box centre
    seen = score[0, :, 0] > 0
    np.testing.assert_allclose(actor_x[seen], (100 + 3 * np.arange(20))[seen], atol=1e-4)
    assert not seen[7] and seen.sum() == 19
    np.testing.assert_allclose(keypoint[1, :, 8, 0], 400, atol=1e-4)


def test_one_track_per_person_and_at_least_one_row_when_nobody_is_there():
    keypoint, score = select_main_tracks([frame_of() for _ in range(4)], max_persons=2)
    assert keypoint.shape == (1, 4, 17, 2) and not score.any()
    single = [frame_of(person(50, 50, 30)), frame_of(), frame_of(person(300, 50, 30))]
    keypoint, score = select_main_tracks(single, max_persons=2)
    assert keypoint.shape[0] == 1 and (score[0, :, 0] > 0).tolist() == [True, False, True]


# --- cache ---------------------------------------------------------------------------------------------------


def test_cache_round_trips_and_invalidates_when_the_video_changes(tmp_path):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"stand-in content")
    cache = PoseCache(tmp_path / "cache", backend="mediapipe")
    assert cache.get(video) is None
    seq = PoseSequence(np.random.rand(1, 4, 17, 2), np.random.rand(1, 4, 17), img_shape=(90, 160), fps=29.97)
    cache.put(video, seq)
    back = cache.get(video)
    assert back is not None and back.img_shape == (90, 160) and back.fps == pytest.approx(29.97)
    np.testing.assert_array_equal(back.keypoint, seq.keypoint)
    assert PoseCache(tmp_path / "cache", backend="rtmlib").get(video) is None
    os.utime(video, ns=(0, 10**18))
    assert cache.get(video) is None


def test_backend_aliases_share_cache_entries(tmp_path):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"x")
    PoseCache(tmp_path / "c", backend="rtmlib").put(
        video, PoseSequence(np.ones((2, 3, 17, 2)), np.ones((2, 3, 17)), (8, 8))
    )
    assert PoseCache(tmp_path / "c", backend="rtmpose").get(video).num_persons == 2
    assert PoseCache(tmp_path / "c", backend="rtmpose-m2").get(video) is None


def test_damaged_cache_entries_are_ignored(tmp_path):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"x")
    cache = PoseCache(tmp_path / "cache")
    cache.put(video, PoseSequence(np.zeros((1, 2, 17, 2)), np.zeros((1, 2, 17)), img_shape=(4, 4)))
    cache.path_for(video).write_bytes(b"PK\x03\x04 broken")
    assert cache.get(video) is None


def test_default_cache_dir_follows_pevl_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("PEVL_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "poses"
    assert PoseCache().root == tmp_path / "poses"


# --- inputs --------------------------------------------------------------------------------------------------


def test_folder_input_names_videos_by_relative_path(tmp_path):
    for rel in ("jump/a.mp4", "jump/b.avi", "run/deep/c.webm"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    (tmp_path / "run" / "notes.txt").write_text("not a video")
    items, split = collect_videos(tmp_path)
    assert [item.frame_dir for item in items] == ["jump/a", "jump/b", "run/deep/c"]
    assert split == {}


def test_video_list_gives_labels_split_and_stems(tmp_path):
    listing = tmp_path / "lists" / "train.txt"
    listing.parent.mkdir()
    listing.write_text("# comment\n\nvideos/x/one.mp4 3\nvideos/y/two.mp4 0\n/abs/three.mp4\n")
    items, split = collect_videos(listing, root=tmp_path)
    assert [(i.frame_dir, i.label) for i in items] == [("one", 3), ("two", 0), ("three", -1)]
    assert items[0].path == tmp_path / "videos/x/one.mp4" and items[2].path == Path("/abs/three.mp4")
    assert split == {"train": ["one", "two", "three"]}
    assert read_video_list(listing)[0].path == listing.parent / "videos/x/one.mp4"


def test_video_list_with_colliding_stems_keeps_the_written_paths(tmp_path):
    listing = tmp_path / "val.txt"
    listing.write_text("a/clip.mp4 1\nb/clip.mp4 2\n")
    assert [i.frame_dir for i in read_video_list(listing)] == ["a/clip", "b/clip"]


def test_bad_inputs_are_one_line_errors(tmp_path):
    listing = tmp_path / "bad.txt"
    listing.write_text("a.mp4 jump\n")
    with pytest.raises(PevlError, match=r"bad\.txt: line 1: label 'jump' is not an integer"):
        collect_videos(listing)
    with pytest.raises(PevlError, match="no such file or folder"):
        collect_videos(tmp_path / "absent")


# --- batch extraction ----------------------------------------------------------------------------------------


def test_batch_writes_pyskl_skips_bad_videos_and_resumes_from_cache(tmp_path, fake_backend):
    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "grey.mp4", [60, 60, 90, 0, 120])
    write_video(videos / "bright.mp4", [200] * 3)
    (videos / "broken.mp4").write_bytes(b"\x00" * 100)
    out = tmp_path / "poses.pkl"
    summary = extract_poses(videos, out, backend=fake_backend, cache_dir=tmp_path / "cache", progress=False)
    assert (summary.total, summary.extracted, summary.cached) == (3, 2, 0)
    assert len(summary.failed) == 1 and "broken.mp4" in summary.failed[0][1]
    assert "broken.mp4" in summary.format()
    data = load_pyskl(out)
    by_name = {ann["frame_dir"]: ann for ann in data["annotations"]}
    assert set(by_name) == {"grey", "bright"}
    grey = by_name["grey"]
    assert grey["total_frames"] == 5 and grey["img_shape"] == (48, 64) and grey["label"] == -1
    # The black frame 3 is a one-frame detection gap: filled halfway, at half the neighbours' score.
    assert (grey["keypoint_score"][0, :, 0] > 0).all()
    np.testing.assert_allclose(grey["keypoint_score"][0, :, 0], [0.5, 0.5, 0.5, 0.25, 0.5])
    np.testing.assert_allclose(grey["keypoint"][0, [0, 2, 3, 4], 0, 0], [60, 90, 105, 120], atol=3)
    assert (grey["keypoint_score"][0, :, 3] == 0).all()  # the NaN joint stays missing, never interpolated
    assert data["split"] == {"all": ["bright", "grey"]}
    assert summary.found_raw == 7 and summary.found_filled == 8 and summary.total_frames == 8

    seen = GreyLevelExtractor.frames_seen
    out.unlink()
    again = extract_poses(
        videos, out, backend=fake_backend, cache_dir=tmp_path / "cache", progress=False, max_gap=0, split_name="val"
    )
    assert (again.extracted, again.cached, len(again.failed)) == (0, 2, 1)
    assert GreyLevelExtractor.frames_seen == seen  # nothing re-extracted: the cache holds the raw detections
    raw = load_pyskl(out)
    assert {ann["frame_dir"] for ann in raw["annotations"]} == {"grey", "bright"}
    assert raw["split"] == {"val": ["bright", "grey"]}
    grey = next(ann for ann in raw["annotations"] if ann["frame_dir"] == "grey")
    assert (grey["keypoint_score"][0, :, 0] > 0).tolist() == [True, True, True, False, True]


class InterruptedOnBrightFrames(GreyLevelExtractor):
    """Behaves like the user pressing Ctrl-C while the bright video is processed."""

    def detect(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if frame.mean() > 180:
            raise KeyboardInterrupt
        return super().detect(frame)


def test_an_interrupted_run_leaves_no_output_and_the_rerun_resumes(tmp_path, fake_backend, monkeypatch):
    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "a_grey.mp4", [60] * 3)
    write_video(videos / "b_bright.mp4", [200] * 3)
    out, cache = tmp_path / "poses.pkl", tmp_path / "cache"
    monkeypatch.setitem(pose_base.BACKENDS, "fake", f"{__name__}:InterruptedOnBrightFrames")
    with pytest.raises(KeyboardInterrupt):
        extract_poses(videos, out, backend="fake", cache_dir=cache, progress=False)
    assert not out.exists()
    monkeypatch.setitem(pose_base.BACKENDS, "fake", f"{__name__}:GreyLevelExtractor")
    summary = extract_poses(videos, out, backend="fake", cache_dir=cache, progress=False)
    assert (summary.cached, summary.extracted) == (1, 1)
    assert [a["frame_dir"] for a in load_pyskl(out)["annotations"]] == ["a_grey", "b_bright"]


def crash_on_doomed_videos(path: Path, max_persons: int) -> tuple[str, object]:
    """Runs in a worker process: dies like a segfaulting model on 'doomed' videos."""
    if "doomed" in path.name:
        os._exit(11)
    return "ok", PoseSequence(np.ones((1, 2, 17, 2)), np.full((1, 2, 17), 0.5), img_shape=(48, 64))


@needs_mediapipe
@pytest.mark.slow
def test_a_worker_crash_skips_only_the_video_that_caused_it(tmp_path, monkeypatch):
    import pevl.data.pose.extract as extract_module

    monkeypatch.setattr(extract_module, "_extract_in_worker", crash_on_doomed_videos)
    names = ["a.mp4", "b_doomed.mp4", "c.mp4", "d.mp4", "e.mp4"]
    for name in names:
        (tmp_path / name).write_bytes(b"stand-in")
    out = tmp_path / "out.pkl"
    summary = extract_poses([tmp_path / n for n in names], out, workers=2, cache_dir=tmp_path / "cache", progress=False)
    assert summary.extracted == 4
    assert summary.failed == [
        (str(tmp_path / "b_doomed.mp4"), f"{tmp_path / 'b_doomed.mp4'}: the pose backend crashed on this video")
    ]
    assert [a["frame_dir"] for a in load_pyskl(out)["annotations"]] == ["a", "c", "d", "e"]


def test_video_list_labels_reach_the_pickle(tmp_path, fake_backend):
    write_video(tmp_path / "a.mp4", [80] * 2)
    write_video(tmp_path / "b.mp4", [90] * 2)
    listing = tmp_path / "test_split.txt"
    listing.write_text("a.mp4 4\nb.mp4 7\n")
    extract_poses(listing, tmp_path / "out.pkl", backend=fake_backend, cache_dir=tmp_path / "c", progress=False)
    data = load_pyskl(tmp_path / "out.pkl")
    assert [(a["frame_dir"], a["label"]) for a in data["annotations"]] == [("a", 4), ("b", 7)]
    assert data["split"] == {"test_split": ["a", "b"], "all": ["a", "b"]}


def test_nothing_is_written_when_no_video_can_be_read(tmp_path, fake_backend):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"nope")
    out = tmp_path / "out.pkl"
    with pytest.raises(PevlError, match="no video could be processed"):
        extract_poses(bad, out, backend=fake_backend, cache_dir=tmp_path / "c", progress=False)
    assert not out.exists() and not list(tmp_path.glob(".out.pkl*"))


# --- BlazePose (mediapipe) -----------------------------------------------------------------------------------


def test_blazepose_landmarks_map_to_coco17_by_name():
    from pevl.data.pose.mediapipe_backend import blazepose_to_coco17_indices

    # BlazePose's documented 33-landmark order.
    names = (
        "NOSE LEFT_EYE_INNER LEFT_EYE LEFT_EYE_OUTER RIGHT_EYE_INNER RIGHT_EYE RIGHT_EYE_OUTER LEFT_EAR RIGHT_EAR "
        "MOUTH_LEFT MOUTH_RIGHT LEFT_SHOULDER RIGHT_SHOULDER LEFT_ELBOW RIGHT_ELBOW LEFT_WRIST RIGHT_WRIST "
        "LEFT_PINKY RIGHT_PINKY LEFT_INDEX RIGHT_INDEX LEFT_THUMB RIGHT_THUMB LEFT_HIP RIGHT_HIP LEFT_KNEE "
        "RIGHT_KNEE LEFT_ANKLE RIGHT_ANKLE LEFT_HEEL RIGHT_HEEL LEFT_FOOT_INDEX RIGHT_FOOT_INDEX"
    ).split()
    assert blazepose_to_coco17_indices(names) == [0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28]


_REAL_POSES: dict[str, PoseSequence] = {}


def real_poses(shared_data: Path, name: str) -> PoseSequence:
    """BlazePose on a real video, computed once per test session."""
    if name not in _REAL_POSES:
        with create_extractor("mediapipe") as extractor:
            _REAL_POSES[name] = extract_video(shared_data / "videos" / name, extractor)
    return _REAL_POSES[name]


@needs_mediapipe
@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        "k400_clean_and_jerk.mp4",
        "k400_tai_chi.mp4",
        "pose2sim_lunge_portrait_60fps.mp4",
        "ntu_drink_water_1080p.avi",
    ],
)
def test_blazepose_finds_the_person_in_at_least_90_percent_of_frames(shared_data, name):
    seq = real_poses(shared_data, name)
    assert seq.keypoint.shape[:2] == (1, seq.num_frames)
    assert np.isfinite(seq.keypoint).all() and np.isfinite(seq.keypoint_score).all()
    assert 0 <= seq.keypoint_score.min() and seq.keypoint_score.max() <= 1
    assert seq.detected().mean() >= 0.9


@needs_mediapipe
@pytest.mark.slow
@pytest.mark.parametrize("name", ["k400_clean_and_jerk.mp4", "ntu_drink_water_1080p.avi"])
def test_left_joints_are_on_the_persons_left_on_real_frames(shared_data, name):
    # Both people face the camera, so their left side is at larger image x.
    seq = real_poses(shared_data, name)
    keypoint, score = seq.keypoint[0], seq.keypoint_score[0]
    for left, right in ((5, 6), (11, 12)):  # shoulders, hips
        both = (score[:, left] > 0.5) & (score[:, right] > 0.5)
        assert both.sum() > 0.5 * seq.num_frames
        assert (keypoint[both, left, 0] > keypoint[both, right, 0]).mean() > 0.9


@needs_mediapipe
@pytest.mark.slow
def test_portrait_video_keeps_portrait_pixel_coordinates(shared_data):
    seq = real_poses(shared_data, "pose2sim_lunge_portrait_60fps.mp4")
    assert seq.img_shape == (1920, 1080) and seq.fps == pytest.approx(60)
    visible = seq.keypoint_score[0] > 0.5
    xs, ys = seq.keypoint[0, ..., 0][visible], seq.keypoint[0, ..., 1][visible]
    assert xs.min() >= -50 and xs.max() <= 1130 and ys.max() > 1080  # the body extends below y = 1080


@needs_mediapipe
def test_blazepose_on_a_frame_with_nobody_gives_score_zero(tmp_path):
    path = write_video(tmp_path / "empty.mp4", [0] * 4)
    with create_extractor("mediapipe") as extractor:
        seq = extract_video(path, extractor)
    assert seq.keypoint.shape == (1, 4, 17, 2)
    assert not seq.keypoint_score.any() and not seq.keypoint.any()


@needs_mediapipe
@pytest.mark.slow
def test_cli_with_worker_processes_reports_bad_videos_and_exits_1(shared_data, tmp_path, capsys):
    listing = tmp_path / "videos.txt"
    listing.write_text(
        f"{shared_data / 'videos' / 'k400_archery.avi'} 2\n{tmp_path / 'missing.mp4'} 1\n"
        f"{shared_data / 'videos' / 'ucf101_apply_eye_makeup.avi'} 5\n"
    )
    out = tmp_path / "poses.pkl"
    args = ["extract-poses", str(listing), "--out", str(out), "--workers", "2", "--cache-dir", str(tmp_path / "c")]
    assert cli_main([*args, "--no-progress"]) == 1
    report = capsys.readouterr().out
    assert "2/3 videos written" in report and "missing.mp4: no such file" in report
    anns = load_pyskl(out)["annotations"]
    assert [(a["frame_dir"], a["label"], a["total_frames"]) for a in anns] == [
        ("k400_archery", 2, 131),
        ("ucf101_apply_eye_makeup", 5, 164),
    ]


def test_cli_bad_arguments_exit_2_with_one_line(tmp_path, capsys):
    assert cli_main(["extract-poses", str(tmp_path / "nope"), "--out", str(tmp_path / "o.pkl")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pevl: error: ") and "nope" in err and "\n" not in err
    assert cli_main(["extract-poses", str(tmp_path), "--out", "o.pkl", "--workers", "0"]) == 2


def _grey_frames(folder: Path, levels: list[int]) -> Path:
    from PIL import Image

    folder.mkdir(parents=True)
    for i, level in enumerate(levels, start=1):
        Image.fromarray(np.full((48, 64, 3), level, np.uint8)).save(folder / f"img_{i:05d}.jpg")
    return folder


def test_rawframe_folders_are_videos_for_extract_poses(tmp_path, fake_backend):
    root = tmp_path / "data"
    _grey_frames(root / "rawframes" / "v_jump_01", [80, 80, 0, 90])
    (root / "videos").mkdir()
    write_video(root / "videos" / "v_run_01.mp4", [100] * 3)
    out = tmp_path / "out.pkl"
    summary = extract_poses(root, out, backend=fake_backend, cache_dir=tmp_path / "cache", progress=False)
    assert (summary.extracted, len(summary.failed)) == (2, 0)
    by_name = {a["frame_dir"]: a for a in load_pyskl(out)["annotations"]}
    assert set(by_name) == {"rawframes/v_jump_01", "videos/v_run_01"}
    assert by_name["rawframes/v_jump_01"]["total_frames"] == 4
    np.testing.assert_allclose(by_name["rawframes/v_jump_01"]["keypoint"][0, [0, 3], 0, 0], [80, 90], atol=3)
    # A rawframe folder given directly, and in a rawframe list ('folder total_frames label').
    single = extract_poses(root / "rawframes" / "v_jump_01", out, backend=fake_backend, cache_dir=tmp_path / "c2",
                           progress=False)  # fmt: skip
    assert single.extracted == 1 and load_pyskl(out)["annotations"][0]["frame_dir"] == "v_jump_01"
    listing = root / "val_rawframes.txt"
    listing.write_text("rawframes/v_jump_01 4 2\n")
    extract_poses(listing, out, backend=fake_backend, cache_dir=tmp_path / "c3", progress=False)
    data = load_pyskl(out)
    assert [(a["frame_dir"], a["label"]) for a in data["annotations"]] == [("v_jump_01", 2)]
    assert data["split"] == {"val_rawframes": ["v_jump_01"], "all": ["v_jump_01"]}


def test_multi_label_list_lines_give_the_first_label_with_a_warning(tmp_path, fake_backend):
    write_video(tmp_path / "a.mp4", [80] * 2)
    listing = tmp_path / "l.txt"
    listing.write_text("a.mp4 3 5\n")
    with pytest.warns(UserWarning, match="multi-label"):
        extract_poses(listing, tmp_path / "o.pkl", backend=fake_backend, cache_dir=tmp_path / "c", progress=False)
    assert load_pyskl(tmp_path / "o.pkl")["annotations"][0]["label"] == 3


@needs_mediapipe
def test_a_real_clip_as_rawframes_gives_the_poses_of_the_video(shared_data, tmp_path):
    from PIL import Image

    from pevl.data.video import iter_frames

    video = shared_data / "videos" / "k400_archery.avi"
    folder = tmp_path / "k400_archery"
    folder.mkdir()
    for i, frame in enumerate(iter_frames(video)):
        if i == 30:
            break
        Image.fromarray(frame).save(folder / f"img_{i + 1:05d}.jpg", quality=95)
    with create_extractor("mediapipe") as extractor:
        from_video = extractor.extract(list(iter_frames(video))[:30])
        from_folder = extract_video(folder, extractor)
    assert from_folder.img_shape == from_video.img_shape == (240, 320) and from_folder.num_frames == 30
    both = (from_video.keypoint_score > 0.5) & (from_folder.keypoint_score > 0.5)
    assert both.mean() > 0.5
    distance = np.linalg.norm(from_video.keypoint - from_folder.keypoint, axis=-1)[both]
    assert np.median(distance) < 3.0  # JPEG re-encoding moves joints by a pixel or two, no more
