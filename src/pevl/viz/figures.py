"""Drawing the attention figures (Figs. 8-12) from an :class:`~pevl.apps.attention.Explanation`."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from pevl.data.pose.layouts import COCO17_BONES, COCO17_JOINTS
from pevl.utils.io import atomic_path
from pevl.viz.explanation import BACKGROUND, Explanation


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path) -> Path:
    plt = _pyplot()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png", bbox_inches="tight")
    plt.close(fig)
    return path


def _frame_axes(ax: Any, image: np.ndarray, title: str = "") -> None:
    ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def _skeleton(ax: Any, joints: np.ndarray, visible: np.ndarray, colour: str = "white") -> None:
    for a, b in COCO17_BONES:
        if visible[a] and visible[b]:
            ax.plot(joints[[a, b], 0], joints[[a, b], 1], color=colour, linewidth=1.0, alpha=0.7)


def plot_spatial(expl: Explanation, path: str | Path) -> Path:
    """Fig. 8: joints sized and coloured by P2V-R attention (top), P2V-R attention over patches (bottom)."""
    plt = _pyplot()
    frames = len(expl.frames)
    rows = 2 if expl.patch_heat is not None else 1
    fig, axes = plt.subplots(rows, frames, figsize=(2.2 * frames, 2.3 * rows + 0.4), squeeze=False)
    cmap = plt.get_cmap("Reds")
    for t in range(frames):
        side = expl.frames[t].shape[0]
        ax = axes[0, t]
        _frame_axes(ax, expl.frames[t], f"frame {expl.frame_numbers[t]}")
        visible = expl.joint_visible[t]
        _skeleton(ax, expl.joints[t], visible)
        if visible.any():
            weights = (
                expl.joint_weights[t] if expl.joint_weights is not None else np.full(len(visible), 1 / len(visible))
            )
            scaled = weights / max(float(weights.max()), 1e-12)
            ax.scatter(expl.joints[t, visible, 0], expl.joints[t, visible, 1], s=10 + 120 * scaled[visible],
                       c=cmap(0.3 + 0.7 * scaled[visible]), edgecolors="black", linewidths=0.4)  # fmt: skip
        ax.set_xlim(0, side)
        ax.set_ylim(side, 0)
        if rows == 2:
            heat_ax = axes[1, t]
            _frame_axes(heat_ax, expl.frames[t])
            heat_ax.imshow(expl.patch_heat[t], cmap="inferno", alpha=0.55, extent=(0, side, side, 0),
                           interpolation="bilinear")  # fmt: skip
    axes[0, 0].set_ylabel("joints (P2V-R weight)", fontsize=8)
    if rows == 2:
        axes[1, 0].set_ylabel("P2V-R attention\nover patches", fontsize=8)
    fig.suptitle(f"Spatial attention - {expl.model_name}: {expl.predicted_label}", fontsize=9)
    return _save(fig, path)


def _group_colours(plt: Any) -> np.ndarray:
    colours = np.array([plt.get_cmap("tab20")(i % 20) for i in range(17)])
    return np.vstack([colours, [0.55, 0.55, 0.55, 1.0]])  # background token: grey


def plot_grouping(expl: Explanation, path: str | Path) -> Path:
    """Fig. 9: joints (left) and the image patches coloured by their V2P-R group (right), for every frame."""
    plt = _pyplot()
    if expl.grouping is None:
        raise ValueError("this explanation has no V2P-R grouping")
    frames = len(expl.frames)
    colours = _group_colours(plt)
    fig, axes = plt.subplots(frames, 2, figsize=(5.0, 2.4 * frames + 0.6), squeeze=False)
    for t in range(frames):
        side = expl.frames[t].shape[0]
        visible = expl.joint_visible[t]
        left, right = axes[t]
        _frame_axes(left, expl.frames[t], f"frame {expl.frame_numbers[t]}: joints")
        if visible.any():
            left.scatter(expl.joints[t, visible, 0], expl.joints[t, visible, 1], s=14, c="tab:blue", edgecolors="white",
                         linewidths=0.5)  # fmt: skip
        left.set_xlim(0, side)
        left.set_ylim(side, 0)
        present = np.unique(expl.grouping[t])
        _frame_axes(right, expl.frames[t], f"{len(present)} grouping tokens win patches")
        right.imshow(colours[expl.grouping[t]], alpha=0.6, extent=(0, side, side, 0), interpolation="nearest")
    handles = [
        plt.Line2D([], [], marker="s", linestyle="", color=colours[g],
                   label="background token" if g == BACKGROUND else COCO17_JOINTS[g].replace("_", " "))
        for g in np.unique(expl.grouping)
    ]  # fmt: skip
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=7, frameon=False)
    fig.suptitle(f"Background-token grouping - {expl.model_name}", fontsize=9)
    fig.subplots_adjust(bottom=0.06 + 0.02 * (len(handles) // 3 + 1))
    return _save(fig, path)


def _strip(ax: Any, values: np.ndarray, frame_numbers: np.ndarray, label: str) -> None:
    ax.imshow(values[None], aspect="auto", cmap="Blues", vmin=0, vmax=max(float(values.max()), 1e-12))
    ax.set_yticks([0])
    ax.set_yticklabels([label], fontsize=8)
    step = max(1, len(frame_numbers) // 8)
    ax.set_xticks(range(0, len(frame_numbers), step))
    ax.set_xticklabels([str(n) for n in frame_numbers[::step]], fontsize=7)


def plot_temporal(expls: list[Explanation], path: str | Path, title: str = "Temporal attention") -> Path:
    """Fig. 10 (one model) and Fig. 12 (several, one strip each): attention over frames under the frames.

    The frames and the class named in the title are those of the last explanation.
    """
    plt = _pyplot()
    base = expls[-1]
    frames = len(base.frames)
    fig = plt.figure(figsize=(max(6.0, 1.6 * frames), 1.9 + 0.7 * len(expls)))
    grid = fig.add_gridspec(1 + len(expls), frames, height_ratios=[3.0] + [0.8] * len(expls), hspace=0.35)
    for t in range(frames):
        _frame_axes(fig.add_subplot(grid[0, t]), base.frames[t], f"frame {base.frame_numbers[t]}")
    for row, expl in enumerate(expls, start=1):
        ax = fig.add_subplot(grid[row, :])
        _strip(ax, expl.temporal, expl.temporal_frames, expl.model_name)
    fig.suptitle(f"{title}: {textwrap.shorten(base.predicted_label, 90)}", fontsize=9)
    return _save(fig, path)


def plot_concepts(expl: Explanation, path: str | Path) -> Path:
    """Fig. 11: attention of each phrase of the predicted label over the frames."""
    plt = _pyplot()
    if expl.phrase_attention is None or not len(expl.phrases):
        raise ValueError("this explanation has no semantic concept attention")
    rows = len(expl.phrases)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.25 * expl.phrase_attention.shape[1] + 3), 0.5 * rows + 1.4))
    image = ax.imshow(expl.phrase_attention, aspect="auto", cmap="viridis")
    ax.set_yticks(range(rows))
    ax.set_yticklabels([textwrap.shorten(p, 40) for p in expl.phrases], fontsize=8)
    step = max(1, len(expl.temporal_frames) // 12)
    ax.set_xticks(range(0, len(expl.temporal_frames), step))
    ax.set_xticklabels([str(n) for n in expl.temporal_frames[::step]], fontsize=7)
    ax.set_xlabel("frame")
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.02)
    ax.set_title(f"Semantic concept attention - {textwrap.shorten(expl.predicted_label, 90)}", fontsize=9)
    return _save(fig, path)
