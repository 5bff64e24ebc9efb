"""Robustness to missing detections: JHMDB models evaluated with frames or joints reported as "nobody found".

Takes the runs of ``benchmarks/jhmdb_pose_text.py`` (their work dirs) and evaluates each on corrupted copies of its
test split: a seeded 25% or 50% of every test clip's frames, or 2 random joints of every frame, set to what a pose
extractor writes when it finds nobody (score 0; the coordinates are set to a fixed far-off value, which a model that
masks missing joints must ignore whatever it is).

Usage::

    python benchmarks/jhmdb_robustness.py --work-dir work_dirs/jhmdb/split1 [--name after] [--seeds 0 1 2]

Writes its table to ``docs/results.md`` (section ``jhmdb_robustness_<name>``) and prints it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from _report import write_section
from pevl.data.pose.pyskl import load_pyskl, save_pyskl
from pevl.engine.checkpoint import find_latest
from pevl.engine.evaluate import run_evaluation

ROOT = Path(__file__).resolve().parents[1]
CORRUPTIONS = {
    "clean": None,
    "25% of frames missing": ("frames", 0.25),
    "50% of frames missing": ("frames", 0.5),
    "2 joints per frame missing": ("joints", 2),
}
MISSING_XY = 7.0  # pixel value written where nobody is found; a masking model must not depend on it


def corrupt(annotations: list[dict], test_names: set[str], kind: str, amount: float, seed: int) -> list[dict]:
    """Copies of the annotations whose test clips have frames (or joints) reported as not found."""
    rng = np.random.default_rng(seed)
    out = []
    for ann in annotations:
        ann = dict(ann)
        if ann["frame_dir"] in test_names:
            keypoint, score = ann["keypoint"].copy(), ann["keypoint_score"].copy()
            frames, joints = score.shape[1], score.shape[2]
            if kind == "frames":
                lost = rng.choice(frames, size=int(round(amount * frames)), replace=False)
                keypoint[:, lost], score[:, lost] = MISSING_XY, 0.0
            else:
                for t in range(frames):
                    lost = rng.choice(joints, size=int(amount), replace=False)
                    keypoint[:, t, lost], score[:, t, lost] = MISSING_XY, 0.0
            ann["keypoint"], ann["keypoint_score"] = keypoint, score
        out.append(ann)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", default=str(ROOT / "work_dirs" / "jhmdb" / "split1"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--name", default="after", help="label of this set of runs (before / after a change)")
    parser.add_argument("--no-write", action="store_true", help="do not update docs/results.md")
    args = parser.parse_args()

    work = Path(args.work_dir)
    pickles = sorted((work / "data").glob("jhmdb_split*.pkl"))
    if not pickles:
        raise SystemExit(f"{work}: no converted JHMDB pickle; run benchmarks/jhmdb_pose_text.py first")
    data = load_pyskl(pickles[0])
    test_names = set(data["split"]["test"])
    results: dict[str, list[float]] = {name: [] for name in CORRUPTIONS}
    for name, spec in CORRUPTIONS.items():
        pose_file = pickles[0]
        if spec is not None:
            pose_file = work / "data" / f"corrupt_{spec[0]}_{spec[1]}.pkl"
            save_pyskl(pose_file, corrupt(data["annotations"], test_names, *spec, seed=123), data["split"])
        for seed in args.seeds:
            run = work / f"seed{seed}"
            last = find_latest(run)  # the last epoch's weights, as in the clean benchmark: never a pick on test
            metrics = run_evaluation(
                last, overrides=[f"data.pose_file={pose_file}"], out_dir=run / f"eval_{name.replace(' ', '_')}",
                progress=False,
            ).metrics  # fmt: skip
            results[name].append(100 * metrics["top1"])
            print(f"{args.name}: seed {seed}, {name}: top-1 {results[name][-1]:.1f}%", flush=True)
    rows = "\n".join(
        f"| {name} | {np.mean(v):.1f} +- {np.std(v):.1f} | {' / '.join(f'{x:.1f}' for x in v)} |"
        for name, v in results.items()
    )
    body = f"""### Missing detections, {args.name}

`python benchmarks/jhmdb_robustness.py --name {args.name}`: the JHMDB split-1 models above, evaluated with test
frames or joints reported as "nobody found" (score 0, coordinates set to a far-off value).

| test input | top-1 (mean +- std over seeds) | per seed |
|---|---|---|
{rows}
"""
    print(body)
    if not args.no_write:
        write_section(ROOT / "docs" / "results.md", f"jhmdb_robustness_{args.name}", body, title="# Results")


if __name__ == "__main__":
    main()
