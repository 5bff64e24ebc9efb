"""The command examples of README.md and docs/ against the code, so the two cannot drift apart.

Every ``pevl`` command in a fenced shell block is parsed by the real ``pevl`` parser (each documented flag exists and
takes the value shown), every ``--set`` / ``-c`` combination loads as a run config (each key exists, each value has
its type), and every ``python benchmarks/...`` example names a script and flags that exist. The slow tests run the
commands themselves on tiny stand-ins: the README's "Your own videos" section exactly as written (on a class folder
of real clips), and the evaluation, prediction, export and profiling examples on a tiny trained work dir.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`([^`\n]+)`")
OPERATORS = {"|", "||", "&&", ";", "&", ">", "<", ">>"}


def shell_commands(text: str) -> Iterator[list[str]]:
    """The simple commands of the fenced shell blocks of a Markdown text, as argument lists (comments dropped)."""
    for match in FENCE.finditer(text):
        if match.group(1) not in ("bash", "sh", "shell", "console", ""):
            continue
        body = match.group(2).replace("\\\n", " ")
        for line in body.splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|<>")
            lexer.whitespace_split = True
            lexer.commenters = "#"
            try:
                tokens = list(lexer)
            except ValueError:  # not shell (e.g. an output sample with an apostrophe)
                continue
            command: list[str] = []
            for token in [*tokens, ";"]:
                if token in OPERATORS:
                    if command:
                        yield command
                    command = []
                else:
                    command.append(token)


def pevl_arguments(command: list[str]) -> list[str] | None:
    """The arguments after ``pevl`` (also ``python -m pevl`` and ``torchrun ... -m pevl``), else ``None``."""
    if command[0] == "pevl":
        return command[1:]
    for i in range(len(command) - 1):
        if command[i : i + 2] == ["-m", "pevl"] and command[0] in ("python", "python3", "torchrun"):
            return command[i + 2 :]
    return None


def documented(kind: str) -> list[tuple[str, list[str]]]:
    """``(file name, arguments)`` of every documented command of a kind (``pevl`` or ``benchmarks``)."""
    found = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for command in shell_commands(text):
            if "..." in command or any(re.fullmatch(r"\[.*|.*\]", word) for word in command):
                continue  # a synopsis with placeholders, not an example
            if kind == "pevl" and (args := pevl_arguments(command)) is not None:
                found.append((path.name, args))
            elif kind == "benchmarks" and len(command) > 1 and command[1].startswith("benchmarks/"):
                found.append((path.name, command[1:]))
        if kind == "benchmarks":  # benchmark commands are also quoted inline in the prose
            for span in INLINE.findall(text):
                words = span.split()
                if len(words) > 1 and words[0] == "python" and words[1].startswith("benchmarks/"):
                    found.append((path.name, words[1:]))
    return found


PEVL_EXAMPLES = documented("pevl")
BENCHMARK_EXAMPLES = documented("benchmarks")


def test_the_docs_have_examples_to_check():
    commands = {args[0] for _, args in PEVL_EXAMPLES}
    assert {"train", "eval", "predict", "explain", "export", "extract-poses", "download-weights"} <= commands
    assert len(PEVL_EXAMPLES) >= 30 and len(BENCHMARK_EXAMPLES) >= 5


def test_shell_blocks_are_split_like_a_shell():
    text = "```bash\npevl predict a.mp4 --labels \"x;y\" --json   # note\nffmpeg -i f - | pevl predict - -k C\n```\n"
    assert list(shell_commands(text)) == [
        ["pevl", "predict", "a.mp4", "--labels", "x;y", "--json"],
        ["ffmpeg", "-i", "f", "-"],
        ["pevl", "predict", "-", "-k", "C"],
    ]


def strict_parser():  # noqa: ANN201
    """The ``pevl`` parser without abbreviated options: ``--view`` must not pass for ``--views``."""
    from pevl.cli import build_parser

    parser = build_parser()
    parser.allow_abbrev = False
    for action in parser._subparsers._group_actions:  # type: ignore[union-attr]
        for sub in action.choices.values():
            sub.allow_abbrev = False
    return parser


@pytest.mark.parametrize(("doc", "args"), PEVL_EXAMPLES, ids=[f"{d}:{' '.join(a)[:60]}" for d, a in PEVL_EXAMPLES])
def test_every_documented_pevl_command_parses(doc, args, capsys):
    try:
        parsed = strict_parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"{doc}: `pevl {shlex.join(args)}` is refused: {capsys.readouterr().err.strip()}")
    assert callable(parsed.func)


@pytest.mark.parametrize(("doc", "args"), PEVL_EXAMPLES, ids=[f"{d}:{' '.join(a)[:60]}" for d, a in PEVL_EXAMPLES])
def test_every_documented_config_change_loads(doc, args, monkeypatch):
    from pevl.cli import build_parser
    from pevl.engine.config import load_config

    if args[0] != "train":
        return
    parsed = build_parser().parse_args(args)
    monkeypatch.chdir(ROOT)
    if parsed.config is None and not parsed.overrides:
        return
    load_config(parsed.config, parsed.overrides)  # raises on an unknown key or a wrongly typed value


@pytest.mark.parametrize(("doc", "args"), BENCHMARK_EXAMPLES, ids=[f"{d}:{' '.join(a)}" for d, a in BENCHMARK_EXAMPLES])
def test_every_documented_benchmark_flag_exists(doc, args):
    script = ROOT / args[0]
    assert script.is_file(), f"{doc}: {args[0]} does not exist"
    source = script.read_text(encoding="utf-8")
    for flag in (a for a in args[1:] if a.startswith("--")):
        assert re.search(rf"""["']{re.escape(flag)}["']""", source), f"{doc}: {args[0]} has no option {flag}"


# ---- the commands themselves, on tiny stand-ins ---------------------------------------------------------------------

TINY_MODEL = [
    "model.overrides.num_video_frames=2",
    "model.overrides.num_pose_frames=8",
    "data.batch_size=2",
    "data.num_workers=0",
    "optim.epochs=2",
]
"""Appended to the README's own ``--set``: the tiny default model with few frames (the README's model is tiny too)."""

OWN_CLASSES = {
    "squat_correct": ["k400_tai_chi.mp4", "k400_clean_and_jerk.mp4", "ucf101_apply_eye_makeup.avi"],
    "squat_incorrect": ["k400_archery.avi", "k400_arm_wrestling.mp4"],
}
"""Real clips standing in for the README's squat folders (an imbalanced 3 vs 2)."""


def own_videos_commands() -> list[list[str]]:
    """The commands of the README's "Your own videos" section, in order."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Your own videos", 1)[1].split("\n## ", 1)[0]
    return [c for c in shell_commands(section) if c and c[0] == "pevl"]


def run_pevl(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pevl", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def make_class_folder(shared_data: Path, root: Path, frames: int = 16) -> dict[str, str]:
    """A class folder of the first ``frames`` frames of real clips (re-encoded: short, so the test is quick)."""
    from pevl.data.synthetic.writer import encode_video
    from pevl.data.video import read_frames

    classes = {}
    for cls, names in OWN_CLASSES.items():
        (root / cls).mkdir(parents=True)
        for name in names:
            clip = read_frames(shared_data / "videos" / name, list(range(frames)))
            encode_video(root / cls / f"{Path(name).stem}.mp4", clip, fps=25.0)
            classes[f"{cls}/{Path(name).stem}"] = cls
    return classes


def test_the_own_videos_section_is_train_eval_predict():
    commands = own_videos_commands()
    assert [c[:2] for c in commands] == [["pevl", "train"], ["pevl", "eval"], ["pevl", "predict"]]
    assert "data.dataset=video_folder" in commands[0] and "data.root=my_videos" in commands[0]


@pytest.mark.slow
def test_own_videos_section_as_written(shared_data, tmp_path):
    """README "Your own videos": train (estimating poses itself), eval, predict; validation never on training clips."""
    root = tmp_path / "my_videos"
    make_class_folder(shared_data, root)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "PEVL_CACHE": str(tmp_path / "c")}
    train, evaluate, predict = own_videos_commands()
    new_clip = tmp_path / "new_clip.mp4"
    new_clip.write_bytes((root / "squat_correct" / "k400_tai_chi.mp4").read_bytes())

    done = run_pevl([*train[1:], *TINY_MODEL, "--no-progress"], tmp_path, env)
    assert done.returncode == 0, done.stderr
    work = tmp_path / "work_dirs" / "squats"
    log = (work / "train.log").read_text()
    assert "estimating the poses of 5 of 5 videos" in done.stderr  # no extract-poses step was needed
    assert "held out" in done.stderr and "validation split:" in log and "held out" in log
    assert "data.balance_classes" in log  # 3 vs 2: oversampled
    assert "mean class" in done.stdout and "mean_class_accuracy" in log

    from pevl.data.datasets import build_dataset

    options = {"root": root, "use_pose": False, "num_video_frames": 2}
    train_names = {r.name for r in build_dataset("video_folder", "train", **options).records}
    val_names = {r.name for r in build_dataset("video_folder", "val", **options).records}
    assert train_names and val_names and not train_names & val_names
    assert {n.split("/")[0] for n in val_names} == set(OWN_CLASSES)  # a share of every class

    done = run_pevl(evaluate[1:], tmp_path, env)
    assert done.returncode == 0, done.stderr
    assert "checkpoint: " in done.stderr and "mean class" in done.stdout
    report = Path(done.stdout.split("report: ")[1].strip())
    metrics = json.loads((tmp_path / report / "metrics.json").read_text())
    assert metrics["num_samples"] == len(val_names) and "held out" in metrics["split_note"]
    assert "mean_class_accuracy" in metrics

    done = run_pevl([*predict[1:], "--json"], tmp_path, env)
    assert done.returncode == 0, done.stderr
    top = json.loads(done.stdout)
    assert {p["label"] for p in top["top_k"]} == {"squat correct", "squat incorrect"}
    assert top["checkpoint"] == metrics["checkpoint"]  # predict reads the checkpoint eval read


@pytest.fixture(scope="module")
def tiny_work_dir(tiny_checkpoint) -> Path:
    """The work dir of the shared tiny run (the README's ``work_dirs/diving48_vit_b16`` and ``CKPT``)."""
    return Path(tiny_checkpoint[0]).parents[1]


SUBSTITUTES = {"my_dive.mp4", "my_video.mp4", "routine.mp4", "clip.mp4"}
"""Video names of the examples: replaced by a real clip."""


@pytest.mark.slow
def test_documented_inference_commands_run(tiny_work_dir, shared_data, tmp_path):
    """eval, predict (labels, timeline, files) and export as documented, on the tiny run and a real clip."""
    video = shared_data / "videos" / "k400_clean_and_jerk.mp4"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    wanted = [
        ["eval", "-k", "work_dirs/diving48_vit_b16", "--views", "3x3", "--json"],
        ["predict", "my_dive.mp4", "-k", "work_dirs/diving48_vit_b16", "--top-k", "5"],
        ["predict", "my_video.mp4", "-k", "work_dirs/diving48_vit_b16", "--labels",
         "tai chi;clean and jerk;archery", "--json"],
        ["predict", "routine.mp4", "-k", "CKPT", "--window", "2", "--stride", "1", "--out-json", "t.json",
         "--out-csv", "t.csv", "--out-video", "annotated.mp4"],
    ]  # fmt: skip
    for args in wanted:
        assert ("README.md", args) in PEVL_EXAMPLES, f"the README no longer shows `pevl {shlex.join(args)}`"
        real = [
            str(tiny_work_dir) if a in ("work_dirs/diving48_vit_b16", "CKPT") else str(video) if a in SUBSTITUTES
            else a for a in args
        ]  # fmt: skip
        done = run_pevl(real, tmp_path, env)
        assert done.returncode == 0, f"pevl {shlex.join(args)}: {done.stderr}"
        assert "checkpoint: " in done.stderr  # the work dir's checkpoint is named
    assert json.loads((tmp_path / "t.json").read_text())
    assert (tmp_path / "t.csv").stat().st_size > 0 and (tmp_path / "annotated.mp4").stat().st_size > 0


@pytest.mark.slow
def test_documented_profile_and_synthetic_commands_run(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    done = run_pevl(["profile", "pevl_vit_b16", "--video-frames", "32", "--pose-frames", "32"], tmp_path, env)
    assert done.returncode == 0, done.stderr
    args = ["make-synthetic", "data/synthetic", "--classes", "8", "--per-class", "16"]
    assert any(a[: len(args)] == args for _, a in documented_synopses()), "docs/datasets.md changed its example"
    done = run_pevl([*args[:2], "--classes", "2", "--per-class", "2", "--frames", "8", "--size", "32"], tmp_path, env)
    assert done.returncode == 0, done.stderr


def documented_synopses() -> list[tuple[str, list[str]]]:
    """Every documented ``pevl`` command, synopses with ``[optional]`` parts included."""
    found = []
    for path in DOCS:
        for command in shell_commands(path.read_text(encoding="utf-8")):
            if (args := pevl_arguments(command)) is not None:
                found.append((path.name, args))
    return found
