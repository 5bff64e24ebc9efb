"""Run configuration: YAML files with ``_base_`` inheritance, ``--set key=value`` overrides, strict keys.

A run is described by four frozen sections (model, data, optim, train). Files follow MMAction2 habits::

    _base_: ../_base_/finegym.yaml      # or a list; paths are relative to this file
    optim:
      lr: 1e-4                          # YAML 1.2 numbers: 1e-4 is a float, not a string
    data:
      options: {_delete_: true, subset: gym99}   # _delete_ replaces the inherited mapping instead of merging

Every key is checked: an unknown one fails with the closest valid key, naming the file (or the ``--set``) that
introduced it, e.g. ``run.yaml: unknown config key 'optim.lrr' (did you mean 'optim.lr'?)``. Every value is typed,
``model.overrides`` included (against the fields of :class:`pevl.models.config.PeVLConfig`): ``2.0`` is not an
integer and ``off`` / ``"no"`` are not booleans (write ``false``). Model settings (frame counts, image size,
gradient checkpointing) live in the model config only: ``model.overrides.num_pose_frames=16``.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from pevl.errors import PevlError
from pevl.utils.io import atomic_open
from pevl.utils.typed_config import (
    DELETE_KEY,
    ConfigKeyError,
    coerce_mapping,
    coerce_value,
    field_types,
    plain,
    suggest,
)
from pevl.utils.yaml_io import BASE_KEY, deep_merge, dump_yaml, leaf_paths, load_tree, parse_yaml

AMP_MODES = ("auto", "bf16", "fp16", "off")
OPTIMIZERS = ("adamw", "sgd")
NONFINITE_POLICIES = ("stop", "skip")
WORKER_STARTS = ("forkserver", "spawn")


def _coerce_fields(obj: Any) -> None:
    """Type-convert every field of a frozen section in place (called from ``__post_init__``)."""
    section = obj.section_name
    for name, tp in field_types(type(obj)).items():
        value = getattr(obj, name)
        object.__setattr__(obj, name, coerce_value(value, tp, f"{section}.{name}"))


def _require(condition: bool, key: str, requirement: str, value: Any) -> None:
    if not condition:
        raise ConfigKeyError(key, f"config key '{key}' must be {requirement}, got {value!r}")


# ---- the sections ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSection:
    """Which PeVL model to build."""

    section_name: ClassVar[str] = "model"

    preset: str = "pevl_tiny"  # a named preset of pevl.models.presets (pevl_vit_b16, vl_vit_b16, pevl_tiny, ...)
    pretrained: str | None = None  # CLIP weights: OpenAI .pt, open_clip .bin/.safetensors, or "ViT-B/16" (downloaded)
    overrides: dict[str, Any] = field(default_factory=dict)  # PeVLConfig fields changed from the preset (typed)

    def __post_init__(self) -> None:
        _coerce_fields(self)
        _require(bool(self.preset), "model.preset", "a preset name", self.preset)


@dataclass(frozen=True)
class DataSection:
    """Where the clips come from and how they are sampled."""

    section_name: ClassVar[str] = "data"

    dataset: str = "synthetic"  # finegym, diving48, haa500, toyota_smarthome, kinetics400, folder, csv, synthetic
    root: str | None = None  # dataset root folder (videos, annotation lists)
    train_split: str = "train"  # split used for training
    val_split: str = "val"  # split evaluated every train.eval_interval epochs
    test_split: str | None = None  # split of `pevl eval`; None = val_split
    pose_file: str | None = None  # dataset-provided poses (PYSKL pickle); None = extract and cache
    pose_cache_dir: str | None = None  # where extracted poses are cached; None = <work_dir>/poses
    batch_size: int = 8  # clips per process (the global batch is batch_size x world size x grad_accum_steps)
    num_workers: int = 2  # DataLoader worker processes per training process
    worker_start: str = "forkserver"  # how workers start: forkserver or spawn (fork can deadlock under threads)
    worker_timeout: float = 600.0  # seconds to wait for one batch before the workers are reported stuck
    test_clips: int = 1  # temporal views per video at test time (scores averaged with test_crops)
    test_crops: int = 1  # spatial views per clip at test time (1 = centre, 3 = three-crop)
    balance_classes: bool = False  # oversample every training class to the largest one (class-balanced sampling)
    estimate_poses: bool = True  # train: estimate poses the pose cache lacks (else an error with the command)
    options: dict[str, Any] = field(default_factory=dict)  # dataset-specific options (pevl.data.datasets)

    def __post_init__(self) -> None:
        _coerce_fields(self)
        _require(bool(self.dataset), "data.dataset", "a dataset name", self.dataset)
        for name in ("batch_size", "test_clips", "test_crops"):
            _require(getattr(self, name) >= 1, f"data.{name}", ">= 1", getattr(self, name))
        _require(self.num_workers >= 0, "data.num_workers", ">= 0", self.num_workers)
        _require(self.worker_start in WORKER_STARTS, "data.worker_start", f"one of {WORKER_STARTS}", self.worker_start)
        _require(self.worker_timeout > 0, "data.worker_timeout", "> 0 (seconds)", self.worker_timeout)


@dataclass(frozen=True)
class OptimSection:
    """Optimiser and learning-rate schedule (linear warm-up, then cosine)."""

    section_name: ClassVar[str] = "optim"

    optimizer: str = "adamw"  # "adamw" or "sgd" (momentum = betas[0])
    lr: float = 3e-4  # peak learning rate, reached at the end of warm-up
    weight_decay: float = 0.05  # decoupled weight decay; never applied to biases, norms, embeddings, tokens
    betas: tuple[float, float] = (0.9, 0.98)  # AdamW betas
    epochs: int = 30  # training epochs
    warmup_epochs: float = 2.0  # linear warm-up length in epochs (fractions allowed; clamped to optim.epochs)
    min_lr: float = 0.0  # learning rate at the end of the cosine decay
    grad_accum_steps: int = 1  # micro-batches accumulated per optimiser step
    clip_grad_norm: float | None = 1.0  # max global gradient norm; None disables clipping

    def __post_init__(self) -> None:
        _coerce_fields(self)
        _require(self.optimizer in OPTIMIZERS, "optim.optimizer", f"one of {OPTIMIZERS}", self.optimizer)
        _require(math.isfinite(self.lr) and self.lr > 0, "optim.lr", "a positive number", self.lr)
        _require(self.weight_decay >= 0, "optim.weight_decay", ">= 0", self.weight_decay)
        _require(all(0 <= b < 1 for b in self.betas), "optim.betas", "two numbers in [0, 1)", self.betas)
        _require(self.epochs >= 1, "optim.epochs", ">= 1", self.epochs)
        # A warm-up longer than the run is clamped to it, with a note (pevl.engine.optim.warmup_note).
        _require(self.warmup_epochs >= 0, "optim.warmup_epochs", ">= 0 (epochs)", self.warmup_epochs)
        _require(0 <= self.min_lr <= self.lr, "optim.min_lr", "in [0, lr]", self.min_lr)
        _require(self.grad_accum_steps >= 1, "optim.grad_accum_steps", ">= 1", self.grad_accum_steps)
        if self.clip_grad_norm is not None:
            _require(self.clip_grad_norm > 0, "optim.clip_grad_norm", "positive or null", self.clip_grad_norm)


@dataclass(frozen=True)
class TrainSection:
    """Seeding, precision, evaluation/checkpoint cadence and logging."""

    section_name: ClassVar[str] = "train"

    seed: int = 0  # base seed; each process adds its rank
    amp: str = "auto"  # "auto" = bf16 autocast on GPU, fp32 for CPU training; "bf16", "fp16" or "off" to force
    compile: bool = False  # torch.compile the training forward (GPU: faster steps after a one-off compile)
    eval_interval: int = 1  # evaluate every N epochs (0 = never during training)
    save_interval: int = 1  # checkpoint every N epochs (an interrupted run also saves where it stopped)
    keep_last: int = 2  # most recent checkpoints kept besides `best` (0 keeps them all)
    log_interval: int = 10  # log training metrics every N optimiser steps
    tensorboard: bool = False  # also write TensorBoard events (needs the tensorboard package)
    max_steps: int | None = None  # stop after this many optimiser steps (smoke runs); None = all epochs
    save_every_steps: int = 0  # also checkpoint every N optimiser steps inside an epoch (0 = at epoch ends only)
    nonfinite: str = "stop"  # on a NaN/inf loss or gradient: "stop" (keep the last good checkpoint) or "skip" the step

    def __post_init__(self) -> None:
        _coerce_fields(self)
        _require(self.seed >= 0, "train.seed", ">= 0", self.seed)
        _require(self.amp in AMP_MODES, "train.amp", f"one of {AMP_MODES}", self.amp)
        for name in ("eval_interval", "save_interval", "keep_last", "save_every_steps"):
            _require(getattr(self, name) >= 0, f"train.{name}", ">= 0", getattr(self, name))
        _require(self.log_interval >= 1, "train.log_interval", ">= 1", self.log_interval)
        if self.max_steps is not None:
            _require(self.max_steps >= 1, "train.max_steps", ">= 1 or null", self.max_steps)
        policies = NONFINITE_POLICIES
        _require(self.nonfinite in policies, "train.nonfinite", f"one of {policies}", self.nonfinite)


SECTIONS: dict[str, type] = {"model": ModelSection, "data": DataSection, "optim": OptimSection, "train": TrainSection}


@dataclass(frozen=True)
class RunConfig:
    """A complete, validated run: what the work dir's ``config.yaml`` and every checkpoint hold."""

    model: ModelSection = field(default_factory=ModelSection)  # model preset and overrides
    data: DataSection = field(default_factory=DataSection)  # dataset, sampling and loading
    optim: OptimSection = field(default_factory=OptimSection)  # optimiser and schedule
    train: TrainSection = field(default_factory=TrainSection)  # loop settings

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dicts (tuples become lists), JSON and YAML serialisable."""
        return {name: plain(dataclasses.asdict(getattr(self, name))) for name in SECTIONS}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        """Build a config from nested dicts; missing keys take their defaults, unknown keys fail.

        Raises:
            ConfigKeyError: On an unknown key or a bad value (the message names the dotted key).
        """
        _check_tree(data)
        sections = {name: SECTIONS[name](**dict(data.get(name) or {})) for name in SECTIONS}
        return cls(**sections)

    @classmethod
    def from_saved(cls, data: Mapping[str, Any]) -> RunConfig:
        """Build the config stored in a checkpoint, upgrading the keys of older releases.

        Frame counts, the image size and gradient checkpointing used to be data / train keys; they are model fields
        now (``model.overrides``). A user's own config file with the old keys still fails with a hint instead.
        """
        tree = {name: dict(section) if isinstance(section, Mapping) else section for name, section in data.items()}
        data_section, train_section = tree.get("data") or {}, tree.get("train") or {}
        model = dict(tree.get("model") or {})
        overrides = dict(model.get("overrides") or {})
        for old in ("num_video_frames", "num_pose_frames"):
            value = data_section.pop(old, None)
            if value is not None:
                overrides.setdefault(old, value)
        data_section.pop("image_size", None)  # the CLIP architecture's input size
        if train_section.pop("grad_checkpointing", False):
            overrides.setdefault("grad_checkpointing", True)
        if overrides:
            model["overrides"] = overrides
            tree["model"] = model
        return cls.from_dict(tree)

    def to_yaml(self) -> str:
        """The config as YAML text that :func:`load_config` reads back to an equal config."""
        return dump_yaml(self.to_dict())


def _all_keys() -> list[str]:
    keys = list(SECTIONS)
    for name, section in SECTIONS.items():
        keys += [f"{name}.{f.name}" for f in dataclasses.fields(section)]
    return keys


def _unknown_key(path: Sequence[str]) -> ConfigKeyError:
    """The error for an unknown dotted key, suggesting first a same-named field of another section."""
    from pevl.models.config import PeVLConfig

    full = ".".join(path)
    candidates = _all_keys()
    leaf_matches = [k for k in candidates if "." in k and k.split(".", 1)[1] == path[-1]]
    if len(path) == 2 and path[1] in field_types(PeVLConfig):  # a model field (frame counts, ...) written elsewhere
        hint = f" (a model field: did you mean 'model.overrides.{path[1]}'?)"
    elif len(path) == 2 and leaf_matches:
        hint = f" (did you mean '{leaf_matches[0]}'?)"
    elif len(path) == 2 and path[0] in SECTIONS:
        hint = suggest(full, [k for k in candidates if k.startswith(path[0] + ".")]) or suggest(full, candidates)
    else:
        hint = suggest(full, candidates)
    return ConfigKeyError(full, f"unknown config key '{full}'{hint}")


def _check_path(path: Sequence[str]) -> bool:
    """Validate a dotted key path; return True when it ends inside a free-form mapping field."""
    if path[0] not in SECTIONS:
        raise _unknown_key(path)
    if len(path) == 1:
        return False
    section_types = field_types(SECTIONS[path[0]])
    if path[1] not in section_types:
        raise _unknown_key(path[:2])
    tp = section_types[path[1]]
    is_mapping = tp is dict or typing.get_origin(tp) is dict
    if len(path) > 2 and not is_mapping:
        raise ConfigKeyError(".".join(path), f"config key '{'.'.join(path[:2])}' has no sub-keys")
    return is_mapping


def _check_tree(data: Mapping[str, Any]) -> None:
    """Check every key of a (partial) config tree; values are checked when the sections are built."""
    if not isinstance(data, Mapping):
        raise ConfigKeyError("", f"a config must be a mapping of sections, got {type(data).__name__}")
    for name, section in data.items():
        if name in (BASE_KEY, DELETE_KEY):
            continue
        _check_path([str(name)])
        if section is None:
            continue
        if not isinstance(section, Mapping):
            raise ConfigKeyError(str(name), f"config key '{name}' must be a mapping, got {section!r}")
        for key in section:
            if key != DELETE_KEY:
                _check_path([str(name), str(key)])


# ---- merging, provenance and overrides ------------------------------------------------------------------------------


def config_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two nested config dicts (keys present in only one included)."""
    changed = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            changed += [f"{key}.{inner}" for inner in config_changes(a, b)]
        elif plain(a) != plain(b):
            changed.append(str(key))
    return changed


