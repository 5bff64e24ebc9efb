"""Evaluation: class scores over a dataset (multi-view, multi-process), metrics and their report files.

``pevl eval --checkpoint CKPT [--views CLIPSxCROPS]`` writes to its output folder:

* ``metrics.json``: top-1, top-5, mean class accuracy, per-class accuracy, number of samples and views, and
  ``split_note``: how the split was made when the data has none (a seeded held-out share), else ``null``;
* ``per_class.csv``: accuracy and support of every class;
* ``confusion.csv`` and ``confusion.png``: the confusion matrix (rows: ground truth, columns: prediction);
* ``scores.npy``: the averaged class probabilities of every sample, in dataset order.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from pevl.engine.builder import autocast, batch_inputs, build_dataset, default_device, load_trained_model
from pevl.engine.checkpoint_choice import choose_checkpoint
from pevl.engine.config import apply_overrides
from pevl.engine.distributed import gather_by_index, init_distributed, is_main_process
from pevl.engine.loader import DEFAULT_WORKER_TIMEOUT, iterate, make_loader
from pevl.engine.metrics import (
    confusion_matrix,
    evaluate_scores,
    per_class_accuracy,
    plot_confusion_matrix,
    save_confusion_csv,
)
from pevl.engine.sampler import ResumableSampler
from pevl.errors import PevlError
from pevl.models.pevl import PeVL
from pevl.models.prompts import ClassTexts
from pevl.utils.io import atomic_open, atomic_path, check_output_dir, write_json


def check_finite_weights(model: torch.nn.Module, checkpoint: str | Path) -> None:
    """Refuse a model whose weights hold NaN or inf (what a diverged training run leaves).

    Raises:
        PevlError: Naming the checkpoint and the first broken tensor.
    """
    state = {name: t for name, t in model.state_dict().items() if t.is_floating_point()}
    # One summing pass per tensor: a finite sum means finite elements (NaN and inf propagate); only when some sum is
    # not finite (or overflowed) is each element looked at. Ten times faster than isfinite on ViT-B/16's weights.
    sums = torch.stack([t.sum(dtype=torch.float32) for t in state.values()]) if state else torch.zeros(0)
    if bool(torch.isfinite(sums).all()):
        return
    broken = [name for name, t in state.items() if not torch.isfinite(t).all()]
    if broken:
        raise PevlError(
            f"{checkpoint}: {len(broken)} weight tensors hold NaN or inf (first: {broken[0]}); "
            "the checkpoint comes from a diverged run and gives no usable scores"
        )


def check_finite_scores(scores: np.ndarray | torch.Tensor, checkpoint: str | Path, inputs: str = "the data") -> None:
    """Refuse non-finite class scores instead of ranking them (NaN would count as a correct prediction).

    Call it after :func:`check_finite_weights`: the weights are then known to be finite, so the blame goes to the
    inputs (named by ``inputs``), not to the checkpoint.

    Raises:
        PevlError: Naming the inputs, the checkpoint and how many score rows are broken.
    """
    values = scores.detach().float().cpu().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores)
    finite = np.isfinite(values).reshape(len(values), -1).all(axis=1) if values.ndim else np.isfinite(values)
    if not np.all(finite):
        bad = int(np.size(finite) - np.count_nonzero(finite))
        raise PevlError(
            f"{inputs}: the scores of {bad} of {np.size(finite)} samples are not finite (NaN or inf) although the "
            f"weights of {checkpoint} are: an input holds values the model cannot handle"
        )


@torch.no_grad()
def predict_scores(
    model: PeVL,
    dataset: Any,
    texts: ClassTexts,
    batch_size: int,
    num_workers: int = 0,
    device: torch.device | None = None,
    amp: str = "auto",
    progress: bool = True,
    rank: int = 0,
    world_size: int = 1,
    worker_start: str = "forkserver",
    worker_timeout: float = DEFAULT_WORKER_TIMEOUT,
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities of every sample of ``dataset``, views averaged.

    Each process scores its shard; the rows are put back in dataset order on every process.

    Args:
        model: The (unwrapped) model.
        dataset: Yields ``{"video": [V, ...], "pose": [V, ...], "label", "index"}``.
        texts: The class prompts.
        batch_size: Samples per batch (each with its V views).
        num_workers: DataLoader workers.
        device: Where the model is (default: where its parameters are).
        amp: Precision mode (``auto``: see :func:`pevl.engine.builder.resolve_amp`).
        progress: Show a progress bar (main process only).
        rank: This process's rank.
        world_size: Number of processes.
        worker_start: How loader workers start (``data.worker_start``).
        worker_timeout: Seconds to wait for one batch (``data.worker_timeout``).

    Returns:
        Probabilities ``[N, C]`` and labels ``[N]``.
    """
    device = device or next(model.parameters()).device
    sampler = ResumableSampler(len(dataset), shuffle=False, rank=rank, world_size=world_size)
    loader = make_loader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        worker_start=worker_start,
        worker_timeout=worker_timeout,
    )
    was_training = model.training
    model.eval()
    text = model.encode_class_texts(texts)
    indices, scores, labels = [], [], []
    batches = iterate(loader, "evaluation data loader")
    show = progress and rank == 0
    bar = tqdm(batches, total=len(loader), desc="eval", unit="batch", disable=not show, dynamic_ncols=True)
    for batch in bar:
        inputs, views = batch_inputs(batch, device)
        with autocast(device, amp, training=False, width=model.config.clip.vision.width):
            logits = model(**inputs, texts=text).logits
        probs = logits.float().softmax(dim=-1).view(-1, views, logits.shape[-1]).mean(dim=1)
        scores.append(probs.cpu().numpy())
        labels.append(np.asarray(batch["label"]))
        indices.append(np.asarray(batch["index"]))
    model.train(was_training)
    local_scores = np.concatenate(scores) if scores else np.zeros((0, len(texts)), np.float32)
    local_labels = np.concatenate(labels) if labels else np.zeros(0, np.int64)
    local_indices = np.concatenate(indices) if indices else np.zeros(0, np.int64)
    table = np.concatenate([local_scores, local_labels[:, None].astype(local_scores.dtype)], axis=1)
    ordered = gather_by_index(local_indices, table, len(dataset))
    return ordered[:, :-1], ordered[:, -1].astype(np.int64)


