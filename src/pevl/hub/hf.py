"""The Hugging Face Hub: ``hf-hub:org/name`` models and CLIP weights, and hub-ready folders of trained models.

A hub-ready folder (:func:`write_hub_folder`) holds what timm and open_clip users expect to find::

    model.safetensors   the checkpoint's model file as it is (pevl metadata: model config, classes, metrics)
    config.json         the model config, label list, metrics and training data, readable without pevl
    labels.txt          the class texts, one per line, in class-index order
    README.md           the model card: YAML metadata (library, tags, datasets, metrics) and a usage section

``pevl.create_model("hf-hub:org/name")`` and ``pevl predict -k hf-hub:org/name`` read it back through
``huggingface_hub`` (its cache; ``HF_HUB_OFFLINE=1`` uses the cache only). Needs ``pip install 'pevl[hf]'``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pevl.errors import PevlError, file_error, first_line

HF_HUB_PREFIX = "hf-hub:"
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
LABELS_FILE = "labels.txt"
CARD_FILE = "README.md"
HUB_FILES: tuple[str, ...] = (MODEL_FILE, CONFIG_FILE, LABELS_FILE, CARD_FILE)
_INSTALL = "pip install 'pevl[hf]'"


def is_hub_name(name: str | os.PathLike[str]) -> bool:
    """Whether ``name`` is an ``hf-hub:org/name`` reference."""
    return str(name).startswith(HF_HUB_PREFIX)


def parse_repo(name: str) -> tuple[str, str | None]:
    """``"org/name"`` or ``"org/name@revision"`` (an optional ``hf-hub:`` prefix) -> ``(repo_id, revision)``.

    Raises:
        PevlError: When the repository id is not ``org/name`` (or ``name``).
    """
    repo = name[len(HF_HUB_PREFIX) :] if is_hub_name(name) else name
    repo, _, revision = repo.partition("@")
    parts = repo.split("/")
    if not repo or len(parts) > 2 or not all(parts):
        raise PevlError(f"{name!r}: a Hugging Face Hub model is named hf-hub:org/name (optionally @revision)")
    return repo, revision or None


def _hub() -> Any:
    try:
        import huggingface_hub
    except ImportError:
        raise PevlError(f"the Hugging Face Hub needs the huggingface_hub package: {_INSTALL}") from None
    return huggingface_hub


def hub_weights_folder(name: str, weight_files: Sequence[str]) -> Path:
    """Fetch (or find in the cache) a Hub repository's config and first available weights file.

    Args:
        name: ``org/name`` or ``org/name@revision``.
        weight_files: Candidate weight file names, in order of preference.

    Returns:
        The local snapshot folder holding them.

    Raises:
        PevlError: The package is missing, the repository is not reachable and not cached, or it has none of
            ``weight_files``.
    """
    hub = _hub()
    repo_id, revision = parse_repo(name)
    errors = hub.errors
    last = ""
    for weights in weight_files:
        try:
            file = hub.hf_hub_download(repo_id, weights, revision=revision)
        except errors.LocalEntryNotFoundError as err:  # offline and not cached: the next candidate may be
            last = first_line(err)
            continue
        except errors.EntryNotFoundError:  # the repository has no such file
            continue
        except (OSError, ValueError) as err:  # no such repository, network, bad name ...
            problem = f"{type(err).__name__}: {first_line(err)}"
            raise PevlError(f"hf-hub:{name}: cannot fetch {weights} ({problem})") from None
        for extra in (CONFIG_FILE, LABELS_FILE):
            try:
                hub.hf_hub_download(repo_id, extra, revision=revision)
            except (errors.EntryNotFoundError, OSError):  # optional files
                pass
        return Path(file).parent
    detail = f" ({last})" if last else ""
    raise PevlError(
        f"hf-hub:{name}: none of {', '.join(weight_files)} found in the repository or the local cache{detail}"
    )


def resolve_model_source(source: str | os.PathLike[str]) -> str | os.PathLike[str]:
    """A trained model's checkpoint path: ``hf-hub:org/name`` becomes its fetched ``model.safetensors``."""
    if not is_hub_name(source):
        return source
    return hub_weights_folder(str(source)[len(HF_HUB_PREFIX) :], (MODEL_FILE,)) / MODEL_FILE


