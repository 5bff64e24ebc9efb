"""Interoperability with PYSKL and MMAction2: the pickles we write, the skeletons we fill, the people we track."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import pickle
import pickletools
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from pevl.data.pose.base import PoseExtractor, PoseSequence
from pevl.data.pose.gaps import fill_gaps, found_rate
from pevl.data.pose.pyskl import SkeletonFile, dump_portable, load_pyskl, save_pyskl
from pevl.data.pose.tracking import main_person, person_presence, select_main_tracks
from pevl.errors import PevlError

HAS_MEDIAPIPE = importlib.util.find_spec("mediapipe") is not None
needs_mediapipe = pytest.mark.skipif(not HAS_MEDIAPIPE, reason="mediapipe is not installed (pevl[pose])")


def _sequence(frames: int = 6, persons: int = 1, seed: int = 0, shape: tuple[int, int] = (48, 64)) -> PoseSequence:
    rng = np.random.default_rng(seed)
    keypoint = rng.uniform(0, min(shape), (persons, frames, 17, 2)).astype(np.float32)
    score = rng.uniform(0.3, 1.0, (persons, frames, 17)).astype(np.float32)
    return PoseSequence(keypoint, score, shape, fps=25.0)


def _globals_of(data: bytes) -> set[str]:
    """Every ``module name`` global a pickle refers to (GLOBAL and STACK_GLOBAL opcodes)."""
    names: set[str] = set()
    strings: list[str] = []
    for opcode, arg, _ in pickletools.genops(data):
        if opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
            strings.append(arg)
        elif opcode.name == "STACK_GLOBAL":
            names.add(f"{strings[-2]} {strings[-1]}")
        elif opcode.name == "GLOBAL":
            names.add(arg)
    return names


# --- the pickles we write ------------------------------------------------------------------------------------


def test_written_pickle_names_only_globals_that_numpy_1_and_2_both_have(tmp_path):
    annotations = [_sequence().to_annotation("a", 3), _sequence(seed=1).to_annotation("b")]
    annotations[0]["extra"] = np.float32(0.5)  # a numpy scalar among the extra keys is written as a float
    save_pyskl(tmp_path / "out.pkl", annotations)
    data = (tmp_path / "out.pkl").read_bytes()
    assert _globals_of(data) == {"numpy ndarray", "builtins bytearray"}
    assert b"numpy._core" not in data and b"numpy.core" not in data
    # numpy's own pickling (the old writer) names numpy._core under numpy 2: the check above can fail.
    if np.__version__.startswith("2"):
        assert any("_core" in name for name in _globals_of(pickle.dumps(np.zeros(3), protocol=4)))


def test_written_pickle_round_trips_exactly_and_loads_writable(tmp_path):
    seq = _sequence(frames=7, persons=2)
    save_pyskl(tmp_path / "out.pkl", [seq.to_annotation("dir/clip", 5)])
    with open(tmp_path / "out.pkl", "rb") as f:
        plain = pickle.load(f)  # what PYSKL's mmcv.load does
    (ann,) = plain["annotations"]
    np.testing.assert_array_equal(ann["keypoint"], seq.keypoint)
    np.testing.assert_array_equal(ann["keypoint_score"], seq.keypoint_score)
    assert ann["keypoint"].dtype == np.float32 and ann["keypoint_score"].dtype == np.float32
    assert ann["keypoint"].flags.writeable and ann["keypoint_score"].flags.writeable  # PreNormalize2D edits in place
    assert ann["label"] == 5 and type(ann["label"]) is int and type(ann["total_frames"]) is int
    assert load_pyskl(tmp_path / "out.pkl")["annotations"][0]["keypoint"].shape == (2, 7, 17, 2)


def test_empty_arrays_and_big_endian_input_survive_portable_pickling():
    buffer = io.BytesIO()
    dump_portable({"e": np.zeros((0, 4, 17, 2), np.float32), "b": np.arange(3, dtype=">f4")}, buffer)
    out = pickle.loads(buffer.getvalue())
    assert out["e"].shape == (0, 4, 17, 2)
    np.testing.assert_array_equal(out["b"], [0, 1, 2])
    with pytest.raises(pickle.PicklingError):
        dump_portable({"o": np.array([object()])}, io.BytesIO())


def test_unlabelled_videos_have_no_label_key_and_the_default_split_holds_every_video(tmp_path):
    save_pyskl(tmp_path / "out.pkl", [_sequence().to_annotation("a"), _sequence().to_annotation("b", 2)])
    with open(tmp_path / "out.pkl", "rb") as f:
        plain = pickle.load(f)
    first, second = plain["annotations"]
    assert "label" not in first and second["label"] == 2
    assert plain["split"] == {"all": ["a", "b"]}
    with pytest.raises(PevlError, match="split 'train' names 'zzz'"):
        save_pyskl(tmp_path / "bad.pkl", [_sequence().to_annotation("a")], {"train": ["zzz"]})
    assert not (tmp_path / "bad.pkl").exists()


def _pyskl_pipeline(ann: dict, split: dict, clip_len: int = 8) -> dict:
    """What PYSKL's PoseDataset + UniformSampleFrames + PoseDecode + PreNormalize2D read, written from their
    documented contract: split -> frame_dir lookup, total_frames, keypoint[:, inds], img_shape (h, w)."""
    results = dict(ann)
    assert results["frame_dir"] in sum(split.values(), [])
    total = results["total_frames"]
    assert isinstance(total, int) and total == results["keypoint"].shape[1]
    inds = np.linspace(0, total - 1, clip_len).round().astype(int)  # uniform sampling of clip_len frames
    results["keypoint"] = results["keypoint"][:, inds].astype(np.float32)
    results["keypoint_score"] = results["keypoint_score"][:, inds].astype(np.float32)
    h, w = results["img_shape"]
    results["keypoint"][..., 0] = (results["keypoint"][..., 0] - w / 2) / (w / 2)
    results["keypoint"][..., 1] = (results["keypoint"][..., 1] - h / 2) / (h / 2)
    return results


def _check_pyskl_contract(data: dict) -> None:
    assert set(data) == {"split", "annotations"}
    for ann in data["annotations"]:
        assert set(ann) <= {"frame_dir", "total_frames", "img_shape", "original_shape", "label", "keypoint",
                            "keypoint_score"}  # fmt: skip
        assert isinstance(ann["frame_dir"], str)
        m, t, v, c = ann["keypoint"].shape
        assert c == 2 and v == 17 and t == ann["total_frames"] and m >= 1
        assert ann["keypoint_score"].shape == (m, t, v)
        assert ann["keypoint"].dtype == np.float32 and ann["keypoint_score"].dtype == np.float32
        assert all(isinstance(x, int) for x in (*ann["img_shape"], *ann["original_shape"]))
        assert ann["original_shape"] == ann["img_shape"]
        score = ann["keypoint_score"]
        assert np.isfinite(ann["keypoint"]).all() and ((score >= 0) & (score <= 1)).all()


@pytest.mark.slow
@needs_mediapipe
def test_extracted_real_pickle_passes_pyskl_field_contract_and_normalises_within_the_frame(shared_data, tmp_path):
    from pevl.data.pose.extract import extract_poses

    videos = [shared_data / "videos" / name for name in ("ucf101_apply_eye_makeup.avi", "k400_archery.avi")]
    extract_poses(videos, tmp_path / "out.pkl", cache_dir=tmp_path / "cache", progress=False, split_name="xsub_val")
    with open(tmp_path / "out.pkl", "rb") as f:
        data = pickle.load(f)
    _check_pyskl_contract(data)
    assert data["split"] == {"xsub_val": ["ucf101_apply_eye_makeup", "k400_archery"]}
    for ann in data["annotations"]:
        assert "label" not in ann
        out = _pyskl_pipeline(ann, data["split"])
        seen = out["keypoint_score"] > 0
        # Joints BlazePose places outside the picture score 0; what is scored lies inside [-1, 1] once
        # normalised (the eye-makeup clip put 57% of its joints up to |y| = 7.5 before).
        assert seen.mean() > 0.3
        assert np.abs(out["keypoint"][seen]).max() <= 1.0 + 1e-6


PYSKL_CHECK = textwrap.dedent(
    """
    import pickle, sys, json
    import numpy as np
    assert np.__version__.startswith("1."), np.__version__
    with open(sys.argv[1], "rb") as f:
        data = pickle.load(f)
    out = []
    for ann in data["annotations"]:
        kp, sc = ann["keypoint"], ann["keypoint_score"]
        kp[..., 0] = (kp[..., 0] - 32) / 32  # PreNormalize2D writes in place
        out.append({"frame_dir": ann["frame_dir"], "label": ann.get("label"), "shape": list(kp.shape),
                    "dtype": str(kp.dtype), "score_dtype": str(sc.dtype), "sum": float(sc.astype(np.float64).sum()),
                    "total_frames": ann["total_frames"], "img_shape": list(ann["img_shape"])})
    print(json.dumps({"numpy": np.__version__, "split": data["split"], "annotations": out}))
    """
)


@pytest.fixture(scope="module")
def numpy1_python(tmp_path_factory) -> str:
    """A throwaway virtual environment with numpy < 1.26 (no ``numpy._core``), from the package registry."""
    venv = tmp_path_factory.mktemp("numpy1") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    python = str(venv / "bin" / "python")
    try:
        subprocess.run(
            [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--timeout", "20", "numpy<1.26"],
            check=True, capture_output=True, timeout=300,
        )  # fmt: skip
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
        pytest.skip(f"cannot install numpy<1.26 from the package registry ({type(err).__name__})")
    return python


@pytest.mark.slow
def test_written_pickle_loads_under_numpy_1_and_numpy_2_pickles_do_not(numpy1_python, tmp_path):
    seq = _sequence(frames=9, persons=2)
    save_pyskl(tmp_path / "ours.pkl", [seq.to_annotation("a/clip", 7), _sequence(seed=3).to_annotation("b")])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run(
        [numpy1_python, "-c", PYSKL_CHECK, str(tmp_path / "ours.pkl")], capture_output=True, text=True, env=env
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["numpy"] < "1.26"
    assert report["split"] == {"all": ["a/clip", "b"]}
    first, second = report["annotations"]
    assert first["label"] == 7 and second["label"] is None
    assert first["shape"] == [2, 9, 17, 2] and first["dtype"] == "float32" and first["score_dtype"] == "float32"
    assert first["total_frames"] == 9 and first["img_shape"] == [48, 64]
    assert first["sum"] == pytest.approx(float(seq.keypoint_score.astype(np.float64).sum()), rel=1e-6)
    # The control: numpy 2's own pickling of the same payload fails there (what users hit before).
    if np.__version__.startswith("2"):
        (tmp_path / "plain.pkl").write_bytes(pickle.dumps(load_pyskl(tmp_path / "ours.pkl"), protocol=4))
        plain = subprocess.run(
            [numpy1_python, "-c", PYSKL_CHECK, str(tmp_path / "plain.pkl")], capture_output=True, text=True, env=env
        )
        assert plain.returncode != 0 and "numpy._core" in plain.stderr


# --- scores, gaps, persons -----------------------------------------------------------------------------------


def _with_gaps(frames: int, gaps: list[tuple[int, int]], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    seq = _sequence(frames=frames, seed=seed)
    keypoint, score = seq.keypoint.copy(), seq.keypoint_score.copy()
    for a, b in gaps:
        keypoint[:, a:b] = 0
        score[:, a:b] = 0
    return keypoint, score


@pytest.mark.parametrize("seed", range(12))
def test_gap_filling_properties(seed):
    rng = np.random.default_rng(seed)
    frames, max_gap = 40, int(rng.integers(1, 8))
    cuts = sorted(rng.choice(np.arange(0, 40), size=6, replace=False).tolist())
    gaps = [(cuts[i], cuts[i] + int(rng.integers(1, 10))) for i in range(0, 6, 2)]
    keypoint, score = _with_gaps(frames, gaps, seed)
    score[0, :, 4] *= rng.uniform(0, 1, frames) > 0.3  # some joints missing here and there
    keypoint[0, score[0] == 0] = 0
    filled_kp, filled_sc = fill_gaps(keypoint, score, max_gap=max_gap)
    detected = (score > 0).any(-1)[0]
    np.testing.assert_array_equal(filled_kp[0, detected], keypoint[0, detected])  # detections untouched
    np.testing.assert_array_equal(filled_sc[0, detected], score[0, detected])
    frames_found = np.flatnonzero(detected)
    for t in np.flatnonzero(~detected):
        before, after = frames_found[frames_found < t], frames_found[frames_found > t]
        fillable = len(before) and len(after) and after[0] - before[-1] - 1 <= max_gap
        if not fillable:  # leading, trailing or too long: nothing invented
            assert (filled_sc[0, t] == 0).all() and (filled_kp[0, t] == 0).all()
            continue
        a, b = before[-1], after[0]
        both = (score[0, a] > 0) & (score[0, b] > 0)
        assert (filled_sc[0, t][~both] == 0).all()
        assert (filled_sc[0, t][both] < np.minimum(score[0, a], score[0, b])[both]).all()  # always lower
        low = np.minimum(keypoint[0, a], keypoint[0, b])[both] - 1e-4
        high = np.maximum(keypoint[0, a], keypoint[0, b])[both] + 1e-4
        assert ((filled_kp[0, t][both] >= low) & (filled_kp[0, t][both] <= high)).all()  # between the two


def test_gap_filling_is_linear_and_zero_fills_nothing():
    keypoint, score = _with_gaps(6, [(1, 4)])
    filled_kp, filled_sc = fill_gaps(keypoint, score, max_gap=3, score_scale=0.5)
    np.testing.assert_allclose(filled_kp[0, 2], (keypoint[0, 0] + keypoint[0, 4]) / 2, rtol=1e-5)
    np.testing.assert_allclose(filled_sc[0, 2], 0.5 * np.minimum(score[0, 0], score[0, 4]))
    assert found_rate(score) == pytest.approx(3 / 6) and found_rate(filled_sc) == 1.0
    unfilled_kp, unfilled_sc = fill_gaps(keypoint, score, max_gap=2)
    np.testing.assert_array_equal(unfilled_sc, score)
    np.testing.assert_array_equal(fill_gaps(keypoint, score, max_gap=0)[1], score)
    with pytest.raises(ValueError):
        fill_gaps(keypoint, score, max_gap=-1)


class _Landmark:
    def __init__(self, x: float, y: float, visibility: float, presence: float | None = None) -> None:
        self.x, self.y, self.visibility = x, y, visibility
        self._presence = presence

    @property
    def presence(self) -> float:
        return self._presence or 0.0

    def HasField(self, name: str) -> bool:  # noqa: N802 - protobuf's spelling
        return name == "presence" and self._presence is not None


def test_blazepose_scores_are_visibility_times_presence_and_zero_outside_the_frame():
    from pevl.data.pose.mediapipe_backend import _landmarks_to_coco

    coco = np.arange(17)
    landmarks = [_Landmark(0.5, 0.5, 0.9, 0.5) for _ in range(17)]
    landmarks[1] = _Landmark(0.5, 1.3, 0.95, 0.9)  # a foot below the picture, confidently "visible"
    landmarks[2] = _Landmark(-0.01, 0.5, 0.9, 0.9)
    landmarks[3] = _Landmark(0.5, 0.5, 0.8)  # no presence reported (the legacy graph): visibility alone
    keypoint, score = _landmarks_to_coco(landmarks, coco, width=200, height=100)
    assert score.shape == (1, 17) and keypoint.shape == (1, 17, 2)
    assert score[0, 0] == pytest.approx(0.45) and score[0, 3] == pytest.approx(0.8)
    assert score[0, 1] == 0 and score[0, 2] == 0
    np.testing.assert_allclose(keypoint[0, 0], [100, 50])


def test_main_person_is_one_rule_for_tracks_pickles_and_the_cache():
    # A large, steady person and a small bystander with higher scores: presence (score x size) picks the large one.
    big = np.zeros((10, 17, 2), np.float32)
    big[..., 0], big[..., 1] = np.linspace(100, 300, 17), np.linspace(50, 400, 17)[None]
    small = big * 0.1
    keypoint = np.stack([small, big])
    score = np.stack([np.full((10, 17), 0.99, np.float32), np.full((10, 17), 0.7, np.float32)])
    assert np.argmax(person_presence(keypoint, score)) == 1
    kp, _ = main_person(keypoint, score)
    np.testing.assert_array_equal(kp, big)
    per_frame = [(keypoint[:, t], score[:, t]) for t in range(10)]
    tracked_kp, _ = select_main_tracks(per_frame[::-1][::-1], max_persons=1)
    np.testing.assert_array_equal(tracked_kp[0], big)  # the tracker ranks its tracks by the same rule
    assert main_person(np.zeros((0, 5, 17, 2)), np.zeros((0, 5, 17)))[1].shape == (5, 17)


def test_one_lookup_of_a_videos_poses_in_a_pickle(tmp_path):
    two = _sequence(persons=2, seed=4)
    save_pyskl(tmp_path / "p.pkl", [two.to_annotation("class_a/clip_1", 0), _sequence().to_annotation("other", 1)])
    file = SkeletonFile(tmp_path / "p.pkl")
    person = file.video_poses(Path("/data/videos/class_a/clip_1.mp4"))
    expected, _ = main_person(two.keypoint, two.keypoint_score)
    np.testing.assert_array_equal(person.keypoint, expected)
    assert person.img_shape == (48, 64)
    with pytest.raises(PevlError, match="no annotation for missing.mp4"):
        file.video_poses("missing.mp4")


class _TwoPeopleExtractor(PoseExtractor):
    """A single-person backend that reports whether the frames it is shown hold a second person."""

    name = "fake-single"
    single_person = True

    def __init__(self, second: bool) -> None:
        self.second = second
        self.asked: list[int] = []

    def detect(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.full((1, 17, 2), 10.0, np.float32), np.full((1, 17), 0.9, np.float32)

    def other_person_visible(self, frames: list[np.ndarray], keypoints: list[np.ndarray]) -> bool:
        self.asked.append(len(frames))
        return self.second


def test_single_person_backend_warns_once_when_more_persons_are_asked_and_another_is_seen():
    frames = [np.zeros((8, 8, 3), np.uint8)] * 400
    quiet = _TwoPeopleExtractor(second=False)
    assert quiet.extract(frames, max_persons=2).warnings == []
    loud = _TwoPeopleExtractor(second=True)
    warnings = loud.extract(frames, max_persons=2).warnings
    assert len(warnings) == 1 and "tracks one" in warnings[0] and "rtmlib" in warnings[0]
    assert len(loud.asked) == 1 and 4 <= loud.asked[0] <= 8  # a few frames spread over the video, not all
    unasked = _TwoPeopleExtractor(second=True)
    assert unasked.extract(frames, max_persons=1).warnings == [] and unasked.asked == []


@pytest.mark.slow
@needs_mediapipe
@pytest.mark.parametrize(
    ("name", "expected"), [("ntu_two_person_1080p.avi", True), ("k400_tai_chi.mp4", False)]
)
def test_blazepose_notices_a_second_person_on_real_clips(shared_data, name, expected):
    from pevl.data.pose.base import create_extractor, extract_video

    with create_extractor("mediapipe") as extractor:
        seq = extract_video(shared_data / "videos" / name, extractor, max_persons=2)
    assert seq.num_persons == 1
    assert bool(seq.warnings) is expected
    assert all(w.startswith(f"{shared_data / 'videos' / name}: ") for w in seq.warnings)


# --- MMAction2 list files ------------------------------------------------------------------------------------


def _list(tmp_path: Path, text: str, name: str = "list.txt") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_video_lists_read_as_mmaction2_video_dataset_does(tmp_path):
    from pevl.data.datasets.lists import parse_video_list

    entries = parse_video_list(_list(tmp_path, "a/x.mp4 3\ntest.mp4 0 2 4\nunlabelled.avi\n# note\nc.mkv,5\n"))
    assert [(e.name, e.label, e.labels, e.num_frames, e.line) for e in entries] == [
        ("a/x.mp4", 3, (3,), None, 1),
        ("test.mp4", 0, (0, 2, 4), None, 2),  # multi-label: every label kept, none taken from a wrong field
        ("unlabelled.avi", -1, (), None, 3),  # test-time line: label -1
        ("c.mkv", 5, (5,), None, 5),
    ]


def test_rawframe_lists_with_labels_multi_labels_no_labels_and_offsets(tmp_path):
    from pevl.data.datasets.lists import parse_video_list

    text = "some/dir-1 163 1\nsome/dir-2 122 1 3 5\nsome/dir-3 258\n"
    with pytest.raises(PevlError, match=r"line 2: '122 1 3 5' after the folder: an offset, frame count and label"):
        parse_video_list(_list(tmp_path, text))  # ambiguous without with_offset / multi_class, as in MMAction2
    plain = parse_video_list(_list(tmp_path, text), multi_class=True)
    assert [(e.name, e.num_frames, e.labels, e.offset) for e in plain] == [
        ("some/dir-1", 163, (1,), 0),
        ("some/dir-2", 122, (1, 3, 5), 0),
        ("some/dir-3", 258, (), 0),
    ]
    offsets = parse_video_list(_list(tmp_path, "d1 12 163 3\nd2 0 295 3 4\nd3 50 121\n"), with_offset=True)
    assert [(e.offset, e.num_frames, e.labels) for e in offsets] == [(12, 163, (3,)), (0, 295, (3, 4)), (50, 121, ())]
    # Without a hint, "<name> <number>" lines are videos with a label, unless the name is a folder under root.
    (tmp_path / "frames_a").mkdir()
    assert parse_video_list(_list(tmp_path, "frames_a 40\n"))[0].num_frames is None
    found = parse_video_list(_list(tmp_path, "frames_a 40\n"), root=tmp_path)[0]
    assert (found.num_frames, found.label) == (40, -1)
    assert parse_video_list(_list(tmp_path, "frames_a 40\n"), kind="rawframes")[0].num_frames == 40


def test_malformed_list_lines_are_one_line_errors_naming_the_line(tmp_path):
    from pevl.data.datasets.lists import parse_video_list

    with pytest.raises(PevlError, match=r"line 2: label 'x' is not an integer"):
        parse_video_list(_list(tmp_path, "a.mp4 1\nb.mp4 x\n"))
    with pytest.raises(PevlError, match=r"line 1: total_frames 'many' is not an integer"):
        parse_video_list(_list(tmp_path, "dir many 3\n"), kind="rawframes")
    with pytest.raises(PevlError, match=r"line 1: expected '<folder> <offset> <total_frames>"):
        parse_video_list(_list(tmp_path, "dir 3\n"), with_offset=True)


def test_check_labels_warns_on_multi_label_lines_and_refuses_unlabelled_ones(tmp_path):
    from pevl.data.datasets.lists import check_labels, parse_video_list

    path = _list(tmp_path, "a.mp4 0 2\nb.mp4 1\n")
    with pytest.warns(UserWarning, match="1 multi-label lines"):
        check_labels(path, parse_video_list(path), 3)
    with pytest.raises(PevlError, match="line 2: unknown class 5"):
        check_labels(path, parse_video_list(_list(tmp_path, "a.mp4 1\nb.mp4 5\n")), 3)
    with pytest.raises(PevlError, match="line 1: no label"):
        check_labels(path, parse_video_list(_list(tmp_path, "a.mp4\n")), 3)


def test_real_mmaction2_lists_parse_in_full(shared_data):
    from pevl.data.datasets.lists import parse_video_list

    labels = shared_data / "labels"
    diving = parse_video_list(labels / "diving48" / "vba_diving48_val_list_videos.txt")
    assert len(diving) == 1970 and diving[0].name == "26/rRw7peH60Yw_00000.mp4" and diving[0].labels == (26,)
    assert all(e.num_frames is None and len(e.labels) == 1 for e in diving)
    gym = parse_video_list(labels / "finegym" / "vba_gym99_gym_val_list_rawframes.txt")
    assert len(gym) == 8521 and (gym[0].num_frames, gym[0].label) == (65, 78)
    assert all(e.num_frames and len(e.labels) == 1 and 0 <= e.label < 99 for e in gym)
    toyota = parse_video_list(labels / "toyota_smarthome" / "i3d_smarthome_splits" / "splits" / "test_CS.txt")
    assert toyota and all(e.label == -1 and e.name.endswith(".mp4") for e in toyota)


# --- label maps ----------------------------------------------------------------------------------------------


def test_label_map_formats(tmp_path):
    from pevl.data.datasets.lists import read_label_map

    plain = read_label_map(_list(tmp_path, "abseiling\nair drumming\n", "plain.txt"))
    assert plain.names == ("abseiling", "air drumming") and plain.contiguous
    ava = read_label_map(_list(tmp_path, "1: bend/bow (at the waist)\n3: crouch/kneel\n80: watch (a person)\n"))
    assert ava.ids == (1, 3, 80) and ava.names[0] == "bend/bow (at the waist)" and not ava.contiguous
    assert ava.index(80) == 2 and ava.name_of(3) == "crouch/kneel"
    class_ind = read_label_map(_list(tmp_path, "1 ApplyEyeMakeup\n2 ApplyLipstick\n", "classInd.txt"))
    assert class_ind.ids == (1, 2) and class_ind.names == ("ApplyEyeMakeup", "ApplyLipstick")
    pbtxt = _list(tmp_path, 'item {\n  name: "bend/bow (at the waist)"\n  id: 1\n}\nitem { name: "stand" id: 12 }\n')
    assert read_label_map(pbtxt).ids == (1, 12)
    assert read_label_map(_list(tmp_path, '["run", "jump"]', "m.json")).names == ("run", "jump")
    assert read_label_map(_list(tmp_path, '{"5": "run", "2": "jump"}', "m.json")).ids == (2, 5)
    by_name = read_label_map(_list(tmp_path, '{"run": 0, "jump": 1}', "m.json"))
    assert by_name.names == ("run", "jump") and by_name.contiguous


def test_unreadable_label_maps_are_clear_errors_never_one_class(tmp_path):
    from pevl.data.datasets.lists import read_label_map

    (tmp_path / "bin.txt").write_bytes(b"\x00\x01\x02" * 10)
    with pytest.raises(PevlError, match="binary"):
        read_label_map(tmp_path / "bin.txt")
    with pytest.raises(PevlError, match="not valid JSON"):
        read_label_map(_list(tmp_path, '{"0": "run", "1": }', "broken.json"))
    with pytest.raises(PevlError, match="single line of several names"):
        read_label_map(_list(tmp_path, "run, jump, swim\n"))
    with pytest.raises(PevlError, match="line 3: not an 'id: name' line"):
        read_label_map(_list(tmp_path, "0: run\n1: jump\nswim\n"))
    with pytest.raises(PevlError, match="line 2: id 0 already named on line 1"):
        read_label_map(_list(tmp_path, "0: run\n0: jump\n"))
    with pytest.raises(PevlError, match="no such file"):
        read_label_map(tmp_path / "absent.txt")


@pytest.mark.parametrize(
    ("relative", "count", "first"),
    [
        ("kinetics400/label_map_k400.txt", 400, "abseiling"),
        ("ntu/skeleton_label_map_ntu60.txt", 60, "drink water"),
        ("ntu/skeleton_label_map_ntu120.txt", 120, "drink water"),
        ("diving48/label_map_diving48.txt", 48, None),
        ("finegym/label_map_gym99.txt", 99, None),
    ],
)
def test_real_label_maps_read_whole(shared_data, relative, count, first):
    from pevl.data.datasets.lists import read_label_map
    from pevl.errors import PevlWarning

    path = shared_data / "labels" / relative
    if relative.startswith("finegym"):  # Gym99 names two elements alike: refused by default, read with a warning
        with pytest.raises(PevlError, match="lines 59 and 71 both name"):
            read_label_map(path)
        with pytest.warns(PevlWarning, match="lines 59 and 71 both name"):
            label_map = read_label_map(path, duplicates="warn")
    else:
        label_map = read_label_map(path)
    assert len(label_map.names) == count and label_map.contiguous
    assert len(set(label_map.names)) == count - relative.startswith("finegym")
    if first is not None:
        assert label_map.names[0] == first


def test_sparse_ids_of_a_label_map_become_class_indices_in_a_video_list_dataset(tmp_path):
    from pevl.data.datasets import DATASETS

    for name in ("a.mp4", "b.mp4"):
        (tmp_path / name).write_bytes(b"")
    _list(tmp_path, "a.mp4 3\nb.mp4 80\n", "train.txt")
    _list(tmp_path, "1: bend\n3: crouch\n80: watch\n", "label_map.txt")
    options = {"label_map": str(tmp_path / "label_map.txt")}
    spec = DATASETS["video_list"]("video_list", "train", tmp_path, options)
    assert spec.classes == ["bend", "crouch", "watch"]
    assert [r.label for r in spec.records] == [1, 2]
    _list(tmp_path, "a.mp4 2\n", "train.txt")
    with pytest.raises(PevlError, match="line 1: class id 2 is not in the label map"):
        DATASETS["video_list"]("video_list", "train", tmp_path, options)


# --- rawframe folders in predict and explain -----------------------------------------------------------------


@pytest.mark.slow
def test_predict_and_explain_take_a_rawframe_folder(tiny_checkpoint, tmp_path):
    from PIL import Image

    from pevl.apps.explain import explain_video
    from pevl.apps.inference import predict_video
    from pevl.data.video import iter_frames

    checkpoint, root = tiny_checkpoint
    video = next((root / "videos").rglob("*.mp4"))
    folder = tmp_path / video.stem  # frame_dir of the pickle = the folder's name
    folder.mkdir()
    for i, frame in enumerate(iter_frames(video), start=1):
        Image.fromarray(frame).save(folder / f"img_{i:05d}.png")
    from_video = predict_video(video, checkpoint, pose_file=root / "poses.pkl", top_k=3)
    from_folder = predict_video(folder, checkpoint, pose_file=root / "poses.pkl", top_k=3)
    assert from_folder["pose_source"] == "file" and from_folder["pose_frames"] == from_video["pose_frames"]
    assert [t["label"] for t in from_folder["top_k"]] == [t["label"] for t in from_video["top_k"]]
    result = explain_video(folder, checkpoint, tmp_path / "explained", pose_file=root / "poses.pkl", top_k=2)
    assert result.files and all((tmp_path / "explained" / name).is_file() for name in result.files)


def test_the_default_catch_all_split_is_not_a_train_val_division(tmp_path):
    from pevl.data.datasets import DATASETS

    annotations = [_sequence(seed=i).to_annotation(f"v{i}", i % 2) for i in range(6)]
    save_pyskl(tmp_path / "p.pkl", annotations)  # split {"all": [...]}
    options = {"pose_file": str(tmp_path / "p.pkl")}
    train = {r.name for r in DATASETS["pyskl"]("pyskl", "train", None, options).records}
    val = {r.name for r in DATASETS["pyskl"]("pyskl", "val", None, options).records}
    assert train and val and not train & val and train | val == {f"v{i}" for i in range(6)}
    assert len(DATASETS["pyskl"]("pyskl", "all", None, options).records) == 6
