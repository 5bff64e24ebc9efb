"""MMAction2 list options in `extract-poses`: offsets, listed frame counts, start_index, multi-label, repeats."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pevl.cli import main as cli_main
from pevl.data.datasets.lists import parse_video_list
from pevl.data.pose.extract import extract_poses, read_video_list
from pevl.data.pose.pyskl import load_pyskl
from pevl.errors import PevlError
from test_pose_sharding import stub  # noqa: F401  (the fixture registering the stand-in backend)

pytestmark = pytest.mark.usefixtures("stub")

LEVELS = [20 + 10 * i for i in range(10)]  # frame file n (1..10) is a uniform grey of LEVELS[n - 1]


def frames_folder(root: Path, name: str = "imgs", first: int = 1) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    for n, level in enumerate(LEVELS, first):
        Image.fromarray(np.full((16, 16, 3), level, np.uint8)).save(folder / f"img_{n:05d}.png")
    return folder


def levels_of(annotation: dict) -> list[int]:
    """The grey level each pose frame was estimated on (the stand-in backend puts joint 0 at x = level / 16)."""
    return [round(float(x) * 16) for x in annotation["keypoint"][0, :, 0, 0]]


def run(tmp_path: Path, text: str, *options: str) -> int:
    listing = tmp_path / "list.txt"
    listing.write_text(text)
    out = tmp_path / "out.pkl"
    if out.exists():
        out.unlink()
    return cli_main(["extract-poses", str(listing), "-o", str(out), "--backend", "stub", "--no-progress",
                     "--no-fill", "--cache-dir", str(tmp_path / "cache"), *options])  # fmt: skip


def test_offset_lines_are_refused_as_ambiguous_or_read_as_mmaction2_does(tmp_path, capsys):
    frames_folder(tmp_path)
    assert run(tmp_path, "imgs 2 5 127\n") == 2
    err = capsys.readouterr().err.strip()
    assert "line 1: '2 5 127' after the folder" in err and "--with-offset" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out.pkl").exists()
    assert run(tmp_path, "imgs 2 5 127\n", "--with-offset") == 0
    (ann,) = load_pyskl(tmp_path / "out.pkl")["annotations"]
    assert ann["label"] == 127 and ann["total_frames"] == 5
    assert levels_of(ann) == LEVELS[2:7]  # files 3..7: offset 2 after the first file, 5 frames
    assert run(tmp_path, "imgs 2 5 127\n", "--multi-class") == 0  # frame count 2, labels 5 and 127
    (ann,) = load_pyskl(tmp_path / "out.pkl")["annotations"]
    assert ann["label"] == 5 and levels_of(ann) == LEVELS[:2]


def test_listed_frame_counts_and_start_index_are_honoured(tmp_path, capsys):
    frames_folder(tmp_path)
    assert run(tmp_path, "imgs 4 3\n") == 0
    (ann,) = load_pyskl(tmp_path / "out.pkl")["annotations"]
    assert ann["total_frames"] == 4 and levels_of(ann) == LEVELS[:4] and ann["label"] == 3
    assert run(tmp_path, "imgs 1 4 3\n", "--with-offset", "--start-index", "2") == 0  # files 3..6
    assert levels_of(load_pyskl(tmp_path / "out.pkl")["annotations"][0]) == LEVELS[2:6]
    assert run(tmp_path, "imgs 4 3\nimgs2 4 1\n", "--start-index", "0") == 2  # no file 0: nothing processed
    assert "frame file number 0 is missing" in capsys.readouterr().err
    assert run(tmp_path, "imgs 12 3\n") == 2
    assert "the list gives 12 frames from number 1, the folder has 10 numbered 1..10" in capsys.readouterr().err


def test_clips_of_one_folder_are_separate_videos_with_their_own_cache_entries(tmp_path):
    frames_folder(tmp_path)
    assert run(tmp_path, "imgs 0 4 1\nimgs 4 6 2\n", "--with-offset") == 0
    data = load_pyskl(tmp_path / "out.pkl")
    assert [a["frame_dir"] for a in data["annotations"]] == ["imgs_0-3", "imgs_4-9"]
    assert [levels_of(a) for a in data["annotations"]] == [LEVELS[:4], LEVELS[4:]]
    assert data["split"]["list"] == ["imgs_0-3", "imgs_4-9"]
    again = extract_poses(tmp_path / "list.txt", tmp_path / "again.pkl", backend="stub", cache_dir=tmp_path / "cache",
                          progress=False, list_options={"with_offset": True}, max_gap=0)  # fmt: skip
    assert again.cached == 2 and again.extracted == 0
    assert (tmp_path / "again.pkl").read_bytes() == (tmp_path / "out.pkl").read_bytes()  # each clip its own entry


def test_repeated_lines_count_once_with_a_warning_and_conflicting_repeats_are_refused(tmp_path):
    frames_folder(tmp_path)
    frames_folder(tmp_path, "other")
    listing = tmp_path / "list.txt"
    listing.write_text("imgs 10 1\nother 10 2\nimgs 10 1\n")
    with pytest.warns(UserWarning, match=r"1 repeated lines dropped.*line 3 repeats line 1"):
        items = read_video_list(listing)
    assert [i.frame_dir for i in items] == ["imgs", "other"]
    with pytest.warns(UserWarning, match="repeated"):
        extract_poses(listing, tmp_path / "o.pkl", backend="stub", cache_dir=tmp_path / "c", progress=False)
    assert load_pyskl(tmp_path / "o.pkl")["split"]["list"] == ["imgs", "other"]
    listing.write_text("a.mp4 1\nb.mp4 2\na.mp4 4\n")
    with pytest.raises(PevlError, match=r"line 3: a.mp4 is listed again with labels \[4\] \(line 1 gives \[1\]\)"):
        parse_video_list(listing)
    listing.write_text("a.mp4 1\na.mp4 1\n")
    assert len(parse_video_list(listing, dedupe=False)) == 2


def test_placeholder_label_for_pyskl_pipelines(tmp_path):
    frames_folder(tmp_path)
    assert run(tmp_path, "imgs 10\n") == 0
    with open(tmp_path / "out.pkl", "rb") as f:
        assert "label" not in pickle.load(f)["annotations"][0]  # as PYSKL's own tool writes it
    assert run(tmp_path, "imgs 10\n", "--placeholder-label", "-1") == 0
    with open(tmp_path / "out.pkl", "rb") as f:
        assert pickle.load(f)["annotations"][0]["label"] == -1  # what Collect(keys=[..., 'label']) needs
    assert load_pyskl(tmp_path / "out.pkl")["annotations"][0]["label"] == -1  # pevl: still unlabelled
    assert run(tmp_path, "imgs 10 4\n", "--placeholder-label", "-1") == 0  # a real label is kept
    with open(tmp_path / "out.pkl", "rb") as f:
        assert pickle.load(f)["annotations"][0]["label"] == 4


def test_a_missing_folder_is_skipped_and_a_whole_folder_line_shares_the_folders_cache_entry(tmp_path):
    folder = frames_folder(tmp_path)
    direct = extract_poses(folder, tmp_path / "direct.pkl", backend="stub", cache_dir=tmp_path / "cache",
                           progress=False)  # fmt: skip
    assert direct.extracted == 1
    (tmp_path / "list.txt").write_text("imgs 0 10 3\ngone 2 4 1\n")
    summary = extract_poses(tmp_path / "list.txt", tmp_path / "again.pkl", backend="stub", progress=False,
                            cache_dir=tmp_path / "cache", list_options={"with_offset": True})  # fmt: skip
    assert summary.cached == 1 and summary.extracted == 0  # the listed range is the whole folder: one cache entry
    assert [f[0] for f in summary.failed] == [str(tmp_path / "gone")]  # skipped; the run goes on
    assert run(tmp_path, "imgs 0 10 3\ngone 2 4 1\n", "--with-offset") == 1  # the command: exit status 1
