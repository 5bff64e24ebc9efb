"""The training loop behind ``pevl train``: one code path for one CPU and for ``torchrun`` on many GPUs.

* data: a :class:`ResumableSampler` shards and shuffles; per-sample augmentation depends only on
  (seed, epoch, index), so a resumed run sees exactly the samples and augmentations an uninterrupted one would;
* model: frozen CLIP + adapters; DistributedDataParallel across processes, with the in-batch contrastive terms
  computed against features gathered from every process;
* optimisation: AdamW, linear warm-up then cosine, gradient accumulation, gradient clipping, bf16 autocast on GPU;
* checkpoints (safetensors weights + a weights-only training state) at epoch ends, every
  ``train.save_every_steps`` steps, and on Ctrl-C / SIGTERM; ``--resume [CHECKPOINT]`` restores weights, optimiser,
  scheduler, RNG states and the sampler position;
* logs: ``metrics.jsonl`` and a plain-text ``train.log`` in the work dir.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from pevl import __version__
from pevl.data.datasets.balance import balance_note, oversample_classes
from pevl.engine.builder import autocast, batch_inputs, build_dataset, build_model, default_device, model_config
from pevl.engine.checkpoint import (
    checkpoint_run,
    find_latest,
    load_checkpoint,
    load_model_state,
    locate_checkpoint,
    restore_training_state,
    save_checkpoint,
)
from pevl.engine.config import RunConfig, config_changes, save_config
from pevl.engine.distributed import (
    all_reduce_mean,
    barrier,
    check_gradients,
    explain_ddp_errors,
    gather_object,
    init_distributed,
    maybe_no_sync,
    same_on_every_rank,
    wrap_ddp,
)
from pevl.engine.evaluate import predict_scores
from pevl.engine.loader import iterate, make_loader
from pevl.engine.logger import LOG_FILE, METRICS_FILE, MetricLogger
from pevl.engine.metrics import evaluate_scores
from pevl.engine.optim import build_optimizer, build_scheduler, warmup_note
from pevl.engine.pose_prep import ensure_poses
from pevl.engine.rng import capture_rng, seed_everything
from pevl.engine.sampler import ResumableSampler
from pevl.engine.workdir import locked_run_dir
from pevl.errors import PevlError
from pevl.models.sgmc import clamp_logit_scales
from pevl.utils.io import check_not_inputs, check_output_dir

MAX_SKIPPED_IN_A_ROW = 20
"""With ``train.nonfinite=skip``, this many non-finite steps in a row stop the run all the same."""


class EpochIndices(Sampler):
    """Yields ``(epoch, index)`` for each index of a :class:`ResumableSampler`, in its order.

    Args:
        sampler: The sampler whose ``epoch`` and indices are read at the start of every iteration.
    """

    def __init__(self, sampler: ResumableSampler) -> None:
        self.sampler = sampler

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.sampler.epoch
        return ((epoch, index) for index in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


@dataclass
class TrainResult:
    """How a training run ended."""

    work_dir: Path
    epochs_completed: int  # full epochs trained
    steps: int  # optimiser steps taken
    metrics: dict[str, Any]  # the last validation metrics (empty if never evaluated)
    best_top1: float | None  # best validation top-1 seen
    checkpoint: Path | None  # the last checkpoint written
    interrupted: bool = False  # stopped by Ctrl-C / SIGTERM (a checkpoint was saved to resume from)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C, so that a killed job still saves a checkpoint."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class Trainer:
    """One training run: its model, data, optimiser and the state that checkpoints capture.

    Args:
        cfg: The resolved run config.
        work_dir: Where the config, metrics, checkpoints and evaluations go.
        resume: Continue from the latest checkpoint of ``work_dir`` (``True``) or from a given checkpoint (a path).
        progress: Show progress bars (main process only).
    """

    def __init__(
        self, cfg: RunConfig, work_dir: str | Path, resume: bool | str | Path = False, progress: bool = True
    ) -> None:
        if cfg.data.pose_cache_dir is None:  # named in the saved config, so `pevl eval` reads the same cache
            cached = str((Path(work_dir) / "poses").resolve())
            cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, pose_cache_dir=cached))
        cfg = resolve_data_paths(cfg)
        self.cfg = cfg
        self.work_dir = Path(work_dir)
        self.info = init_distributed()
        self.main = self.info.rank == 0
        self.device = self.info.device if self.info.distributed else default_device()
        self.progress = progress and self.main

        seed_everything(cfg.train.seed)
        self.model_cfg = model_config(cfg)
        pose_cache = cfg.data.pose_cache_dir
        if self.model_cfg.use_pose and self.main:  # videos without cached poses: estimate them (or say how)
            splits = [cfg.data.train_split] + ([cfg.data.val_split] if cfg.train.eval_interval else [])
            ensure_poses(cfg, splits, pose_cache, self.work_dir, self.info.distributed, self.progress)
        self.train_set = build_dataset(cfg, self.model_cfg, cfg.data.train_split, train=True, pose_cache_dir=pose_cache)
        self.val_set = None
        if cfg.train.eval_interval:
            self.val_set = build_dataset(
                cfg, self.model_cfg, cfg.data.val_split, train=False, pose_cache_dir=pose_cache
            )
            if list(self.val_set.classes) != list(self.train_set.classes):
                source = cfg.data.pose_file or cfg.data.options.get("list_file") or cfg.data.root
                raise PevlError(
                    f"{source}: the {cfg.data.val_split} split has {len(self.val_set.classes)} classes and the "
                    f"{cfg.data.train_split} split {len(self.train_set.classes)} (without a label map, the class count "
                    "is the highest label present + 1); give data.options.label_map so both splits know every class"
                )
        if len(self.train_set) == 0:
            raise PevlError(f"the {cfg.data.train_split} split of {cfg.data.dataset} is empty")
        balance = None
        if cfg.data.balance_classes:  # before the sampler: an epoch covers the repeats
            labels = self.train_set.labels
            self.train_set.records = oversample_classes(self.train_set.records, labels, seed=cfg.train.seed)
            balance = balance_note(labels, self.train_set.labels)

        self.model_cfg = self.model_cfg.replace(num_classes=len(self.train_set.classes))
        self.model = build_model(self.model_cfg, cfg.model.pretrained).to(self.device)
        self.texts = self.model.build_class_texts(self.train_set.classes, self.train_set.coarse)
        self.sampler = ResumableSampler(
            len(self.train_set), shuffle=True, seed=cfg.train.seed, rank=self.info.rank, world_size=self.info.world_size
        )
        batches = -(-self.sampler.num_samples_per_rank // cfg.data.batch_size)
        self.steps_per_epoch = -(-batches // cfg.optim.grad_accum_steps)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, self.steps_per_epoch)
        self.ddp = self.model
        if self.info.distributed:
            self.ddp = wrap_ddp(self.model, self.info)  # the SGMC losses gather the in-batch features themselves
        overrides = ", ".join(f"{k}={v}" for k, v in cfg.model.overrides.items())
        self._model_desc = f"model.preset={cfg.model.preset}" + (f", model.overrides: {overrides}" if overrides else "")
        self._warned_unused = False
        # train.compile: the training forward goes through torch.compile; checkpoints still read self.model.
        self.train_forward = torch.compile(self.ddp) if cfg.train.compile else self.ddp

        self.step = 0
        self.run_id = uuid.uuid4().hex[:12]  # pruning deletes only checkpoints with this id; a resumed run keeps it
        self._persistent_loader: DataLoader | None = None
        self._skipped_in_a_row = 0
        self._bad_samples: list[str] = []  # samples with non-finite inputs in the current optimiser step
        self.epochs_completed = 0
        self.best_top1: float | None = None
        self.metrics: dict[str, Any] = {}
        self.last_checkpoint: Path | None = None
        if resume:
            self._resume(None if resume is True else Path(resume))
        self.logger = MetricLogger(
            self.work_dir,
            tensorboard=cfg.train.tensorboard,
            enabled=self.main,
            purge_after=self.step if resume else None,
            total_steps=cfg.optim.epochs * self.steps_per_epoch,
            steps_per_epoch=self.steps_per_epoch,
        )
        if self.main:  # only once data, weights and logger are known to be good: a refused run leaves no config
            save_config(cfg, self.work_dir / "config.yaml")
        split_note = getattr(self.val_set or self.train_set, "split_note", None)
        if split_note and self.main:
            self.logger.note(f"validation split: {split_note}")
        if balance and self.main:
            self.logger.note(balance)
        for note in filter(None, [warmup_note(cfg.optim), resume and self.scheduler.describe_rebuild()]):
            self.logger.note(str(note))
            if self.main:
                print(note, file=sys.stderr)
        if resume:
            self.logger.note(f"resumed from {self.last_checkpoint} (epoch {self.sampler.epoch}, step {self.step})")
        else:
            self.logger.note(f"start: {cfg.optim.epochs} epochs of {self.steps_per_epoch} steps, work dir {work_dir}")

    # ---- checkpoints ------------------------------------------------------------------------------------------------
    def _resume(self, source: Path | None = None) -> None:
        """Load the weights and training state of ``source`` (default: the work dir's latest checkpoint)."""
        latest = find_latest(self.work_dir) if source is None else locate_checkpoint(source)
        # By name: nodes may mount a shared work dir at different paths.
        same_on_every_rank(None if latest is None else latest.name, "the checkpoint to resume from")
        if latest is None:
            raise PevlError(f"{self.work_dir}: nothing to resume (no checkpoint in {self.work_dir / 'checkpoints'})")
        checkpoint = load_checkpoint(latest, device="cpu")
        changed = config_changes(checkpoint.config, self.cfg.to_dict())
        if changed and self.main:
            shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
            print(f"warning: resuming {latest} with a config that differs in {shown}", file=sys.stderr)
        load_model_state(self.model, checkpoint)
        clamp_logit_scales(self.model)  # weights saved when only the forward capped the scale may lie above
        restore_training_state(
            checkpoint, optimizer=self.optimizer, scheduler=self.scheduler, sampler=self.sampler, rank=self.info.rank
        )
        self.step = checkpoint.step
        self.epochs_completed = checkpoint.epoch
        self.best_top1 = checkpoint.extra.get("best_top1")
        self.metrics = dict(checkpoint.metrics)
        self.last_checkpoint = latest
        if latest.is_dir():
            self.run_id = checkpoint_run(latest) or self.run_id
        if self.main:
            print(f"resuming from {latest} (epoch {self.sampler.epoch}, step {self.step})")

    def save(self, epochs_completed: int, is_best: bool = False) -> Path | None:
        """Checkpoint the run (all processes must call this; the main process writes)."""
        rng_states = gather_object(capture_rng())
        path = None
        if self.main:
            path = save_checkpoint(
                self.work_dir,
                model_state=self.model.state_dict(),
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                sampler_state=self.sampler.state_dict(),
                epoch=epochs_completed,
                step=self.step,
                config=self.cfg.to_dict(),
                metrics=self.metrics,
                extra={
                    "classes": list(self.train_set.classes),
                    "coarse": None if self.train_set.coarse is None else list(self.train_set.coarse),
                    "model_config": self.model.config.to_dict(),
                    "best_top1": self.best_top1,
                    "dataset": self.cfg.data.dataset,
                    "pevl_version": __version__,
                },
                keep_last=self.cfg.train.keep_last,
                is_best=is_best,
                rng_states=rng_states,
                run=self.run_id,
            )
            self.last_checkpoint = path
        barrier()
        return path

    # ---- evaluation -------------------------------------------------------------------------------------------------
    def evaluate(self) -> dict[str, Any]:
        """Validation metrics of the current weights (top-1, top-5, mean class accuracy)."""
        assert self.val_set is not None
        scores, labels = predict_scores(
            self.model,
            self.val_set,
            self.texts,
            self.cfg.data.batch_size,
            self.cfg.data.num_workers,
            self.device,
            self.cfg.train.amp,
            self.progress,
            self.info.rank,
            self.info.world_size,
            worker_start=self.cfg.data.worker_start,
            worker_timeout=self.cfg.data.worker_timeout,
        )
        metrics = evaluate_scores(scores, labels, list(self.val_set.classes))
        return {key: metrics[key] for key in ("top1", "top5", "mean_class_accuracy", "num_samples")}

    # ---- the loop ---------------------------------------------------------------------------------------------------
    def _loader(self, epoch: int) -> DataLoader:
        """The training loader; with workers, one loader whose workers persist across epochs (started once)."""
        workers = self.cfg.data.num_workers
        if workers and self._persistent_loader is not None:
            return self._persistent_loader
        generator = torch.Generator()
        generator.manual_seed(self.cfg.train.seed * 100_003 + (0 if workers else epoch))
        loader = make_loader(
            self.train_set,
            batch_size=self.cfg.data.batch_size,
            # Each index carries its epoch: persistent workers keep their own copy of the dataset, so
            # ``train_set.set_epoch`` in this process would not reach them.
            sampler=EpochIndices(self.sampler),
            num_workers=workers,
            generator=generator,
            pin_memory=self.device.type == "cuda",
            persistent_workers=workers > 0,
            worker_start=self.cfg.data.worker_start,
            worker_timeout=self.cfg.data.worker_timeout,
        )
        if workers:
            self._persistent_loader = loader
        return loader

    def _check_gradients(self) -> None:
        """Every trainable parameter must have a gradient: fail under DDP, warn once in a single process."""
        unused = check_gradients(self.model, self._model_desc, self.info)
        if unused and self.main and not self._warned_unused:
            self._warned_unused = True
            shown = ", ".join(unused[:8]) + (f" and {len(unused) - 8} more" if len(unused) > 8 else "")
            tqdm.write(f"warning: trainable parameters without a gradient from the loss: {shown} "
                       f"({self._model_desc}; training on several processes would fail)", sys.stderr)  # fmt: skip

    def _nonfinite(self, epoch: int, what: str) -> None:
        """Apply ``train.nonfinite`` to a step whose loss or gradient is NaN/inf (the weights are still good).

        ``stop`` raises with the last good checkpoint named; ``skip`` drops the step's gradients, warns, and stops
        only when :data:`MAX_SKIPPED_IN_A_ROW` steps in a row were skipped.
        """
        self.optimizer.zero_grad(set_to_none=True)
        self._skipped_in_a_row += 1
        where = f"step {self.step + 1} (epoch {epoch + 1})"
        samples, self._bad_samples = self._bad_samples, []
        if samples:
            shown = ", ".join(samples[:3]) + (f" and {len(samples) - 3} more" if len(samples) > 3 else "")
            what = f"{what} (the inputs of {shown} hold NaN or inf: check those samples' video and poses)"
        kept = f"the last good checkpoint is {self.last_checkpoint}" if self.last_checkpoint else "no checkpoint yet"
        if self.cfg.train.nonfinite == "skip" and self._skipped_in_a_row < MAX_SKIPPED_IN_A_ROW:
            if self.main:
                tqdm.write(f"warning: {where}: {what} is not finite; step skipped (train.nonfinite=skip)", sys.stderr)
            return
        if self.cfg.train.nonfinite == "skip":
            what = f"{what} of {self._skipped_in_a_row} steps in a row"
        self.logger.close()
        raise PevlError(
            f"{self.work_dir}: training stopped at {where}: {what} is not finite (NaN or inf); the weights were not "
            f"updated with it and {kept}. Lower optim.lr, or set train.nonfinite=skip to skip such steps"
        )

    def _optimizer_step(self, epoch: int = 0) -> bool:
        """Clip, check and apply the accumulated gradients; ``False`` when a non-finite gradient skipped the step."""
        params = [p for p in self.model.parameters() if p.requires_grad and p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.clip_grad_norm or float("inf"))
        if not torch.isfinite(norm):
            self._nonfinite(epoch, "the gradient")
            return False
        self._skipped_in_a_row = 0
        self.optimizer.step()
        clamp_logit_scales(self.model)  # as CLIP: the parameter is capped, so its gradient keeps flowing at the cap
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return True

    def run(self) -> TrainResult:
        """Train until the last epoch (or ``train.max_steps``); evaluate and checkpoint on the way."""
        self._consumed_at_step = self.sampler.consumed
        with _sigterm_as_interrupt():
            try:
                self._run()
            except KeyboardInterrupt:
                self.sampler.consumed = self._consumed_at_step  # drop a half-accumulated step: redo it on resume
                self.save(self.epochs_completed)
                self.logger.close()
                return self._result(interrupted=True)
        self.logger.close()
        return self._result()

    def _result(self, interrupted: bool = False) -> TrainResult:
        return TrainResult(
            self.work_dir,
            self.epochs_completed,
            self.step,
            self.metrics,
            self.best_top1,
            self.last_checkpoint,
            interrupted,
        )

    def _run(self) -> None:
        cfg = self.cfg
        for epoch in range(self.sampler.epoch, cfg.optim.epochs):
            self.sampler.set_epoch(epoch)
            self.train_set.set_epoch(epoch)
            self.epochs_completed = epoch
            self._consumed_at_step = self.sampler.consumed
            stopped = self._train_epoch(epoch) if self.sampler.remaining > 0 else False
            if self.sampler.remaining == 0:
                self.epochs_completed = epoch + 1
            self._checkpoint_and_evaluate(last=stopped or epoch + 1 == cfg.optim.epochs)
            if stopped:
                return

    def _train_epoch(self, epoch: int) -> bool:
        """One (possibly resumed) epoch; returns True when ``train.max_steps`` was reached."""
        cfg = self.cfg
        accum = cfg.optim.grad_accum_steps
        self.model.train()
        loader = self._loader(epoch)
        batches_left = -(-self.sampler.remaining // cfg.data.batch_size)
        sums: dict[str, float] = defaultdict(float)
        count, samples, started = 0, 0, time.perf_counter()
        bar = tqdm(
            total=batches_left,
            desc=f"epoch {epoch + 1}/{cfg.optim.epochs}",
            unit="batch",
            disable=not self.progress,
            dynamic_ncols=True,
        )
        bad_loss = False  # a micro-batch of the current optimiser step had a non-finite loss
        for micro, batch in enumerate(iterate(loader, f"{self.work_dir}: training data loader")):
            inputs, _ = batch_inputs(batch, self.device)
            labels = batch["label"].to(self.device, non_blocking=True)
            boundary = (micro + 1) % accum == 0 or micro + 1 == batches_left
            with maybe_no_sync(self.ddp, sync=boundary), explain_ddp_errors(self.ddp, self._model_desc, self.info):
                with autocast(self.device, cfg.train.amp, training=True):
                    out = self.train_forward(**inputs, texts=self.texts, labels=labels)
                finite = bool(all_reduce_mean(0.0 if torch.isfinite(out.loss.detach()) else 1.0) == 0.0)
                bad_loss = bad_loss or not finite
                if not finite:  # blame the data, not the learning rate, when its inputs are not finite
                    self._bad_samples += _nonfinite_samples(inputs, batch, self.train_set)
                if not bad_loss:
                    (out.loss / accum).backward()
            self.sampler.advance(len(labels))
            if finite:
                for name, value in out.losses.items():
                    sums[name] += float(value.detach())
                sums["loss"] += float(out.loss.detach())
                count += 1
            samples += len(labels) * self.info.world_size
            bar.update(1)
            if not boundary:
                continue
            if bad_loss:
                bad_loss = False
                self._nonfinite(epoch, "the loss")
                self._consumed_at_step = self.sampler.consumed
                continue
            self._check_gradients()
            if not self._optimizer_step(epoch):
                self._consumed_at_step = self.sampler.consumed
                continue
            self._consumed_at_step = self.sampler.consumed
            if count and (self.step % cfg.train.log_interval == 0 or micro + 1 == batches_left):
                elapsed = time.perf_counter() - started
                record = {name: float(all_reduce_mean(total / count)) for name, total in sorted(sums.items())}
                record.update(lr=self.optimizer.param_groups[0]["lr"], epoch=epoch + 1, clips_per_s=samples / elapsed)
                self.logger.log(self.step, record)
                bar.set_postfix(
                    loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2e}", clips_s=f"{samples / elapsed:.1f}"
                )
                sums.clear()
                count, samples, started = 0, 0, time.perf_counter()
            if cfg.train.save_every_steps and self.step % cfg.train.save_every_steps == 0:
                self.save(self.epochs_completed)
            if cfg.train.max_steps is not None and self.step >= cfg.train.max_steps:
                bar.close()
                return True
        bar.close()
        return False

    def _checkpoint_and_evaluate(self, last: bool) -> None:
        """Evaluate and checkpoint as ``train.eval_interval`` / ``save_interval`` say (always at the end)."""
        cfg = self.cfg
        done = self.epochs_completed
        is_best = False
        due = bool(cfg.train.eval_interval) and (last or done % cfg.train.eval_interval == 0)
        if self.val_set is not None and due:
            self.metrics = self.evaluate()
            top1 = self.metrics["top1"]
            is_best = self.best_top1 is None or top1 > self.best_top1
            self.best_top1 = top1 if is_best else self.best_top1
            self.logger.log(self.step, {f"val/{k}": v for k, v in self.metrics.items()} | {"epoch": done})
            if self.main:
                tqdm.write(
                    f"epoch {done}: val top1 {100 * top1:.2f}  top5 {100 * self.metrics['top5']:.2f}  "
                    f"mean class {100 * self.metrics['mean_class_accuracy']:.2f}"
                )
        if last or is_best or (cfg.train.save_interval and done % cfg.train.save_interval == 0):
            self.save(done, is_best=is_best)


def _nonfinite_samples(inputs: dict[str, Any], batch: dict[str, Any], dataset: Any) -> list[str]:
    """Names of the batch's samples whose model inputs hold NaN or inf (empty when every input is finite)."""
    bad = None
    count = len(batch["index"])  # views are flattened into the batch: [B * V, ...]
    for value in inputs.values():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.numel():
            rows = ~torch.isfinite(value.detach().reshape(count, -1)).all(dim=1)
            bad = rows if bad is None else bad | rows
    if bad is None or not bool(bad.any()):
        return []
    indices = [int(i) for i in torch.as_tensor(batch["index"])[bad.cpu()]]
    records = getattr(dataset, "records", None)
    return [str(records[i].name) if records is not None else f"sample {i}" for i in indices]


def resolve_data_paths(cfg: RunConfig) -> RunConfig:
    """The config with its data paths made absolute, so that checkpoints work from any folder.

    ``data.root``, ``data.pose_file``, ``data.pose_cache_dir`` and the ``data.options`` values that name an existing
    file or folder are resolved against the current folder; ``pevl eval --set data.root=...`` can still move them.
    """
    data = cfg.data

    def absolute(value: str | None) -> str | None:
        return str(Path(value).expanduser().resolve()) if value else value

    options = {
        key: absolute(value) if isinstance(value, str) and value and Path(value).exists() else value
        for key, value in data.options.items()
    }
    resolved = dataclasses.replace(
        data,
        root=absolute(data.root),
        pose_file=absolute(data.pose_file),
        pose_cache_dir=absolute(data.pose_cache_dir),
        options=options,
    )
    return dataclasses.replace(cfg, data=resolved)


def train(
    cfg: RunConfig,
    work_dir: str | Path,
    resume: bool | str | Path = False,
    progress: bool = True,
    overwrite: bool = False,
    new_run: bool = False,
    inputs: tuple[str | Path, ...] = (),
) -> TrainResult:
    """Train a model as the run config says (the library function behind ``pevl train``).

    The work dir is locked for the run (:mod:`pevl.engine.workdir`): a second live run into it is refused, and so
    is a new run into a work dir that holds one, unless ``resume``, ``overwrite`` or ``new_run`` says what to do.

    Args:
        cfg: The run config (see :func:`pevl.engine.config.load_config`).
        work_dir: The run directory.
        resume: Continue from the latest checkpoint in ``work_dir`` (``True``) or from the checkpoint at this path.
        progress: Show progress bars.
        overwrite: Delete the earlier run's files in ``work_dir`` first.
        new_run: Run in a new timestamped sub-folder of ``work_dir``.
        inputs: Other files the run reads (the config file), which its outputs must not replace.

    Returns:
        How the run ended (its ``work_dir`` is the sub-run's folder with ``new_run``).

    Raises:
        PevlError: Bad input (the work dir cannot be written or holds a run, the data is missing, ...) or a
            non-finite loss with ``train.nonfinite=stop``.
    """
    check_output_dir(work_dir, "work dir")  # before any work: checkpoints must be writable
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if new_run and distributed:
        raise PevlError("--new-run picks its folder from the clock: under torchrun, give a new --work-dir instead")
    main = int(os.environ.get("RANK", "0")) == 0
    if distributed:  # the process group first: rank 0 tells every rank whether the work dir may be used
        init_distributed()
    sources = [*inputs, cfg.data.pose_file, cfg.model.pretrained]
    with locked_run_dir(
        work_dir, resume=bool(resume), overwrite=overwrite, new_run=new_run, lock=main, inputs=sources
    ) as run_dir:
        if not resume:  # a resumed run rewrites its own config.yaml
            written = {name: run_dir / name for name in ("config.yaml", METRICS_FILE, LOG_FILE)}
            check_not_inputs(written, sources)
        return Trainer(cfg, run_dir, resume=resume, progress=progress).run()