def _parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``key=value``; the value is read as YAML (``1e-4`` -> float, ``null`` -> None, ``[a, b]`` -> list)."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise PevlError(f"--set {item!r}: expected key=value, e.g. optim.lr=1e-4")
    try:
        value = parse_yaml(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text  # not YAML: keep the literal string, like mmengine's --cfg-options
    return key.split("."), value


def _apply_override(tree: dict[str, Any], provenance: dict[str, str], item: str) -> dict[str, Any]:
    path, value = _parse_override(item)
    source = f"--set {item}"
    try:
        in_mapping_field = _check_path(path)
        if len(path) == 1:
            _check_tree({path[0]: value})
    except ConfigKeyError as err:
        raise PevlError(f"{source}: {err}") from None
    update: Any = value
    if len(path) == 2 and in_mapping_field and isinstance(value, Mapping):
        update = {DELETE_KEY: True, **value}  # `--set data.options={...}` replaces the mapping
    for part in reversed(path):
        update = {part: update}
    tree = deep_merge(tree, update)
    dotted = ".".join(path)
    for leaf in [k for k in provenance if k == dotted or k.startswith(dotted + ".")]:
        del provenance[leaf]
    for leaf in leaf_paths(update) or [dotted]:
        provenance[leaf] = source
    return tree


def _source_of(key: str, provenance: Mapping[str, str], default: str | None) -> str | None:
    """The file or ``--set`` that set ``key`` (or something below or above it)."""
    if key in provenance:
        return provenance[key]
    below = [src for leaf, src in provenance.items() if leaf.startswith(key + ".")]
    if below:
        return below[-1]
    parts = key.split(".")
    for n in range(len(parts) - 1, 0, -1):
        if ".".join(parts[:n]) in provenance:
            return provenance[".".join(parts[:n])]
    return default


# ---- validation hooks ------------------------------------------------------------------------------------------------


def check_model_section(section: ModelSection) -> ModelSection:
    """Default model check: the preset exists and ``overrides`` are typed fields of ``PeVLConfig`` that build.

    Returns:
        The section with its overrides converted to the field types (``"1e-4"`` -> ``1e-4``).

    Raises:
        ConfigKeyError: Naming ``model.preset``, the unknown or mistyped ``model.overrides.<key>``, or the
            model config's own complaint (e.g. frame counts that do not divide).
    """
    from pevl.models.config import PeVLConfig  # imported here: the model package is heavy and not always needed
    from pevl.models.presets import get_config, list_models

    names = list_models()
    if section.preset not in names:
        raise ConfigKeyError("model.preset", f"unknown model preset '{section.preset}'{suggest(section.preset, names)}")
    overrides = coerce_mapping(section.overrides, PeVLConfig, "model.overrides.")
    try:
        get_config(section.preset, **overrides)
    except ConfigKeyError:
        raise
    except PevlError as err:
        raise ConfigKeyError("model.overrides", f"model.overrides: {err}") from None
    return dataclasses.replace(section, overrides=overrides)


def parse_model_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``PeVLConfig`` fields from ``key=value`` strings, parsed and typed exactly as ``model.overrides`` are.

    Used where a command takes model fields alone (``pevl profile --set num_ucmr_blocks=2``); the
    ``model.overrides.`` prefix may be written or left out.

    Raises:
        PevlError: One line naming the ``--set`` at fault: an unknown field (closest one suggested) or a value
            of the wrong type.
    """
    from pevl.models.config import PeVLConfig

    tree: dict[str, Any] = {}
    typed: dict[str, Any] = {}
    for item in items:
        path, value = _parse_override(item)
        if path[:2] == ["model", "overrides"] and len(path) > 2:
            path = path[2:]
        for part in reversed(path):
            value = {part: value}
        tree = deep_merge(tree, value)
        try:
            typed = coerce_mapping(tree, PeVLConfig)
        except ConfigKeyError as err:
            raise PevlError(f"--set {item}: {err}") from None
    return typed


def check_data_section(section: DataSection) -> None:
    """Default data check: ``options`` are valid for the dataset, per ``pevl.data.datasets.dataset_options``.

    Raises:
        ConfigKeyError: Naming ``data.dataset`` or the unknown ``data.options.<key>``.
    """
    from pevl.data.datasets import DATASETS, dataset_options

    if section.dataset not in DATASETS:
        hint = suggest(section.dataset, sorted(DATASETS)) or f" (choose from {', '.join(sorted(DATASETS))})"
        raise ConfigKeyError("data.dataset", f"unknown dataset '{section.dataset}'{hint}")
    allowed = sorted(dataset_options(section.dataset))
    names = [f"data.options.{name}" for name in allowed]
    for key in section.options:
        full = f"data.options.{key}"
        if full not in names:
            hint = suggest(full, names) or f" (options of '{section.dataset}': {', '.join(allowed) or 'none'})"
            raise ConfigKeyError(full, f"unknown config key '{full}'{hint}")


ModelValidator = Callable[[ModelSection], ModelSection | None]
DataValidator = Callable[[DataSection], DataSection | None]


def _build(
    tree: Mapping[str, Any],
    provenance: Mapping[str, str],
    default_source: str | None,
    validate_model: ModelValidator | None,
    validate_data: DataValidator | None,
) -> RunConfig:
    try:
        cfg = RunConfig.from_dict(tree)
        for validate, key in ((validate_model, "model"), (validate_data, "data")):
            try:
                checked = validate(getattr(cfg, key)) if validate is not None else None
            except ConfigKeyError:
                raise
            except PevlError as err:  # a validator's own error: attribute it to whoever set the section
                raise ConfigKeyError(key, str(err)) from None
            if checked is not None:  # a validator may return the section with typed values
                cfg = dataclasses.replace(cfg, **{key: checked})
    except ConfigKeyError as err:
        source = _source_of(err.key, provenance, default_source)
        raise PevlError(f"{source}: {err}" if source else str(err)) from None
    return cfg


def load_config(
    path: str | Path | None,
    overrides: Sequence[str] = (),
    *,
    validate_model: ModelValidator | None = check_model_section,
    validate_data: DataValidator | None = check_data_section,
) -> RunConfig:
    """Read a YAML run config (with its ``_base_`` files) and apply ``--set`` overrides.

    Args:
        path: The YAML file; ``None`` starts from the defaults.
        overrides: ``key=value`` strings applied in order; values are YAML (``optim.lr=1e-4``,
            ``model.overrides.num_ucmr_blocks=2``, ``model.pretrained=null``).
        validate_model: Checks (and may return a typed copy of) the model section: preset name, ``overrides`` keys
            and types; ``None`` skips it.
        validate_data: Checks the data section (``options`` keys for the dataset); ``None`` skips it.

    Returns:
        The validated config.

    Raises:
        PevlError: One line naming the file or ``--set`` at fault: a missing file, bad YAML, an unknown key
            (with the closest valid key) or a bad value.
    """
    tree: dict[str, Any] = {}
    provenance: dict[str, str] = {}
    default_source = None
    if path is not None:
        tree, provenance = load_tree(Path(path).expanduser(), _check_tree)
        default_source = str(path)
    for item in overrides:
        tree = _apply_override(tree, provenance, item)
    return _build(tree, provenance, default_source, validate_model, validate_data)


def apply_overrides(
    cfg: RunConfig,
    overrides: Sequence[str],
    *,
    validate_model: ModelValidator | None = check_model_section,
    validate_data: DataValidator | None = check_data_section,
) -> RunConfig:
    """Return ``cfg`` with ``key=value`` overrides applied (see :func:`load_config`)."""
    tree = cfg.to_dict()
    provenance: dict[str, str] = {}
    for item in overrides:
        tree = _apply_override(tree, provenance, item)
    return _build(tree, provenance, None, validate_model, validate_data)


def save_config(cfg: RunConfig, path: str | Path) -> Path:
    """Write ``cfg`` as YAML, atomically (the work dir's ``config.yaml``)."""
    path = Path(path)
    with atomic_open(path, "w") as f:
        f.write(cfg.to_yaml())
    return path
