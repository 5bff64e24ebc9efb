"""``pevl explain``: the paper's attention figures for any video, and an ``index.html`` that shows them.

Writes to the output folder: ``spatial.png`` (Fig. 8), ``grouping.png`` (Fig. 9), ``temporal.png`` (Fig. 10),
``concepts.png`` (Fig. 11), ``compare.png`` (Fig. 12, with a second checkpoint of the VL baseline), ``timeline.png``
(sliding-window actions over the whole video), ``explain.json`` (the numbers behind them) and ``index.html``.
Figures a model cannot have (no UCMR in the VL baseline, say) are left out with a note on the page.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pevl.apps.attention import Explanation, explain_clip
from pevl.apps.inference import prepare_clip
from pevl.apps.stream import run_timeline
from pevl.apps.timeline import plot_timeline
from pevl.engine.builder import load_trained_model
from pevl.engine.evaluate import check_finite_scores, check_finite_weights
from pevl.utils.io import atomic_open, write_json
from pevl.viz.figures import plot_concepts, plot_grouping, plot_spatial, plot_temporal

CAPTIONS = {
    "spatial.png": "Spatial attention (Fig. 8): joints drawn larger and darker where P2V-R attends more; below, the "
    "P2V-R attention over the image patches (brighter = more).",
    "grouping.png": "Background-token grouping (Fig. 9): every patch coloured by the V2P-R grouping token (17 joints "
    "+ the background token) with the highest assignment score.",
    "temporal.png": "Temporal attention (Fig. 10): attention over the sampled frames for the predicted class.",
    "concepts.png": "Semantic concept attention (Fig. 11): each phrase of the predicted label over the frames (mean "
    "over the phrase's words).",
    "compare.png": "VL baseline vs PeVL (Fig. 12): temporal attention of both models on the same clip.",
    "timeline.png": "Action timeline: the top-1 action of sliding windows over the whole video (height = its "
    "probability) and the merged segments below, as pevl predict --timeline computes them.",
}
OUTPUT_FILES = (*CAPTIONS, "explain.json", "index.html")
"""Every file ``pevl explain`` may write in its output folder."""


@dataclass
class ExplainResult:
    """What ``explain_video`` wrote."""

    out_dir: Path
    files: list[str] = field(default_factory=list)  # figure file names, in page order
    explanation: Explanation | None = None
    comparison: Explanation | None = None
    warnings: list[str] = field(default_factory=list)  # content problems of the video, one line each


def _numbers(expl: Explanation) -> dict[str, Any]:
    def array(value: Any) -> Any:
        return None if value is None else value.round(6).tolist()

    return {
        "model": expl.model_name,
        "predicted": expl.predicted_label,
        "top_k": [{"label": label, "probability": round(p, 6)} for label, p in expl.top_k(5)],
        "frame_numbers": expl.frame_numbers.tolist(),
        "joint_weights": array(expl.joint_weights),
        "patch_heat": array(expl.patch_heat),
        "grouping": None if expl.grouping is None else expl.grouping.tolist(),
        "temporal": array(expl.temporal),
        "temporal_frames": expl.temporal_frames.tolist(),
        "temporal_source": expl.temporal_source,
        "phrases": expl.phrases,
        "phrase_attention": array(expl.phrase_attention),
        "notes": expl.notes,
    }


def write_index(out_dir: Path, video: str, result: ExplainResult, top_k: int) -> Path:
    """The ``index.html`` page: the top-k prediction, every figure with its caption, and the notes."""
    expl = result.explanation
    assert expl is not None
    rows = "\n".join(
        f"<tr><td>{i}</td><td>{html.escape(label)}</td><td>{100 * p:.1f}%</td></tr>"
        for i, (label, p) in enumerate(expl.top_k(top_k), 1)
    )
    notes = list(expl.notes) + ([f"VL baseline: {n}" for n in result.comparison.notes] if result.comparison else [])
    note_items = "\n".join(f"<li>{html.escape(n)}</li>" for n in notes)
    figures = "\n".join(
        f'<figure><img src="{name}" alt="{name}"><figcaption>{html.escape(CAPTIONS[name])}</figcaption></figure>'
        for name in result.files
    )
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>pevl explain: {html.escape(Path(video).name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; padding: 0 1em; max-width: 1100px; color: #222;
        overflow-wrap: anywhere; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; max-width: 100%; }}
td, th {{ border: 1px solid #ccc; padding: 0.3em 0.8em; text-align: left; }}
figure {{ margin: 0 0 2em 0; }}
img {{ max-width: 100%; border: 1px solid #ddd; }}
figcaption {{ color: #555; font-size: 0.9em; margin-top: 0.3em; }}
.notes {{ background: #fff7e0; border: 1px solid #e8d48b; padding: 0.5em 1.5em; }}
</style>
</head>
<body>
<h1>{html.escape(Path(video).name)}</h1>
<p>Model: <code>{html.escape(expl.model_name)}</code>.
Predicted action: <strong>{html.escape(expl.predicted_label)}</strong>.</p>
<table><tr><th>#</th><th>action</th><th>probability</th></tr>
{rows}
</table>
{f'<div class="notes"><ul>{note_items}</ul></div>' if note_items else ""}
<p>Temporal attention: {html.escape(expl.temporal_source)}.</p>
{figures}
</body>
</html>
"""
    path = out_dir / "index.html"
    with atomic_open(path, "w") as f:
        f.write(page)
    return path


