"""Pose extraction at dataset scale: shards and torchrun ranks give the pickle of one process, byte for byte."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

import pevl.data.pose.base as pose_base
from pevl.cli import main as cli_main
from pevl.data.pose.base import PoseExtractor
from pevl.data.pose.extract import extract_poses
from pevl.data.pose.pyskl import load_pyskl
from pevl.data.pose.shards import parse_shard, report_path, shard_indices
from pevl.errors import PevlError

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"


class StubExtractor(PoseExtractor):
    """One person whose joints depend on the frame's grey level and the joint index; nobody on black frames."""

    name = "stub"

    def detect(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        level = float(frame.mean())
        if level < 5:
            return np.zeros((0, 17, 2), np.float32), np.zeros((0, 17), np.float32)
        # joint 0 at x = level / 16: inside the frame whatever the level (far-off coordinates are refused on load)
        joints = np.arange(17, dtype=np.float32)[:, None] + np.array([level / 16, level / 32], np.float32)
        return joints[None], np.full((1, 17), level / 255, np.float32)


def register_stub() -> None:
    pose_base.BACKENDS["stub"] = f"{__name__}:StubExtractor"


@pytest.fixture()
def stub(monkeypatch) -> str:
    monkeypatch.setitem(pose_base.BACKENDS, "stub", f"{__name__}:StubExtractor")
    return "stub"


def write_video(path: Path, levels: list[int]) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        stream.options = {"crf": "10"}
        for level in levels:
            image = np.full((32, 32, 3), level, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    """7 labelled videos of different lengths (one with a gap to fill) and one unreadable file, as a list."""
    folder = tmp_path / "videos"
    folder.mkdir()
    lines = []
    for i in range(7):
        levels = [40 + 20 * i] * (3 + i % 3)
        if i == 2:
            levels[1] = 0  # a detection gap, filled in the pickle
        write_video(folder / f"v{i}.mp4", levels)
        lines.append(f"v{i}.mp4 {i % 3}")
    (folder / "broken.mp4").write_bytes(b"not a video")
    lines.insert(4, "broken.mp4 1")
    listing = folder / "train.txt"
    listing.write_text("\n".join(lines) + "\n")
    return listing


def test_shards_are_interleaved_and_cover_the_list_once():
    parts = [shard_indices(10, k, 3) for k in range(3)]
    assert parts == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert shard_indices(2, 2, 3) == []
    assert parse_shard("2/3") == (2, 3) and parse_shard(" 0 / 1 ") == (0, 1)
    for bad in ("3/3", "1", "a/b", "0/0", "-1/3"):
        with pytest.raises(PevlError, match="--shard"):
            parse_shard(bad)


def test_three_shards_then_merge_give_the_one_process_pickle(tmp_path, dataset, stub):
    single = tmp_path / "single.pkl"
    one = extract_poses(dataset, single, backend=stub, cache_dir=tmp_path / "c1", progress=False)
    assert one.written == 7 and len(one.failed) == 1
    out = tmp_path / "sharded.pkl"
    runs = [extract_poses(dataset, out, backend=stub, cache_dir=tmp_path / "c3", progress=False, shard=(k, 3))
            for k in (0, 2)]  # fmt: skip
    assert [r.total for r in runs] == [3, 2] and not out.exists()  # shards write reports, not the pickle
    assert runs[0].out == report_path(out, 0, 3) and runs[0].out.is_file()
    with pytest.raises(PevlError, match=r"v1\.mp4: no poses yet .*shards without a report: 1/3"):
        extract_poses(dataset, out, backend=stub, cache_dir=tmp_path / "c3", progress=False, merge=True)
    assert not out.exists()
    last = extract_poses(dataset, out, backend=stub, cache_dir=tmp_path / "c3", progress=False, shard=(1, 3))
    assert last.failed and "broken.mp4" in last.failed[0][0]  # shard 1 holds list line 5 (index 4)
    merged = extract_poses(dataset, out, backend=stub, cache_dir=tmp_path / "c3", progress=False, merge=True)
    assert merged.extracted == 0 and merged.cached == 7 and merged.failed == one.failed
    assert out.read_bytes() == single.read_bytes()
    again = extract_poses(dataset, out.with_name("x.pkl"), backend=stub, cache_dir=tmp_path / "c3",
                          progress=False, shard=(2, 3))  # fmt: skip
    assert again.extracted == 0 and again.cached == 2  # a shard rerun resumes from the cache


def test_reports_of_other_inputs_are_not_used(tmp_path, dataset, stub):
    out = tmp_path / "p.pkl"
    for k in range(2):
        extract_poses(dataset, out, backend=stub, cache_dir=tmp_path / "c", progress=False, shard=(k, 2))
    dataset.write_text(dataset.read_text().replace("broken.mp4 1", "broken.mp4 2"))  # other labels: other inputs
    with pytest.raises(PevlError, match="broken.mp4: no poses yet"):
        extract_poses(dataset, out, backend=stub, cache_dir=tmp_path / "c", progress=False, merge=True)


def test_cli_shard_and_merge_and_bad_options(tmp_path, dataset, stub, capsys):
    out = tmp_path / "cli.pkl"
    base = ["extract-poses", str(dataset), "-o", str(out), "--backend", stub, "--no-progress",
            "--cache-dir", str(tmp_path / "c")]  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("pevl.cli.extract_poses._torchrun_world_size", lambda: 1)
        assert all(cli_main(base + ["--shard", f"{k}/2"]) in (0, 1) for k in range(2))
        assert cli_main(base + ["--merge"]) == 1  # the broken video is reported, the rest written
    assert len(load_pyskl(out)["annotations"]) == 7
    for extra, message in ((["--shard", "2/2"], "K must be 0 .. N-1"), (["--shard", "0/2", "--merge"], "separate")):
        assert cli_main(base + extra) == 2
        assert message in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_torchrun_ranks_with_gloo_give_the_one_process_pickle(tmp_path, dataset, stub):
    single = tmp_path / "single.pkl"
    extract_poses(dataset, single, backend=stub, cache_dir=tmp_path / "c1", progress=False)
    out = tmp_path / "ranks.pkl"
    argv = ["extract-poses", str(dataset), "-o", str(out), "--backend", "stub", "--no-progress",
            "--cache-dir", str(tmp_path / "c2"), "--wait-timeout", "5"]  # fmt: skip
    code = (f"import sys; sys.path[:0] = [{str(TESTS)!r}, {str(SRC)!r}]; import test_pose_sharding as t; "
            f"t.register_stub(); from pevl.cli import main; sys.exit(main({argv!r}))")  # fmt: skip
    port = _free_port()
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}  # fmt: skip
        procs.append(subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))  # fmt: skip
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [1, 0], outputs  # rank 0 reports the broken video of rank 0's share
    assert "rank 1/2: 4/4 videos written" in outputs[1]
    assert out.read_bytes() == single.read_bytes()