REPORT_FILES = ("metrics.json", "per_class.csv", "confusion.csv", "confusion.png", "scores.npy")
"""The files of an evaluation report folder."""


def write_report(
    out_dir: str | Path, scores: np.ndarray, labels: np.ndarray, class_names: list[str], extra: dict[str, Any]
) -> dict[str, Any]:
    """Compute the metrics and write the evaluation files (see the module docstring).

    Returns:
        The metrics dict written to ``metrics.json``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = evaluate_scores(scores, labels, class_names)
    metrics.update(extra)
    write_json(out_dir / "metrics.json", metrics)
    with atomic_open(out_dir / "per_class.csv", "w") as f:
        writer = csv.writer(f)
        writer.writerow(["class_index", "class", "accuracy", "support"])
        support = np.bincount(labels, minlength=len(class_names))
        for i, (name, accuracy) in enumerate(zip(class_names, per_class_accuracy(scores, labels), strict=True)):
            writer.writerow([i, name, "" if np.isnan(accuracy) else f"{accuracy:.4f}", int(support[i])])
    matrix = confusion_matrix(scores, labels, num_classes=len(class_names))
    save_confusion_csv(matrix, class_names, out_dir / "confusion.csv")
    plot_confusion_matrix(matrix, class_names, out_dir / "confusion.png", title=extra.get("title"))
    with atomic_path(out_dir / "scores.npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, scores.astype(np.float32))
    return metrics


@dataclass
class EvalResult:
    """What ``pevl eval`` computed."""

    metrics: dict[str, Any]
    out_dir: Path


def parse_views(views: str | None) -> tuple[int | None, int | None]:
    """``"3x1"`` -> (3 clips, 1 crop); ``None`` -> (None, None) (the run config decides)."""
    if views is None:
        return None, None
    try:
        clips, crops = (int(v) for v in views.lower().split("x"))
    except ValueError:
        raise PevlError(f"--views expects CLIPSxCROPS such as 1x1 or 3x3, got {views!r}") from None
    if clips < 1 or crops not in (1, 3):
        raise PevlError(f"--views {views}: clips must be >= 1 and crops 1 or 3")
    return clips, crops


def run_evaluation(
    checkpoint: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    views: str | None = None,
    split: str | None = None,
    out_dir: str | Path | None = None,
    batch_size: int | None = None,
    progress: bool = True,
) -> EvalResult:
    """Evaluate a checkpoint on its run's test split (the library function behind ``pevl eval``).

    Args:
        checkpoint: A checkpoint directory, its ``model.safetensors``, or a work dir (its best, else latest;
            ``WORKDIR:latest`` / ``WORKDIR:best`` to choose).
        overrides: ``key=value`` changes to the saved run config (e.g. ``data.root=/data/diving48``).
        views: ``CLIPSxCROPS`` test views (default: the run config's ``test_clips x test_crops``).
        split: Split to evaluate (default ``data.test_split``, else ``data.val_split``).
        out_dir: Where the report goes (default ``<checkpoint>/eval_<split>``).
        batch_size: Samples per batch (default ``data.batch_size``).
        progress: Show a progress bar.

    Returns:
        The metrics and the report folder.
    """
    if batch_size is not None and batch_size < 1:
        raise PevlError(f"--batch-size must be at least 1, got {batch_size}")
    info = init_distributed()
    device = info.device if info.distributed else default_device()
    path = choose_checkpoint(checkpoint)  # a work dir: best, else latest (printed)
    clips, crops = parse_views(views)
    loaded = load_trained_model(path, device)
    if loaded.run_config is None:
        raise PevlError(f"{path}: the checkpoint holds no run config; evaluate with `pevl predict` instead")
    check_finite_weights(loaded.model, loaded.checkpoint.path)
    cfg = apply_overrides(loaded.run_config, list(overrides))
    split = split or cfg.data.test_split or cfg.data.val_split
    out = Path(out_dir) if out_dir else loaded.checkpoint.path.parent / f"eval_{split}"
    if loaded.checkpoint.path.is_dir():
        out = Path(out_dir) if out_dir else loaded.checkpoint.path / f"eval_{split}"
    if is_main_process():
        check_output_dir(out, "report folder")  # before the work: a bad --out must not cost a whole evaluation
    dataset = build_dataset(cfg, loaded.model.config, split, train=False, num_clips=clips, num_crops=crops)
    if loaded.classes and list(dataset.classes) != loaded.classes:
        raise PevlError(
            f"the {split} split of {cfg.data.dataset} has {len(dataset.classes)} classes that differ from the "
            f"{len(loaded.classes)} the checkpoint was trained on"
        )
    texts = loaded.model.build_class_texts(dataset.classes, dataset.coarse)
    scores, labels = predict_scores(
        loaded.model,
        dataset,
        texts,
        batch_size or cfg.data.batch_size,
        cfg.data.num_workers,
        device,
        cfg.train.amp,
        progress,
        info.rank,
        info.world_size,
        worker_start=cfg.data.worker_start,
        worker_timeout=cfg.data.worker_timeout,
    )
    check_finite_scores(scores, loaded.checkpoint.path, f"the {split} split of {cfg.data.dataset}")
    num_clips, num_crops = clips or cfg.data.test_clips, crops or cfg.data.test_crops
    extra = {
        "checkpoint": str(loaded.checkpoint.path),
        "split": split,
        "views": f"{num_clips}x{num_crops}",
        "split_note": dataset.split_note,  # how the split was made when the data had none (a held-out share)
        "title": f"{cfg.model.preset} on {cfg.data.dataset} {split}",
    }
    metrics = write_report(out, scores, labels, list(dataset.classes), extra) if is_main_process() else {}
    return EvalResult(metrics, out)


def summary_line(metrics: dict[str, Any]) -> str:
    """One line for the console: top-1, top-5, mean class accuracy, samples."""
    return (
        f"top1 {100 * metrics['top1']:.2f}  top5 {100 * metrics['top5']:.2f}  "
        f"mean class {100 * metrics['mean_class_accuracy']:.2f}  ({metrics['num_samples']} samples)"
    )


def metrics_json(metrics: dict[str, Any]) -> str:
    """The metrics as one JSON object."""
    return json.dumps(metrics, indent=2)
