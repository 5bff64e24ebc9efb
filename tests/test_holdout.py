"""Datasets without a split hold out a seeded share of each class; class-balanced sampling; poses a run lacks."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from pevl.data.datasets.balance import balance_note, oversample_classes
from pevl.data.datasets.holdout import held_out_keys
from pevl.data.datasets.registry import DATASETS
from pevl.errors import PevlError


def class_folder(root: Path, counts: dict[str, int]) -> Path:
    """Empty ``.mp4`` files in class folders: enough for the builders, which do not decode."""
    for cls, count in counts.items():
        (root / cls).mkdir(parents=True)
        for i in range(count):
            (root / cls / f"{cls}_{i:02d}.mp4").write_bytes(b"")
    return root


def build(name: str, split: str, root: Path | None, **options):
    return DATASETS[name](name, split, root, options)


def test_a_class_folder_without_splits_holds_out_a_share_of_every_class(tmp_path, capsys):
    root = class_folder(tmp_path / "videos", {"squat_correct": 6, "squat_incorrect": 3, "lunge": 10})
    train, val, test = (build("video_folder", s, root) for s in ("train", "val", "test"))
    train_names, val_names = {r.name for r in train.records}, {r.name for r in val.records}
    assert not train_names & val_names and len(train_names | val_names) == 19
    assert {r.name for r in test.records} == val_names  # test reads the held-out share too
    assert Counter(r.label for r in val.records) == {0: 2, 1: 1, 2: 1}  # 20 % of 10, 6 and 3 (at least 1)
    assert val.split_note == train.split_note and "4 of its 19 videos" in val.split_note
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and str(root) in warnings[0] and "held out" in warnings[0]
    again = build("video_folder", "val", root)
    assert {r.name for r in again.records} == val_names  # seeded


def test_the_share_and_the_seed_are_options(tmp_path):
    root = class_folder(tmp_path / "videos", {"a": 10, "b": 10})
    half = build("video_folder", "val", root, val_fraction=0.5)
    assert len(half.records) == 10
    seeds = {frozenset(r.name for r in build("video_folder", "val", root, split_seed=s).records) for s in range(4)}
    assert len(seeds) > 1
    with pytest.raises(PevlError, match="val_fraction must be in"):
        build("video_folder", "val", root, val_fraction=1.0)
    with pytest.raises(PevlError, match="no split 'xsub_val'"):
        build("video_folder", "xsub_val", root)


def test_split_folders_are_used_as_they_are(tmp_path):
    class_folder(tmp_path / "videos" / "train", {"a": 3, "b": 3})
    class_folder(tmp_path / "videos" / "val", {"a": 1, "b": 1})
    root = tmp_path / "videos"
    assert len(build("video_folder", "train", root).records) == 6
    val = build("video_folder", "val", root)
    assert len(val.records) == 2 and val.split_note is None
    with pytest.raises(PevlError, match="no test/ folder"):
        build("video_folder", "test", root)


def test_rawframe_folders_in_class_folders_are_samples(tmp_path):
    import numpy as np
    from PIL import Image

    for cls in ("a", "b"):
        for clip in range(3):
            frames = tmp_path / "root" / cls / f"clip{clip}"
            frames.mkdir(parents=True)
            for i in range(1, 4):
                Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(frames / f"img_{i:05d}.jpg")
    train = build("video_folder", "train", tmp_path / "root")
    val = build("video_folder", "val", tmp_path / "root")
    assert len(train.records) == 4 and len(val.records) == 2
    assert all(r.frames_dir is not None and r.video is None for r in train.records)


def test_one_list_for_every_split_holds_out_a_share(tmp_path):
    root = class_folder(tmp_path / "videos", {"a": 5, "b": 5})
    lines = [f"{cls}/{cls}_{i:02d}.mp4 {label}" for label, cls in enumerate("ab") for i in range(5)]
    (tmp_path / "all.txt").write_text("\n".join(lines) + "\n")
    options = {"list_file": str(tmp_path / "all.txt"), "video_dir": str(root)}
    train, val = build("video_list", "train", root, **options), build("video_list", "val", root, **options)
    assert len(train.records) == 8 and len(val.records) == 2 and "held out" in val.split_note
    assert not {r.name for r in train.records} & {r.name for r in val.records}
    # Per-split lists (root/train.txt, root/val.txt) are used as they are.
    (root / "train.txt").write_text("\n".join(lines[:4] + lines[5:9]) + "\n")
    (root / "val.txt").write_text("\n".join([lines[4], lines[9]]) + "\n")
    assert len(build("video_list", "train", root).records) == 8
    assert build("video_list", "val", root).split_note is None


def test_held_out_keys_never_take_a_whole_class():
    items = [("a0", 0), ("b0", 1), ("b1", 1)]
    held = held_out_keys(items, fraction=0.9, seed=0)
    assert "a0" not in held and len(held & {"b0", "b1"}) == 1


# ---- class-balanced sampling -------------------------------------------------------------------------------------


def test_oversampling_gives_every_class_the_largest_count():
    labels = [0] * 7 + [1] * 3 + [2] * 2
    samples = [f"s{i}" for i in range(len(labels))]
    out = oversample_classes(samples, labels, seed=1)
    assert out[: len(samples)] == samples  # the originals first, in order
    label_of = dict(zip(samples, labels, strict=True))
    assert Counter(label_of[s] for s in out) == {0: 7, 1: 7, 2: 7}
    per_sample = Counter(out)
    assert max(per_sample[s] for s in samples if label_of[s] == 1) - min(
        per_sample[s] for s in samples if label_of[s] == 1
    ) <= 1  # repeats spread evenly
    assert out == oversample_classes(samples, labels, seed=1)  # seeded
    assert oversample_classes(samples[:4], [0, 0, 1, 1]) == samples[:4]  # balanced already: unchanged
    assert "12 training samples oversampled to 21" in balance_note(labels, [label_of[s] for s in out])


@pytest.mark.slow
def test_train_with_balanced_classes_sees_each_class_equally(synthetic_set, tmp_path):
    from pevl.engine.config import load_config
    from pevl.engine.train import Trainer
    from train_helpers import TINY_RUN

    cfg = load_config(None, [*TINY_RUN, f"data.root={synthetic_set}", "data.balance_classes=true"])
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    counts = Counter(trainer.train_set.labels)
    assert len(set(counts.values())) == 1 and len(trainer.sampler) == sum(counts.values())
    trainer.logger.close()
    assert "data.balance_classes" in (tmp_path / "run" / "train.log").read_text()


# ---- poses a run on videos lacks ---------------------------------------------------------------------------------


def test_missing_poses_without_estimation_print_the_command(tmp_path):
    from pevl.engine.config import load_config
    from pevl.engine.pose_prep import ensure_poses

    root = class_folder(tmp_path / "videos", {"a": 2, "b": 2})
    cfg = load_config(None, ["data.dataset=video_folder", f"data.root={root}", "data.estimate_poses=false"])
    cache = tmp_path / "work" / "poses"
    with pytest.raises(PevlError) as err:
        ensure_poses(cfg, ["train", "val"], cache, tmp_path / "work", distributed=False, progress=False)
    message = str(err.value)
    assert "lacks poses for 4 of 4 videos" in message
    out = tmp_path / "work" / "poses.pkl"
    assert f"run `pevl extract-poses {root} --out {out} --cache-dir {cache}` first" in message
    with pytest.raises(PevlError, match="under torchrun"):
        cfg = load_config(None, ["data.dataset=video_folder", f"data.root={root}"])
        ensure_poses(cfg, ["train"], cache, tmp_path / "work", distributed=True, progress=False)
    assert not (tmp_path / "work").exists()  # a refusal writes nothing


def test_datasets_with_their_own_poses_need_no_estimation(synthetic_set, tmp_path):
    from pevl.engine.config import load_config
    from pevl.engine.pose_prep import ensure_poses

    cfg = load_config(None, [f"data.root={synthetic_set}", "data.estimate_poses=false"])
    assert ensure_poses(cfg, ["train", "val"], tmp_path / "c", tmp_path / "w", False, False) == 0
