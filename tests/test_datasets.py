"""Datasets: the real split/label files parse to the published counts; tiny trees build and load items."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from pevl.data.datasets import DATASETS, build_dataset, dataset_options
from pevl.data.datasets.diving48 import diving48_codes, parse_diving48_split
from pevl.data.datasets.finegym import finegym_classes, finegym_element_ids, parse_finegym_split
from pevl.data.datasets.haa500 import haa500_split_of
from pevl.data.datasets.lists import read_class_names
from pevl.data.datasets.toyota import (
    TOYOTA_CS_CLASSES,
    TOYOTA_CS_TRAIN_SUBJECTS,
    TOYOTA_CV_CLASSES,
    parse_toyota_list,
    toyota_split_of,
)
from pevl.data.pose.pyskl import save_pyskl
from pevl.data.synthetic import make_synthetic
from pevl.data.synthetic.writer import encode_video
from pevl.errors import PevlError

# ---------------------------------------------------------------- real annotation files


def test_diving48_v2_lists_have_the_published_counts(shared_data):
    folder = shared_data / "labels" / "diving48"
    codes = diving48_codes(folder / "label_map_diving48.txt")
    train = parse_diving48_split(folder / "vba_diving48_train_list_videos.txt")
    val = parse_diving48_split(folder / "vba_diving48_val_list_videos.txt")
    assert (len(train), len(val), len(codes)) == (15027, 1970, 48)
    assert {e.label for e in train} == set(range(48)) - {30}  # V2's train split has no clip of class 30
    assert {e.label for e in val} <= set(range(48))
    assert train[0].name == "19/VNvb5oLOpLg_00000.mp4" and train[0].num_frames is None


def test_gym99_lists_have_the_published_counts(shared_data):
    folder = shared_data / "labels" / "finegym"
    classes, coarse = finegym_classes(folder / "label_map_gym99.txt")
    train = parse_finegym_split(folder / "vba_gym99_gym_train_list_rawframes.txt")
    val = parse_finegym_split(folder / "vba_gym99_gym_val_list_rawframes.txt")
    assert (len(train), len(val), len(classes)) == (20484, 8521, 99)
    assert {e.label for e in train} == set(range(99))
    assert all(e.num_frames > 0 for e in train)
    assert coarse[0] == "vault" and not classes[0].startswith("(")
    ids = finegym_element_ids(train[0].name)
    assert ids["official"] == "A0xAXXysHUo_E_002184_002237_A_0035_0036"


def test_toyota_class_maps_and_subjects_match_the_official_file(shared_data):
    text = (shared_data / "labels" / "toyota_smarthome" / "official_2sAGCN_class_maps_and_subjects.txt").read_text()

    def class_map(name: str) -> list[str]:
        block = re.search(name + r"\s*=\s*\{(.*?)\}", text, re.S).group(1)
        pairs = re.findall(r"'([\w.]+)'\s*:\s*(\d+)", block)
        return [n for n, _ in sorted(pairs, key=lambda p: int(p[1]))]

    assert class_map("action_classes") == list(TOYOTA_CS_CLASSES)
    assert class_map("action_cv") == list(TOYOTA_CV_CLASSES)
    subjects = re.search(r"training_subjects\s*=\s*\[(.*?)\]", text).group(1)
    assert {int(s) for s in subjects.split(",")} == TOYOTA_CS_TRAIN_SUBJECTS


@pytest.mark.parametrize(("protocol", "num_classes"), [("CS", 31), ("CV1", 19), ("CV2", 19)])
def test_toyota_splits_follow_from_the_file_names(shared_data, protocol, num_classes):
    folder = shared_data / "labels" / "toyota_smarthome" / "i3d_smarthome_splits" / "splits"
    # The reference lists take CS validation from the training subjects; CV validation is camera 5.
    expected = {"train": "train", "validation": "train" if protocol == "CS" else "val", "test": "test"}
    for list_split, derived in expected.items():
        clips = parse_toyota_list(folder / f"{list_split}_{protocol}.txt", protocol)
        assert clips and all(toyota_split_of(name, protocol) == derived for name, _ in clips)
    for list_split in ("train", "test"):
        clips = parse_toyota_list(folder / f"{list_split}_{protocol}.txt", protocol)
        assert len({label for _, label in clips}) == num_classes


def test_kinetics_label_map_has_400_names(shared_data):
    assert len(read_class_names(shared_data / "labels" / "kinetics400" / "label_map_k400.txt")) == 400


# ---------------------------------------------------------------- tiny trees


def _video(path: Path, frames: int = 24, size: int = 32, value: int = 0) -> Path:
    """A small valid mp4 whose frame t has brightness value + 4 t."""
    images = np.zeros((frames, size, size, 3), np.uint8)
    images += (value + 4 * np.arange(frames, dtype=np.uint8))[:, None, None, None]
    encode_video(path, images)
    return path


def _pose_ann(frame_dir: str, label: int, frames: int, persons: int = 1, size: int = 32) -> dict:
    kp = np.zeros((persons, frames, 17, 2), np.float32)
    kp[..., 0] = np.linspace(2, size - 2, 17)
    kp[..., 1] = np.arange(frames, dtype=np.float32)[None, :, None] % size
    return {
        "frame_dir": frame_dir,
        "total_frames": frames,
        "img_shape": (size, size),
        "original_shape": (size, size),
        "label": label,
        "keypoint": kp,
        "keypoint_score": np.ones((persons, frames, 17), np.float32),
    }


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ds") / "synthetic"
    make_synthetic(root, num_classes=2, per_class=3, frames=16, size=32, val_fraction=0.34, progress=False)
    return root


def test_registry_knows_every_dataset_of_the_paper():
    expected = {"gym99", "gym288", "diving48", "haa500", "toyota_cs", "toyota_cv1", "toyota_cv2", "kinetics400"}
    assert expected | {"video_list", "video_folder", "pyskl", "synthetic"} <= set(DATASETS)
    assert {"list_file", "label_map", "annotation_file"} <= dataset_options("gym288")
    with pytest.raises(PevlError, match="unknown dataset"):
        dataset_options("ucf101")


def test_synthetic_items_have_views_video_pose_label(synthetic_root):
    ds = build_dataset("synthetic", "train", root=synthetic_root, image_size=32, num_pose_frames=16)
    assert len(ds) == 4 and ds.train and ds.num_classes == 2 and ds.coarse == ["diving", "diving"]
    item = ds[0]
    assert item["video"].shape == (1, 8, 3, 32, 32) and item["pose"].shape == (1, 16, 17, 3)
    assert item["label"] == 0 and item["index"] == 0
    assert torch.isfinite(item["pose"]).all() and (item["pose"][..., 2] == 1).all()
    test = build_dataset("synthetic", "test", root=synthetic_root, image_size=32, num_clips=2, num_crops=3)
    item = test[1]
    assert item["video"].shape == (6, 8, 3, 32, 32) and item["pose"].shape == (6, 32, 17, 3)
    pose_only = build_dataset("synthetic", "val", root=synthetic_root, use_video=False, num_clips=2)
    assert set(pose_only[0]) == {"pose", "label", "index"} and pose_only[0]["pose"].shape == (2, 32, 17, 3)


def test_item_randomness_is_reproducible_from_seed_epoch_and_index(synthetic_root):
    def make():
        return build_dataset("synthetic", "train", root=synthetic_root, image_size=32, use_video=False, seed=3)

    a, b = make(), make()
    torch.testing.assert_close(a[2]["pose"], b[2]["pose"])
    a.set_epoch(1)
    assert not torch.equal(a[2]["pose"], b[2]["pose"])
    b.set_epoch(1)
    torch.testing.assert_close(a[2]["pose"], b[2]["pose"])


def test_gym288_official_files_with_event_clips_and_json(tmp_path):
    root = tmp_path / "gym"
    (root / "annotations").mkdir(parents=True)
    categories = [
        "Clabel:   0; set:  1; Glabel:   1; (VT) round-off, flic-flac on, stretched salto backward off",
        "Clabel:   1; set: 21; Glabel:  67; (FX) switch leap with 0.5 turn",
        "Clabel:   2; set: 31; Glabel: 207; (BB) sissone",
    ]
    (root / "annotations" / "gym288_categories.txt").write_text("\n".join(categories) + "\n")
    elements = {"yt_-a1_E_000010_000012_A_0000_0001": 2, "yt_-a1_E_000010_000012_A_0001_0002": 0}
    lines = [f"{k} {v}" for k, v in elements.items()]
    (root / "annotations" / "gym288_train_element_v1.1.txt").write_text("\n".join(lines) + "\n")
    annotation = {
        "yt_-a1": {
            "E_000010_000012": {
                "event": 1,
                "timestamps": [[10.0, 12.0]],
                "segments": {
                    "A_0000_0001": {"stages": 1, "timestamps": [[0.0, 0.4]]},
                    "A_0001_0002": {"stages": 3, "timestamps": [[0.4, 0.5], [0.5, 0.6], [0.6, 0.8]]},
                },
            }
        }
    }
    (root / "annotations" / "finegym_annotation_info_v1.1.json").write_text(json.dumps(annotation))
    (root / "events").mkdir()
    _video(root / "events" / "yt_-a1_E_000010_000012.mp4", frames=25)  # 1 s at 25 fps
    pose_file = tmp_path / "gym_poses.pkl"
    save_pyskl(pose_file, [_pose_ann(k, v, frames=10) for k, v in elements.items()])  # 0.4 s elements: 10 frames

    ds = build_dataset("gym288", "train", root=root, pose_file=pose_file, image_size=32, train=False)
    assert ds.classes[0] == "round-off, flic-flac on, stretched salto backward off"
    assert ds.coarse == ["vault", "floor exercise", "balance beam"]
    assert [r.label for r in ds.records] == [2, 0]
    assert ds.records[1].window_sec == (0.4, 0.8)  # first stage start to last stage end
    item = ds[1]
    assert item["video"].shape == (1, 8, 3, 32, 32) and item["pose"].shape == (1, 32, 17, 3)
    # The element is frames 10..19 of the event clip, whose frame t has brightness 4 t.
    start, count, _ = ds._video_frames(1, ds.records[1])
    assert (start, count) == (10, 10)
    frames = ds._read(ds.records[1], np.arange(count) + start)
    assert np.abs(frames.mean(axis=(1, 2, 3)) - 4 * np.arange(10, 20)).max() < 3


def test_gym_rawframe_list_reads_frame_folders(tmp_path):
    from PIL import Image

    root = tmp_path / "gym"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "label_map_gym99.txt").write_text("(VT) a\n(UB) b\n")
    name = "yt_000001_000009_0002_0004"
    (root / "annotations" / "vba_gym99_gym_val_list_rawframes.txt").write_text(f"{name} 5 1\n")
    folder = root / "subaction_frames" / name
    folder.mkdir(parents=True)
    for i in range(1, 6):
        Image.fromarray(np.full((20, 30, 3), 40 * i, np.uint8)).save(folder / f"img_{i:05d}.jpg")
    save_pyskl(tmp_path / "p.pkl", [_pose_ann("yt_E_000001_000009_A_0002_0004", 1, frames=5)])
    ds = build_dataset("gym99", "val", root=root, pose_file=tmp_path / "p.pkl", image_size=16, num_video_frames=4,
                       num_pose_frames=8)  # fmt: skip
    assert ds.records[0].frames_dir == folder and ds.coarse == ["vault", "uneven bars"]
    assert ds[0]["video"].shape == (1, 4, 3, 16, 16)


def test_diving48_official_json_and_vocab(tmp_path):
    root = tmp_path / "diving48"
    (root / "videos").mkdir(parents=True)
    vocab = [["Back", "15som", "05Twis", "FREE"], ["Inward", "Dive", "NoTwis", "PIKE"]]
    (root / "Diving48_vocab.json").write_text(json.dumps(vocab))
    entries = [{"vid_name": "abc_00001", "label": 1, "start_frame": 0, "end_frame": 20}]
    (root / "Diving48_V2_test.json").write_text(json.dumps(entries))
    _video(root / "videos" / "abc_00001.mp4")
    save_pyskl(tmp_path / "p.pkl", [_pose_ann("abc_00001", 1, frames=24)])
    ds = build_dataset("diving48", "test", root=root, pose_file=tmp_path / "p.pkl")
    assert ds.classes == ["back takeoff, 1.5 somersaults, 0.5 twist, free position",
                          "inward takeoff, dive, no twist, pike position"]  # fmt: skip
    assert ds.coarse == ["diving", "diving"] and ds.labels == [1]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"vid_name": "abc_00001", "label": 7}]))
    with pytest.raises(PevlError, match="unknown class 7"):
        build_dataset("diving48", "test", root=root, pose_file=tmp_path / "p.pkl", list_file=bad)


def test_missing_inputs_give_one_line_errors_naming_the_file(tmp_path, synthetic_root):
    root = tmp_path / "diving48"
    root.mkdir()
    with pytest.raises(PevlError, match="no Diving48 train split file"):
        build_dataset("diving48", "train", root=root)
    (root / "label_map_diving48.txt").write_text("Back+15som+05Twis+FREE\n")
    (root / "diving48_train_list_videos.txt").write_text("0/x.mp4 0\n0/y.mp4 0\n")
    with pytest.raises(PevlError, match=r"2 of 2 listed videos were not found .*first: 0/x.mp4"):
        build_dataset("diving48", "train", root=root)
    with pytest.raises(PevlError, match="unknown option"):
        build_dataset("synthetic", "train", root=synthetic_root, list_fle="x")
    with pytest.raises(PevlError, match="dataset folder of haa500 not found"):
        build_dataset("haa500", "train", root=tmp_path / "nowhere")


def test_pose_file_lacking_entries_names_the_first_video(tmp_path, synthetic_root):
    save_pyskl(tmp_path / "partial.pkl", [_pose_ann("000_0000", 0, frames=16)])
    with pytest.raises(PevlError, match=r"lacks poses for 3 of 4 videos \(first: videos/0/000_0001\)"):
        build_dataset("synthetic", "train", root=synthetic_root, pose_file=tmp_path / "partial.pkl")


def test_the_main_person_is_kept(tmp_path, synthetic_root):
    anns = []
    for line in (synthetic_root / "val.txt").read_text().split():
        if line.endswith(".mp4"):
            ann = _pose_ann(Path(line).stem, 0, frames=16, persons=2)
            ann["keypoint"][1] += 5.0  # person 1 sits 5 px lower and is the confident one
            ann["keypoint_score"][0] = 0.2
            anns.append(ann)
    save_pyskl(tmp_path / "two.pkl", anns)
    ds = build_dataset("synthetic", "val", root=synthetic_root, pose_file=tmp_path / "two.pkl", use_video=False)
    pose = ds.poses.get(ds.records[0])
    np.testing.assert_array_equal(pose.keypoint, anns[0]["keypoint"][1])
    assert (ds[0]["pose"][..., 2] == 1).all()


def test_poses_from_the_extract_poses_cache(tmp_path):
    from pevl.data.pose.base import PoseSequence
    from pevl.data.pose.cache import PoseCache

    root = tmp_path / "clips"
    for label, cls in enumerate(("jump_high", "sit_down")):
        (root / cls).mkdir(parents=True)
        _video(root / cls / "a.mp4", frames=12, value=label * 50)
    cache = tmp_path / "cache"
    for video in sorted(root.rglob("*.mp4"))[:1]:
        ann = _pose_ann("x", 0, frames=12)
        PoseCache(cache).put(video, PoseSequence(ann["keypoint"], ann["keypoint_score"], (32, 32), 25.0))
    with pytest.raises(PevlError, match=r"lacks poses for 1 of 2 videos \(first: sit_down/a\)"):
        build_dataset("video_folder", "train", root=root, pose_cache_dir=cache)
    for video in sorted(root.rglob("*.mp4"))[1:]:
        ann = _pose_ann("x", 0, frames=12)
        PoseCache(cache).put(video, PoseSequence(ann["keypoint"], ann["keypoint_score"], (32, 32), 25.0))
    ds = build_dataset("video_folder", "train", root=root, pose_cache_dir=cache, image_size=32)
    assert ds.classes == ["jump high", "sit down"] and ds.labels == [0, 1]
    assert ds[1]["pose"].shape == (1, 32, 17, 3) and ds[1]["video"].shape == (1, 8, 3, 32, 32)


def test_toyota_from_file_names_without_split_lists(tmp_path):
    root = tmp_path / "toyota"
    (root / "mp4").mkdir(parents=True)
    names = [
        "Walk_p03_r00_v01_c01",  # CS train (subject 3), CV train (camera 1)
        "Walk_p02_r00_v01_c02",  # CS test (subject 2), CV test (camera 2)
        "Cook.Stir_p25_r01_v02_c05",  # CS train; not a cross-view class
        "Pour.Fromcup_p03_r00_v01_c01",  # in no protocol's class map
        "Drink.Fromcup_p04_r00_v01_c05",  # CS train, CV validation (camera 5)
    ]
    for name in names:
        (root / "mp4" / f"{name}.mp4").write_bytes(b"")  # existence is all the split logic needs
    train = build_dataset("toyota_cs", "train", root=root, use_pose=False)
    assert [r.name for r in train.records] == [names[2], names[4], names[0]]
    assert len(train.classes) == 31 and train.classes[3] == "cook: stir" and train.labels == [3, 8, 29]
    assert [r.name for r in build_dataset("toyota_cs", "test", root=root, use_pose=False).records] == [names[1]]
    cv1 = build_dataset("toyota_cv1", "val", root=root, use_pose=False)
    assert len(cv1.classes) == 19 and [r.name for r in cv1.records] == [names[4]] and cv1.labels == [3]


def test_haa500_takes_the_last_three_clips_of_a_class_for_test(tmp_path):
    assert [haa500_split_of(i, 20) for i in range(20)].count("train") == 16
    assert haa500_split_of(16, 20) == "val" and haa500_split_of(19, 20) == "test"
    folder = tmp_path / "haa500" / "video"
    for cls in ("add_new_car_tire", "backflip"):
        (folder / cls).mkdir(parents=True)
        for i in range(20):
            (folder / cls / f"{cls}_{i:03d}.mp4").write_bytes(b"")
    test = build_dataset("haa500", "test", root=tmp_path / "haa500", use_pose=False)
    assert test.classes == ["add new car tire", "backflip"]
    assert [r.video.name for r in test.records[:3]] == [f"add_new_car_tire_{i:03d}.mp4" for i in (17, 18, 19)]
    assert len(build_dataset("haa500", "train", root=tmp_path / "haa500", use_pose=False)) == 32


def test_kinetics_csv_names_clips_by_id_and_time(tmp_path):
    root = tmp_path / "kinetics400"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "train.csv").write_text(
        "label,youtube_id,time_start,time_end,split,is_cc\nair drumming,abc,12,22,train,0\nabseiling,xyz,0,10,train,0\n"
    )
    (root / "videos_train").mkdir()
    (root / "videos_train" / "abc_000012_000022.mp4").write_bytes(b"")
    (root / "videos_train" / "xyz_000000_000010.mp4").write_bytes(b"")
    ds = build_dataset("kinetics400", "train", root=root, use_pose=False)
    assert ds.classes == ["abseiling", "air drumming"] and ds.labels == [1, 0]
    assert ds.records[0].name == "abc_000012_000022"


def test_video_list_and_pose_only_pickle(tmp_path, shared_data):
    (tmp_path / "list.txt").write_text("clips/one.mp4 1\nclips/two.mp4 0\n")
    (tmp_path / "clips").mkdir()
    for name in ("one", "two"):
        (tmp_path / "clips" / f"{name}.mp4").write_bytes(b"")
    (tmp_path / "classes.txt").write_text("apply_eye_makeup\nblow_dry_hair\n")
    ds = build_dataset("video_list", "train", root=tmp_path, list_file=tmp_path / "list.txt", use_pose=False)
    assert ds.classes == ["apply eye makeup", "blow dry hair"] and ds.labels == [1, 0]
    ucf = build_dataset("pyskl", "test", pose_file=shared_data / "skeleton" / "ucf101_apply_eye_makeup_pyskl.pkl",
                        use_video=False)  # fmt: skip
    assert len(ucf) == 1 and ucf.classes == ["class 0"]
    pose = ucf[0]["pose"]
    assert pose.shape == (1, 32, 17, 3) and pose[..., :2].abs().max() <= 1.5
    with pytest.raises(PevlError, match="no videos"):
        build_dataset("pyskl", "test", pose_file=shared_data / "skeleton" / "ucf101_apply_eye_makeup_pyskl.pkl")


def test_pickle_in_another_layout_needs_pose_layout(tmp_path, synthetic_root):
    anns = []
    for line in (synthetic_root / "val.txt").read_text().split():
        if line.endswith(".mp4"):
            ann = _pose_ann(Path(line).stem, 0, frames=16)
            ann["keypoint"] = ann["keypoint"][:, :, :15]
            ann["keypoint_score"] = ann["keypoint_score"][:, :, :15]
            anns.append(ann)
    path = tmp_path / "jhmdb.pkl"
    path.write_bytes(pickle.dumps(anns))
    ds = build_dataset("synthetic", "val", root=synthetic_root, pose_file=path, use_video=False)
    with pytest.raises(PevlError, match="pose_layout"):
        ds[0]
    ds = build_dataset("synthetic", "val", root=synthetic_root, pose_file=path, use_video=False, pose_layout="jhmdb15")
    pose = ds[0]["pose"]
    assert pose.shape == (1, 32, 17, 3) and (pose[0, :, 1:5, 2] == 0).all()  # JHMDB has no eyes or ears
