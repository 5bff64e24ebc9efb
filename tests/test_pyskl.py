"""PYSKL / MMAction2 skeleton pickles: safe loading, normalisation, validation, saving."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from pevl.data.pose.pyskl import load_pyskl, main_person, save_pyskl
from pevl.errors import PevlError


def _annotation(frame_dir: str = "clip", persons: int = 1, frames: int = 5, label: int = 0) -> dict:
    rng = np.random.default_rng(0)
    return {
        "frame_dir": frame_dir,
        "total_frames": frames,
        "img_shape": (48, 64),
        "original_shape": (48, 64),
        "label": label,
        "keypoint": rng.uniform(0, 48, (persons, frames, 17, 2)).astype(np.float32),
        "keypoint_score": rng.uniform(0.2, 1, (persons, frames, 17)).astype(np.float32),
    }


def _write(path: Path, obj: object, protocol: int = 4) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


def test_real_ucf101_pickle_is_one_bare_annotation_in_340x256_pixels(shared_data):
    data = load_pyskl(shared_data / "skeleton" / "ucf101_apply_eye_makeup_pyskl.pkl")
    assert data["split"] == {}
    (ann,) = data["annotations"]
    assert ann["frame_dir"] == "v_ApplyEyeMakeup_g01_c01"
    assert ann["keypoint"].shape == (2, 163, 17, 2) and ann["keypoint"].dtype == np.float32
    assert ann["keypoint_score"].shape == (2, 163, 17) and ann["keypoint_score"].dtype == np.float32
    assert ann["img_shape"] == (256, 340) and ann["original_shape"] == (256, 340)
    seen = ann["keypoint_score"] > 0
    xs, ys = ann["keypoint"][..., 0][seen], ann["keypoint"][..., 1][seen]
    # Pixel coordinates of the 340x256 frame (not normalised): many joints lie beyond the 320-px video width.
    assert 0 < np.median(xs) < 340 and 0 < np.median(ys) < 256
    assert (xs > 320).mean() > 0.05
    keypoint, score = main_person(ann["keypoint"], ann["keypoint_score"])
    means = ann["keypoint_score"].reshape(2, -1).mean(axis=1)
    assert means[0] > 2 * means[1]  # the make-up artist; the second slot is a sparse extra detection
    np.testing.assert_array_equal(keypoint, ann["keypoint"][0])
    np.testing.assert_array_equal(score, ann["keypoint_score"][0])


def test_code_executing_pickle_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "payload_ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = _write(tmp_path / "evil.pkl", {"split": {}, "annotations": [Payload()]})
    with pytest.raises(PevlError) as err:
        load_pyskl(path)
    message = str(err.value)
    assert str(path) in message and "system" in message and "refused" in message
    assert "\n" not in message
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_any_non_numpy_global_is_refused_at_every_protocol(tmp_path, protocol):
    import collections

    path = _write(tmp_path / "counter.pkl", [collections.Counter(a=1)], protocol=protocol)
    with pytest.raises(PevlError, match="collections.Counter"):
        load_pyskl(path)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_numpy_arrays_load_at_every_protocol(tmp_path, protocol):
    ann = _annotation()
    ann["label"] = np.int64(3)  # numpy scalars are allowed too
    path = _write(tmp_path / "ok.pkl", {"split": {"train": ["clip"]}, "annotations": [ann]}, protocol)
    data = load_pyskl(path)
    assert data["split"] == {"train": ["clip"]}
    np.testing.assert_array_equal(data["annotations"][0]["keypoint"], ann["keypoint"])
    assert data["annotations"][0]["label"] == 3


def test_bare_list_and_three_channel_keypoints_are_normalised(tmp_path):
    ann = _annotation(frames=4)
    packed = dict(ann)
    del packed["keypoint_score"]
    packed["keypoint"] = np.concatenate([ann["keypoint"], ann["keypoint_score"][..., None]], axis=-1)
    packed["keypoint"] = packed["keypoint"].astype(np.float16)
    del packed["total_frames"], packed["original_shape"]
    data = load_pyskl(_write(tmp_path / "list.pkl", [packed]))
    out = data["annotations"][0]
    assert out["keypoint"].shape == (1, 4, 17, 2) and out["keypoint"].dtype == np.float32
    np.testing.assert_allclose(out["keypoint_score"], ann["keypoint_score"], atol=1e-3)
    assert out["total_frames"] == 4 and out["original_shape"] == (48, 64)


def test_nan_joints_get_score_zero(tmp_path):
    ann = _annotation()
    ann["keypoint"][0, 1, 3] = np.nan
    out = load_pyskl(_write(tmp_path / "nan.pkl", [ann]))["annotations"][0]
    assert out["keypoint_score"][0, 1, 3] == 0 and np.isfinite(out["keypoint"]).all()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda a: a.pop("keypoint"), "no 'keypoint'"),
        (lambda a: a.update(keypoint=np.zeros((5, 17, 2), np.float32)), "expected \\[M, T, J, 2\\]"),
        (lambda a: a.update(keypoint_score=np.zeros((1, 4, 17), np.float32)), "'keypoint_score' has shape"),
        (lambda a: a.pop("keypoint_score"), "no 'keypoint_score'"),
        (lambda a: a.update(img_shape=None), "'img_shape'"),
    ],
)
def test_bad_annotations_are_named_by_frame_dir(tmp_path, change, expected):
    ann = _annotation("v_bad_clip")
    change(ann)
    path = _write(tmp_path / "bad.pkl", {"split": {}, "annotations": [_annotation("good"), ann]})
    with pytest.raises(PevlError, match=expected) as err:
        load_pyskl(path)
    assert "v_bad_clip" in str(err.value) and str(path) in str(err.value)


def test_3d_skeletons_are_not_mistaken_for_scores(tmp_path):
    ann = _annotation()
    del ann["keypoint_score"]
    ann["keypoint"] = np.random.default_rng(1).uniform(-1, 4, (1, 5, 25, 3)).astype(np.float32)
    with pytest.raises(PevlError, match="3D skeletons"):
        load_pyskl(_write(tmp_path / "ntu3d.pkl", [ann]))


def test_missing_truncated_and_foreign_files(tmp_path):
    with pytest.raises(PevlError, match="no such file"):
        load_pyskl(tmp_path / "absent.pkl")
    data = pickle.dumps([_annotation()])
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(PevlError, match="not a valid pickle"):
        load_pyskl(truncated)
    with pytest.raises(PevlError, match="not a PYSKL skeleton file"):
        load_pyskl(_write(tmp_path / "number.pkl", 42))


def test_save_then_load_round_trip(tmp_path):
    anns = [_annotation("a", persons=2, label=1), _annotation("b", label=0)]
    path = tmp_path / "out" / "poses.pkl"
    save_pyskl(path, anns, {"train": ["a"], "val": ["b"]})
    data = load_pyskl(path)
    assert data["split"] == {"train": ["a"], "val": ["b"]}
    assert [a["frame_dir"] for a in data["annotations"]] == ["a", "b"]
    np.testing.assert_array_equal(data["annotations"][0]["keypoint"], anns[0]["keypoint"])


def test_save_writes_nothing_for_an_invalid_annotation(tmp_path):
    bad = _annotation("broken")
    bad["keypoint"] = np.zeros((3, 17, 2), np.float32)
    path = tmp_path / "poses.pkl"
    with pytest.raises(PevlError, match="broken"):
        save_pyskl(path, [_annotation("fine"), bad])
    assert list(tmp_path.iterdir()) == []


def test_main_person_is_the_one_with_the_highest_mean_score():
    keypoint = np.stack([np.zeros((4, 17, 2)), np.ones((4, 17, 2))]).astype(np.float32)
    score = np.stack([np.full((4, 17), 0.3), np.full((4, 17), 0.9)]).astype(np.float32)
    score[0, 0] = 1.0  # one confident frame does not make person 0 the main one
    kp, sc = main_person(keypoint, score)
    assert kp.mean() == 1.0 and sc.mean() == pytest.approx(0.9)


@pytest.mark.parametrize(
    "pose, video, fits", [(8, 8, True), (10, 8, True), (11, 8, False), (5, 8, False), (105, 100, True),
                          (106, 100, False), (95, 100, True), (94, 100, False)],
)  # fmt: skip
def test_pose_frames_fit_within_five_percent_or_two_frames(pose, video, fits):
    from pevl.data.pose.pyskl import pose_frames_fit

    assert pose_frames_fit(pose, video) is fits
