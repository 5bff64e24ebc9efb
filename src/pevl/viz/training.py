"""Training figures: loss curves of several runs and their accuracies side by side (matplotlib, Agg)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pevl.utils.io import atomic_path


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_training_summary(
    runs: Mapping[str, Sequence[Mapping[str, Any]]],
    accuracies: Mapping[str, Mapping[str, float]],
    path: str | Path,
    title: str = "",
) -> Path:
    """One PNG: training loss (and validation top-1) per run on the left, final accuracies on the right.

    Args:
        runs: Run name -> its ``metrics.jsonl`` records (``step``, ``loss``, ``val/top1`` ...).
        accuracies: Run name -> final metrics (``top1``, ``top5``, ``mean_class_accuracy``, fractions).
        path: The PNG to write.
        title: Figure title.

    Returns:
        ``path``.
    """
    plt = _pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    ax_val = ax_loss.twinx()
    for i, (name, records) in enumerate(runs.items()):
        colour = colours[i % len(colours)]
        train = [(r["step"], r["loss"]) for r in records if "loss" in r]
        val = [(r["step"], 100 * r["val/top1"]) for r in records if "val/top1" in r]
        if train:
            ax_loss.plot(*zip(*train, strict=True), color=colour, label=f"{name} train loss")
        if val:
            ax_val.plot(*zip(*val, strict=True), color=colour, linestyle="--", marker="o", label=f"{name} val top-1")
    ax_loss.set_xlabel("optimiser step")
    ax_loss.set_ylabel("training loss")
    ax_val.set_ylabel("validation top-1 (%)")
    ax_val.set_ylim(0, 100)
    handles = ax_loss.get_legend_handles_labels()[0] + ax_val.get_legend_handles_labels()[0]
    labels = ax_loss.get_legend_handles_labels()[1] + ax_val.get_legend_handles_labels()[1]
    ax_loss.legend(handles, labels, loc="upper right", fontsize=8)
    ax_loss.set_title("training")

    metrics = ("top1", "top5", "mean_class_accuracy")
    names = list(accuracies)
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        values = [100 * float(accuracies[name].get(m, 0.0)) for m in metrics]
        positions = [j + i * width for j in range(len(metrics))]
        bars = ax_acc.bar(positions, values, width, label=name, color=colours[i % len(colours)])
        ax_acc.bar_label(bars, fmt="%.1f", fontsize=8)
    ax_acc.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(metrics))])
    ax_acc.set_xticklabels(["top-1", "top-5", "mean class"])
    ax_acc.set_ylim(0, 105)
    ax_acc.set_ylabel("accuracy (%)")
    ax_acc.legend(fontsize=8)
    ax_acc.set_title("validation accuracy")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