def explain_video(
    video: str | Path,
    checkpoint: str | Path,
    out_dir: str | Path,
    labels: list[str] | None = None,
    compare: str | Path | None = None,
    pose_file: str | Path | None = None,
    pose_layout: str | None = None,
    top_k: int = 5,
) -> ExplainResult:
    """Write the attention figures of a video (the library function behind ``pevl explain``).

    Args:
        video: The video file.
        checkpoint: A PeVL checkpoint (directory or ``model.safetensors``).
        out_dir: Where the figures and ``index.html`` go.
        labels: Label texts to score (default: the checkpoint's classes).
        compare: A checkpoint of the VL baseline for Fig. 12.
        pose_file: Poses of the video (PYSKL pickle); default: cache, else estimated on the fly.
        pose_layout: Joint layout of ``pose_file`` when not COCO-17.
        top_k: Predictions listed on the page.

    Returns:
        The written files and the explanations.
    """
    out = Path(out_dir)
    result = ExplainResult(out)
    explanations: list[Explanation] = []
    timeline = None
    for path in [checkpoint] + ([compare] if compare else []):
        loaded = load_trained_model(path)
        check_finite_weights(loaded.model, loaded.checkpoint.path)
        names = list(labels) if labels else loaded.classes
        coarse = None if labels else loaded.coarse
        clip = prepare_clip(video, loaded.model.config, pose_file=pose_file, pose_layout=pose_layout)
        preset = loaded.run_config.model.preset if loaded.run_config else Path(path).name
        # The compared model shows its attention for the class the first model predicts (same class, Fig. 12).
        target = None
        if explanations and explanations[0].predicted_label in names:
            target = names.index(explanations[0].predicted_label)
        explanations.append(explain_clip(loaded.model, clip, names, coarse, model_name=preset, target=target))
        check_finite_scores(explanations[-1].probabilities[None], loaded.checkpoint.path, f"{video}")
        result.warnings += [w for w in clip.warnings if w not in result.warnings]
        if timeline is None:  # the first model's timeline of the whole video
            timeline = run_timeline(video, loaded.model, names, coarse, pose_file=pose_file, pose_layout=pose_layout)
    expl = explanations[0]
    result.explanation = expl
    out.mkdir(parents=True, exist_ok=True)  # only once the video and checkpoints are known to be good
    if expl.joint_weights is not None or expl.joint_visible.any():
        result.files.append(plot_spatial(expl, out / "spatial.png").name)
    if expl.grouping is not None:
        result.files.append(plot_grouping(expl, out / "grouping.png").name)
    result.files.append(plot_temporal([expl], out / "temporal.png").name)
    if expl.phrase_attention is not None and len(expl.phrases):
        result.files.append(plot_concepts(expl, out / "concepts.png").name)
    if len(explanations) > 1:
        result.comparison = explanations[1]
        result.files.append(plot_temporal(explanations[::-1], out / "compare.png", title="VL vs PeVL").name)
    assert timeline is not None
    result.files.append(plot_timeline(timeline, out / "timeline.png").name)
    numbers = {"video": str(video), "figures": result.files, "model": _numbers(expl)}
    numbers["timeline"] = timeline.to_dict(top_k)
    if result.comparison is not None:
        numbers["comparison"] = _numbers(result.comparison)
    write_json(out / "explain.json", numbers)
    write_index(out, str(video), result, top_k)
    return result


def explanation_summary(result: ExplainResult) -> str:
    """A short console summary: prediction and the files written."""
    expl = result.explanation
    assert expl is not None
    lines = [f"predicted: {expl.predicted_label} ({100 * expl.probabilities[expl.predicted]:.1f}%)"]
    lines += [f"  {result.out_dir / name}" for name in [*result.files, "index.html"]]
    return "\n".join(lines) + ("\n" + json.dumps(expl.notes) if expl.notes else "")