# ---- writing -----------------------------------------------------------------------------------------------------

_METRIC_NAMES = {"top1": "Top-1 accuracy", "top5": "Top-5 accuracy", "mean_class_acc": "Mean class accuracy"}


def _training_data(run_config: Mapping[str, Any]) -> dict[str, Any]:
    data = dict(run_config.get("data") or {})
    keep = ("dataset", "root", "train_split", "val_split", "test_split", "pose_file", "options")
    return {key: data[key] for key in keep if data.get(key) not in (None, {}, "")}


def _scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def model_card(
    repo_id: str,
    model_config: Mapping[str, Any],
    classes: Sequence[str],
    metrics: Mapping[str, float],
    training_data: Mapping[str, Any],
    dataset: str | None = None,
) -> str:
    """The ``README.md`` of a hub folder: YAML front matter the Hub indexes, then the card itself.

    Args:
        repo_id: ``org/name`` the folder is meant for.
        model_config: The PeVL model config (``PeVLConfig.to_dict()``).
        classes: The class texts.
        metrics: Evaluation metrics (fractions in ``[0, 1]``), e.g. ``{"top1": 0.83}``.
        training_data: What the model was trained on (the run config's data section).
        dataset: The dataset's name on the Hub or in papers (default: the run config's dataset).

    Returns:
        The card's text.
    """
    dataset = dataset or str(training_data.get("dataset") or "unknown")
    split = str(training_data.get("val_split") or training_data.get("test_split") or "val")
    lines = ["---", "library_name: pevl", "pipeline_tag: video-classification", "tags:"]
    lines += [f"- {tag}" for tag in ("action-recognition", "pose", "clip", "pevl")]
    lines += ["datasets:", f"- {json.dumps(dataset)}"]
    if metrics:
        name, kind = json.dumps(dataset), json.dumps(dataset)
        lines += ["model-index:", f"- name: {json.dumps(repo_id)}", "  results:", "  - task:",
                  "      type: video-classification", "    dataset:", f"      name: {name}", f"      type: {kind}",
                  f"      split: {json.dumps(split)}", "    metrics:"]  # fmt: skip
        for key, value in metrics.items():
            lines += [f"    - type: {json.dumps(key)}", f"      name: {json.dumps(_METRIC_NAMES.get(key, key))}",
                      f"      value: {round(100 * value, 2) if value <= 1 else round(value, 4)}"]  # fmt: skip
    lines += ["---", "", f"# {repo_id}", ""]
    clip = model_config.get("clip", {}) if isinstance(model_config.get("clip"), Mapping) else {}
    vision = clip.get("vision", {}) if isinstance(clip.get("vision"), Mapping) else {}
    arch = f"ViT with {vision.get('patch_size', '?')}-px patches, width {vision.get('width', '?')}"
    lines += [
        "A PeVL (pose-enhanced vision-language) action recognition model trained with "
        f"[pevl](https://pypi.org/project/pevl/): CLIP image tower ({arch}), 2D-pose branch, "
        f"{len(classes)} action classes (`{LABELS_FILE}`).",
        "",
        "## Training data",
        "",
    ]
    lines += [f"- {key}: `{value}`" for key, value in training_data.items()] or ["- not recorded in the checkpoint"]
    lines += ["", "## Evaluation", ""]
    if metrics:
        lines += [f"Measured on the `{split}` split of {dataset}.", "", "| metric | value |", "|---|---|"]
        lines += [f"| {_METRIC_NAMES.get(k, k)} | {100 * v:.2f}% |" if v <= 1 else f"| {k} | {v:.4g} |"
                  for k, v in metrics.items()]  # fmt: skip
    else:
        lines.append("No evaluation metrics were recorded with this checkpoint.")
    lines += [
        "",
        "## Usage",
        "",
        "```bash",
        "pip install 'pevl[hf]'",
        f"pevl predict video.mp4 -k hf-hub:{repo_id}",
        "```",
        "",
        "```python",
        "import pevl",
        "",
        f'model = pevl.create_model("hf-hub:{repo_id}")',
        "```",
        "",
    ]
    return "\n".join(lines)


