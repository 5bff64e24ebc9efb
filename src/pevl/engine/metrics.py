"""Recognition metrics: multi-view averaging, top-k, mean class accuracy, per-class accuracy, confusion matrix.

Conventions (as in MMAction2): the predicted class is the highest score, ties going to the lowest class index
(``argmax``); top-k ranks classes the same way; mean class accuracy averages over the classes present in the
labels (a class without test samples has no accuracy and is reported as ``None``).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pevl.utils.io import atomic_open, atomic_path

ArrayLike = np.ndarray | torch.Tensor | Sequence[Any]


def _numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    return np.asarray(x)


def _check(scores: np.ndarray, labels: np.ndarray) -> None:
    if scores.ndim != 2:
        raise ValueError(f"scores must be [num_samples, num_classes], got shape {scores.shape}")
    if labels.shape != (scores.shape[0],):
        raise ValueError(f"labels must be [{scores.shape[0]}], got shape {labels.shape}")
    if scores.shape[0] == 0:
        raise ValueError("no samples to evaluate")
    if labels.min() < 0 or labels.max() >= scores.shape[1]:
        raise ValueError(f"labels must lie in [0, {scores.shape[1]}), got {labels.min()} .. {labels.max()}")


def average_views(scores: ArrayLike, num_views: int | None = None, mode: str = "score") -> Any:
    """Average the scores of the views (clips x crops) of each video.

    Args:
        scores: ``[N, V, C]``, or ``[N * V, C]`` with the views of a video consecutive (then ``num_views``).
        num_views: V for 2-D input.
        mode: ``"score"`` averages the raw scores; ``"prob"`` applies a softmax first (MMAction2's
            ``average_clips``).

    Returns:
        ``[N, C]``, a tensor for tensor input, else a numpy array.
    """
    if mode not in ("score", "prob"):
        raise ValueError(f"mode must be 'score' or 'prob', not {mode!r}")
    is_tensor = isinstance(scores, torch.Tensor)
    x = scores if is_tensor else torch.as_tensor(np.asarray(scores, dtype=np.float64))
    if x.ndim == 2:
        if num_views is None:
            raise ValueError("num_views is needed to split [N * V, C] scores")
        if num_views < 1 or x.shape[0] % num_views:
            raise ValueError(f"{x.shape[0]} rows do not split into views of {num_views}")
        x = x.reshape(x.shape[0] // num_views, num_views, x.shape[1])
    elif x.ndim != 3:
        raise ValueError(f"scores must be [N, V, C] or [N * V, C], got shape {tuple(x.shape)}")
    elif num_views is not None and x.shape[1] != num_views:
        raise ValueError(f"scores have {x.shape[1]} views, expected {num_views}")
    if mode == "prob":
        x = x.softmax(dim=-1)
    mean = x.mean(dim=1)
    return mean if is_tensor else mean.numpy()


def class_ranks(scores: ArrayLike, labels: ArrayLike) -> np.ndarray:
    """0-based rank of the true class of each sample: classes scored higher, plus tied ones of lower index."""
    s, y = _numpy(scores).astype(np.float64), _numpy(labels).astype(np.int64)
    _check(s, y)
    true = s[np.arange(len(y)), y][:, None]
    above = (s > true).sum(axis=1)
    tied_before = ((s == true) & (np.arange(s.shape[1])[None, :] < y[:, None])).sum(axis=1)
    return above + tied_before


def topk_accuracy(scores: ArrayLike, labels: ArrayLike, ks: Iterable[int] = (1, 5)) -> dict[int, float]:
    """Fraction of samples whose true class is among the ``k`` best-scored, for each ``k``.

    ``k`` larger than the number of classes counts every sample as correct.
    """
    ranks = class_ranks(scores, labels)
    out = {}
    for k in ks:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        out[int(k)] = float((ranks < k).mean())
    return out


def predictions(scores: ArrayLike) -> np.ndarray:
    """Predicted class per sample (``argmax``, ties to the lowest index)."""
    s = _numpy(scores)
    if s.ndim != 2:
        raise ValueError(f"scores must be [num_samples, num_classes], got shape {s.shape}")
    return s.argmax(axis=1)


def confusion_matrix(scores_or_preds: ArrayLike, labels: ArrayLike, num_classes: int | None = None) -> np.ndarray:
    """Counts ``[C, C]``: row = true class, column = predicted class.

    Args:
        scores_or_preds: Scores ``[N, C]`` (argmax taken) or predicted classes ``[N]``.
        labels: True classes ``[N]``.
        num_classes: C; taken from the scores' width when omitted.
    """
    x, y = _numpy(scores_or_preds), _numpy(labels).astype(np.int64)
    if x.ndim == 2:
        _check(x, y)
        num_classes = num_classes or x.shape[1]
        x = predictions(x)
    if num_classes is None:
        raise ValueError("num_classes is needed with predicted classes")
    x = x.astype(np.int64)
    if x.shape != y.shape:
        raise ValueError(f"{len(x)} predictions for {len(y)} labels")
    if len(y) and (min(x.min(), y.min()) < 0 or max(x.max(), y.max()) >= num_classes):
        raise ValueError(f"classes must lie in [0, {num_classes})")
    return np.bincount(y * num_classes + x, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(scores: ArrayLike, labels: ArrayLike) -> np.ndarray:
    """Top-1 accuracy of each class ``[C]``; ``nan`` for a class with no sample in ``labels``."""
    cm = confusion_matrix(scores, labels)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)


def mean_class_accuracy(scores: ArrayLike, labels: ArrayLike) -> float:
    """Mean of the per-class top-1 accuracies over the classes present in ``labels``."""
    return float(np.nanmean(per_class_accuracy(scores, labels)))


def evaluate_scores(scores: ArrayLike, labels: ArrayLike, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """All recognition metrics of a prediction table, JSON-ready.

    Args:
        scores: ``[N, C]`` class scores (views already averaged).
        labels: ``[N]`` true classes.
        class_names: ``C`` names for ``per_class``; ``"0"``, ``"1"``, ... when omitted.

    Returns:
        ``top1``, ``top5``, ``mean_class_accuracy`` (fractions in [0, 1]), ``per_class`` (name -> accuracy or
        ``None`` when the class has no sample), ``num_samples`` and ``num_classes``.
    """
    s = _numpy(scores)
    num_classes = s.shape[1] if s.ndim == 2 else 0
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for {num_classes} score columns")
    top = topk_accuracy(s, labels, (1, 5))
    per_class = per_class_accuracy(s, labels)
    return {
        "top1": top[1],
        "top5": top[5],
        "mean_class_accuracy": mean_class_accuracy(s, labels),
        "per_class": {
            name: (None if math.isnan(acc) else float(acc)) for name, acc in zip(names, per_class, strict=True)
        },
        "num_samples": int(s.shape[0]),
        "num_classes": int(num_classes),
    }


def save_confusion_csv(cm: np.ndarray, class_names: Sequence[str], path: str | Path) -> Path:
    """Write the confusion matrix as CSV: a header of predicted classes, one row per true class."""
    cm = np.asarray(cm)
    if cm.shape != (len(class_names), len(class_names)):
        raise ValueError(f"confusion matrix {cm.shape} does not match {len(class_names)} class names")
    path = Path(path)
    with atomic_open(path, "w") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["true \\ predicted", *class_names])
        for name, row in zip(class_names, cm, strict=True):
            writer.writerow([name, *(int(v) for v in row)])
    return path


def _short(name: str, limit: int = 50) -> str:
    """Cut a long name in the middle: fine-grained labels differ at the end as often as at the start."""
    if len(name) <= limit:
        return name
    head = (limit - 1) // 2
    return name[:head] + "\u2026" + name[len(name) - (limit - 1 - head) :]


def short_labels(names: Sequence[str], limit: int = 50) -> list[str]:
    """Tick labels of about ``limit`` characters that stay distinct when the names are.

    Long names lose their middle. Names that still collide are shown around the place where they differ; if any
    collision is left, every label gets its class index.
    """
    import os.path

    labels = [_short(name, limit) for name in names]
    groups: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        groups.setdefault(label, []).append(i)
    for members in groups.values():
        if len({names[i] for i in members}) < 2:
            continue
        start = max(0, len(os.path.commonprefix([names[i] for i in members])) - limit // 3)
        for i in members:
            window = names[i][start : start + limit - 2]
            tail = "\u2026" if start + limit - 2 < len(names[i]) else ""
            labels[i] = ("\u2026" if start else "") + window + tail
    if len(set(labels)) < len(set(names)):
        labels = [f"{i}: {label}" for i, label in enumerate(labels)]
    return labels


def plot_confusion_matrix(
    cm: np.ndarray,
    class_names: Sequence[str],
    path: str | Path,
    normalize: bool = True,
    title: str | None = None,
) -> Path:
    """Draw the confusion matrix as a PNG that stays readable from 4 to 400 classes.

    Cells are row-normalised (recall per true class) by default. The figure grows with the number of classes
    so every class keeps its tick label; values are printed in the cells up to 30 classes.

    Args:
        cm: ``[C, C]`` counts (row = true class).
        class_names: ``C`` names (long names are shortened).
        path: Output PNG.
        normalize: Colour by the fraction of each true class instead of raw counts.
        title: Figure title.

    Returns:
        ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cm = np.asarray(cm, dtype=np.float64)
    n = len(class_names)
    if cm.shape != (n, n) or n == 0:
        raise ValueError(f"confusion matrix {cm.shape} does not match {n} class names")
    if normalize:
        support = cm.sum(axis=1, keepdims=True)
        values = np.divide(cm, support, out=np.zeros_like(cm), where=support > 0)
    else:
        values = cm
    cell = min(0.5, max(0.1, 12.0 / n))  # inches per class
    font = max(4.0, min(10.0, cell * 72 * 0.7))
    labels = short_labels(class_names)
    longest = max(len(label) for label in labels)
    margin = min(4.5, 0.6 + longest * font / 72 * 0.6)
    side = n * cell
    fig = Figure(figsize=(side + margin + 1.6, side + margin + 0.8), dpi=100)
    FigureCanvasAgg(fig)
    width, height = fig.get_size_inches()
    ax = fig.add_axes((margin / width, margin / height, side / width, side / height))
    image = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else max(values.max(), 1.0))
    colorbar_ax = fig.add_axes(((margin + side + 0.2) / width, margin / height, 0.2 / width, side / height))
    fig.colorbar(image, cax=colorbar_ax)
    ax.set_xticks(range(n), labels, rotation=90, fontsize=font)
    ax.set_yticks(range(n), labels, fontsize=font)
    ax.set_xlabel("predicted class", fontsize=max(font, 8))
    ax.set_ylabel("true class", fontsize=max(font, 8))
    ax.set_title(title or ("confusion matrix (row-normalised)" if normalize else "confusion matrix"), fontsize=10)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    text = f"{values[i, j]:.2f}" if normalize else f"{int(cm[i, j])}"
                    colour = "white" if values[i, j] > 0.5 * (image.norm.vmax or 1.0) else "black"
                    ax.text(j, i, text, ha="center", va="center", fontsize=font * 0.8, color=colour)
    path = Path(path)
    with atomic_path(path) as tmp:
        # A tight bounding box trims the margins estimated above but draws the figure twice: small plots only.
        fig.savefig(tmp, format="png", bbox_inches="tight" if n <= 150 else None)
    return path
