"""Joint layouts: every layout maps onto COCO-17 by joint name; missing joints get score 0."""

from __future__ import annotations

import numpy as np
import pytest

from pevl.data.pose.layouts import COCO17_FLIP_INDEX, COCO17_JOINTS, LAYOUTS, get_layout, to_coco17
from pevl.errors import PevlError


def _labelled(layout: str, frames: int = 3) -> np.ndarray:
    """Keypoints whose x is the source joint index, so a mapping can be read off the output."""
    joints = get_layout(layout).num_joints
    kp = np.zeros((frames, joints, 2), np.float32)
    kp[..., 0] = np.arange(joints)
    kp[..., 1] = 100 + np.arange(joints)
    return kp


def test_coco17_is_the_identity():
    kp = np.random.default_rng(0).uniform(0, 50, (2, 4, 17, 2)).astype(np.float32)
    score = np.random.default_rng(1).uniform(0, 1, (2, 4, 17)).astype(np.float32)
    out_kp, out_score = to_coco17(kp, score, "coco17")
    np.testing.assert_array_equal(out_kp, kp)
    np.testing.assert_array_equal(out_score, score)


def test_flip_index_swaps_left_and_right_names():
    for i, j in enumerate(COCO17_FLIP_INDEX):
        name = COCO17_JOINTS[i]
        assert COCO17_JOINTS[j] == name.replace("left", "#").replace("right", "left").replace("#", "right")


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_layout_maps_joints_by_name(layout):
    spec = get_layout(layout)
    kp, score = to_coco17(_labelled(layout), None, layout)
    assert kp.shape == (3, 17, 2) and score.shape == (3, 17)
    for coco_index, coco_name in enumerate(COCO17_JOINTS):
        if coco_name in spec.missing:
            assert score[0, coco_index] == 0 and (kp[:, coco_index] == 0).all()
        else:
            source = int(kp[0, coco_index, 0])
            assert spec.coco_names.get(spec.joints[source], spec.joints[source]) == coco_name
            assert score[0, coco_index] == 1


def test_penn13_follows_the_readme_order():
    kp, score = to_coco17(_labelled("penn13"), None, "penn13")
    expected = {"nose": 0, "left_shoulder": 1, "right_shoulder": 2, "left_wrist": 5, "right_hip": 8, "right_ankle": 12}
    for name, source in expected.items():
        assert kp[0, COCO17_JOINTS.index(name), 0] == source
    assert set(get_layout("penn13").missing) == {"left_eye", "right_eye", "left_ear", "right_ear"}


def test_real_jhmdb_joints_convert_with_face_as_nose_and_no_eyes(shared_data):
    data = np.load(shared_data / "skeleton" / "jhmdb14_gt_2d_splits.npz", allow_pickle=False)
    pose = data["train_1_pose"]  # [sum(frames), 15, 2], JHMDB puppet order, normalised coordinates
    assert pose.shape[1:] == (15, 2)
    kp, score = to_coco17(pose, None, "jhmdb15")
    assert kp.shape == (len(pose), 17, 2)
    index = {name: i for i, name in enumerate(COCO17_JOINTS)}
    np.testing.assert_array_equal(kp[:, index["nose"]], pose[:, 2])  # face
    np.testing.assert_array_equal(kp[:, index["left_shoulder"]], pose[:, 4])
    np.testing.assert_array_equal(kp[:, index["right_ankle"]], pose[:, 13])
    for name in ("left_eye", "right_eye", "left_ear", "right_ear"):
        assert (score[:, index[name]] == 0).all()
    assert (score[:, index["left_wrist"]] == 1).all()
    # The converted bodies are upright people: head above hips above ankles (image y grows downwards).
    nose_y = kp[:, index["nose"], 1].mean()
    hip_y = kp[:, [index["left_hip"], index["right_hip"]], 1].mean()
    ankle_y = kp[:, [index["left_ankle"], index["right_ankle"]], 1].mean()
    assert nose_y < hip_y < ankle_y


def test_scores_are_carried_over_and_bad_input_is_refused():
    kp = _labelled("jhmdb15")
    score = np.full(kp.shape[:-1], 0.5, np.float32)
    score[:, 2] = 0.25  # face
    _, out = to_coco17(kp, score, "jhmdb15")
    assert out[0, 0] == 0.25 and out[0, 5] == 0.5
    with pytest.raises(PevlError, match="do not match layout 'penn13'"):
        to_coco17(kp, None, "penn13")
    with pytest.raises(PevlError, match="unknown joint layout"):
        to_coco17(kp, None, "h36m")
    with pytest.raises(PevlError, match="scores of shape"):
        to_coco17(kp, score[:, :3], "jhmdb15")