def write_hub_folder(
    checkpoint: str | os.PathLike[str],
    out: str | os.PathLike[str],
    repo_id: str,
    *,
    dataset: str | None = None,
    metrics: Mapping[str, float] | None = None,
) -> Path:
    """Write a hub-ready folder for a trained checkpoint (see the module docstring for its files).

    Args:
        checkpoint: A checkpoint directory, its ``model.safetensors`` or a work dir (its latest checkpoint).
        out: The folder to create; it must not exist yet, or be empty (never overwritten).
        repo_id: The Hub repository it is meant for (named in the card).
        dataset: The training dataset's name for the card (default: the run config's dataset).
        metrics: Evaluation metrics to report (default: those stored with the checkpoint).

    Returns:
        The folder.

    Raises:
        PevlError: Not a trained pevl checkpoint, or ``out`` is a file or a non-empty folder.
    """
    from pevl.engine.checkpoint import load_checkpoint
    from pevl.utils.io import apply_umask

    parse_repo(repo_id)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise file_error(out, "exists and is not an empty folder (a hub folder is never written over)")
    loaded = load_checkpoint(checkpoint)
    model_config = loaded.extra.get("model_config")
    classes = [str(c) for c in loaded.extra.get("classes") or []]
    if not model_config:
        raise file_error(loaded.model_file, "no model config in the checkpoint (not written by `pevl train`?)")
    if not classes:
        raise file_error(loaded.model_file, "the checkpoint names no classes: a hub model needs its label list")
    scores = _scalar_metrics(metrics if metrics is not None else loaded.metrics)
    data = _training_data(loaded.config)
    config = {
        "library_name": "pevl",
        "model_config": model_config,
        "classes": classes,
        "coarse": loaded.extra.get("coarse"),
        "metrics": scores,
        "training_data": data,
        "epoch": loaded.epoch,
        "step": loaded.step,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))  # renamed into place when complete
    try:
        shutil.copyfile(loaded.model_file, tmp / MODEL_FILE)
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        (tmp / LABELS_FILE).write_text("".join(f"{c}\n" for c in classes), encoding="utf-8")
        (tmp / CARD_FILE).write_text(model_card(repo_id, model_config, classes, scores, data, dataset), "utf-8")
        apply_umask(tmp, directory=True)  # mkdtemp made it 0700 whatever the umask
        os.replace(tmp, out)  # also replaces an empty folder
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def push_hub_folder(folder: str | os.PathLike[str], repo_id: str, *, private: bool = False) -> str:
    """Upload a folder from :func:`write_hub_folder` to the Hub (needs the network and a token).

    Returns:
        The URL of the commit.

    Raises:
        PevlError: The package is missing, or the upload fails (with the Hub's reason).
    """
    hub = _hub()
    repo, revision = parse_repo(repo_id)
    folder = Path(folder)
    missing = [name for name in HUB_FILES if not (folder / name).is_file()]
    if missing:
        raise file_error(folder, f"not a hub folder (no {missing[0]}); write one with `pevl push-to-hub --out`")
    try:
        hub.create_repo(repo, private=private, exist_ok=True)
        info = hub.upload_folder(repo_id=repo, folder_path=str(folder), revision=revision,
                                 commit_message="Upload PeVL model", allow_patterns=list(HUB_FILES))  # fmt: skip
    except Exception as err:  # network, authentication, permission: all reported the same way
        raise PevlError(f"hf-hub:{repo}: upload failed ({type(err).__name__}: {first_line(err)})") from None
    return str(getattr(info, "commit_url", info))
