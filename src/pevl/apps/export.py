"""ONNX export of a trained model for deployment: video + pose in, class scores out.

The class texts are encoded at export time and stored in the graph as constants, so the exported model needs no
tokenizer or text encoder: it scores exactly the labels it was exported with. Inputs are what
:func:`pevl.apps.inference.prepare_clip` produces (``video [B, T_v, 3, S, S]`` CLIP-normalised frames, ``pose
[B, T_p, 17, 3]`` keypoints normalised to the crop); a pose-only model takes only ``pose``, a video-only one only
``video``. The batch dimension is dynamic. Outputs: ``logits [B, C]`` and ``probabilities [B, C]`` (softmax).

Not exported: attention maps (``need_weights``), the training losses, and the text encoder (new label texts need a
new export). The graph is traced in full precision (fp32).

The model is traced with PyTorch's TorchScript-based ONNX exporter (``dynamo=False``, no ``onnxscript`` needed), which
needs the ``onnx`` package; checking the result needs ``onnxruntime``. Both: ``pip install 'pevl[export]'``.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pevl.engine.builder import load_trained_model
from pevl.errors import PevlError, file_error, first_line
from pevl.models.pevl import PeVL
from pevl.models.text_encoder import TextFeatures
from pevl.utils.io import atomic_path, check_output_file, write_json

INSTALL_HINT = "pip install 'pevl[export]'"
DEFAULT_OPSET = 17
MIN_OPSET = 14  # scaled_dot_product_attention and LayerNorm export from here on


def opset_range() -> tuple[int, int]:
    """The ONNX opsets ``pevl export`` accepts: from :data:`MIN_OPSET` to the highest torch's exporter writes."""
    from torch.onnx import _constants

    return MIN_OPSET, int(getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", DEFAULT_OPSET))


class ScoringGraph(nn.Module):
    """A model with its class texts encoded: ``(video, pose) -> (logits, probabilities)``.

    Args:
        model: The trained model (eval mode).
        text: The encoded class texts, stored as buffers.
    """

    def __init__(self, model: PeVL, text: TextFeatures) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("sentence", text.sentence.detach().float().clone())
        self.register_buffer("words", text.words.detach().float().clone())
        self.register_buffer("word_mask", text.word_mask.detach().clone())
        self.register_buffer("phrase_index", text.phrase_index.detach().clone())

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores of clips: inputs are ``(video, pose)``, ``(pose,)`` or ``(video,)`` as the model uses them."""
        cfg = self.model.config
        video = inputs[0] if cfg.use_video else None
        pose = inputs[-1] if cfg.use_pose else None
        text = TextFeatures(self.sentence, self.words, self.word_mask, self.phrase_index)
        logits = self.model(video=video, pose=pose, texts=text).logits
        return logits, logits.softmax(dim=-1)


def input_names(model: PeVL) -> list[str]:
    """The graph's input names, in order."""
    return (["video"] if model.config.use_video else []) + (["pose"] if model.config.use_pose else [])


def example_inputs(model: PeVL, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random inputs of the right shapes (for tracing)."""
    cfg = model.config
    generator = torch.Generator().manual_seed(seed)
    size = cfg.clip.vision.image_size
    out = []
    if cfg.use_video:
        out.append(torch.randn(batch, cfg.num_video_frames, 3, size, size, generator=generator))
    if cfg.use_pose:
        pose = torch.rand(batch, cfg.num_pose_frames, cfg.num_joints, 3, generator=generator) * 2 - 1
        pose[..., 2] = pose[..., 2].abs()
        out.append(pose)
    return tuple(out)


@dataclass
class ExportResult:
    """What :func:`export_onnx` wrote and how the check went."""

    path: Path
    labels: list[str]
    inputs: list[str]
    metadata: Path | None = None
    max_abs_diff: dict[str, float] = field(default_factory=dict)  # output name -> max |onnx - torch|
    checked_clips: list[str] = field(default_factory=list)


def export_onnx(
    checkpoint: str | Path,
    out: str | Path,
    labels: Sequence[str] | None = None,
    opset: int = DEFAULT_OPSET,
    check_videos: Sequence[str | Path] = (),
    pose_file: str | Path | None = None,
) -> ExportResult:
    """Export a checkpoint to ONNX and, optionally, check it against PyTorch on real clips.

    Args:
        checkpoint: A checkpoint directory or ``model.safetensors``.
        out: The ``.onnx`` file (written atomically); a ``<out>.json`` beside it describes inputs and labels.
        labels: Label texts to bake in (default: the checkpoint's classes).
        opset: ONNX opset version.
        check_videos: Videos whose clips are scored by both onnxruntime and PyTorch (all in one batch, and the
            first alone, to exercise the dynamic batch size).
        pose_file: Poses of the check videos (PYSKL pickle); default: cache, else estimated.

    Returns:
        The :class:`ExportResult` (``max_abs_diff`` filled when videos were checked).
    """
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise file_error(out, "the exported model must be a .onnx file")
    low, high = opset_range()
    if not low <= opset <= high:
        raise PevlError(f"--opset {opset}: this torch exports ONNX opsets {low} to {high} (default {DEFAULT_OPSET})")
    check_output_file(out, "exported model")
    try:
        import onnx  # noqa: F401  (torch's exporter imports it)
    except ImportError:
        raise PevlError(f"ONNX export needs the onnx package; install it with: {INSTALL_HINT}") from None
    loaded = load_trained_model(checkpoint)
    model = loaded.model.float().eval()
    names = list(labels) if labels is not None else loaded.classes
    if not names:
        raise PevlError(f"{checkpoint}: the checkpoint names no classes; pass --labels")
    coarse = loaded.coarse if labels is None else None
    with torch.no_grad():
        text = model.encode_class_texts(model.build_class_texts(names, coarse))
    graph = ScoringGraph(model, text).eval()
    inputs = input_names(model)
    dynamic = {name: {0: "batch"} for name in [*inputs, "logits", "probabilities"]}
    with atomic_path(out) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with torch.no_grad():
                torch.onnx.export(
                    graph, example_inputs(model), str(tmp), dynamo=False, input_names=inputs,
                    output_names=["logits", "probabilities"], dynamic_axes=dynamic, opset_version=opset,
                )  # fmt: skip
        except (RuntimeError, ValueError, TypeError) as err:  # the message may hold a whole graph dump
            raise PevlError(f"{out}: torch cannot export this model at opset {opset}: {first_line(err)}") from None
        result = ExportResult(out, names, inputs, out.with_name(out.name + ".json"))
        if check_videos:  # checked before the rename: a failed check leaves no file behind
            result.max_abs_diff, result.checked_clips = check_onnx(tmp, graph, check_videos, pose_file)
    cfg = model.config
    write_json(result.metadata, {
        "checkpoint": str(loaded.checkpoint.path),
        "labels": names,
        "inputs": {
            **({"video": ["batch", cfg.num_video_frames, 3, cfg.clip.vision.image_size, cfg.clip.vision.image_size]}
               if cfg.use_video else {}),
            **({"pose": ["batch", cfg.num_pose_frames, cfg.num_joints, 3]} if cfg.use_pose else {}),
        },
        "outputs": {"logits": ["batch", len(names)], "probabilities": ["batch", len(names)]},
        "preprocessing": "pevl.apps.inference.prepare_clip (centre crop, CLIP mean/std; pose in [-1, 1] of the crop)",
        "opset": opset,
    })  # fmt: skip
    return result


def _session(path: Path) -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise PevlError(f"checking an ONNX export needs onnxruntime; install it with: {INSTALL_HINT}") from None
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_onnx(
    path: str | Path, graph: ScoringGraph, videos: Sequence[str | Path], pose_file: str | Path | None = None
) -> tuple[dict[str, float], list[str]]:
    """Score real clips with onnxruntime and PyTorch (fp32) and return the largest differences per output.

    The clips are run as one batch and the first one alone too (two batch sizes through one graph).
    """
    from pevl.apps.inference import prepare_clip

    session = _session(Path(path))
    model = graph.model
    clips = [prepare_clip(v, model.config, pose_file=pose_file) for v in videos]
    names = input_names(model)

    def stacked(items: list[Any]) -> tuple[torch.Tensor, ...]:
        out = []
        if model.config.use_video:
            out.append(torch.cat([c.video for c in items]))
        if model.config.use_pose:
            out.append(torch.cat([c.pose for c in items]))
        return tuple(out)

    worst = {"logits": 0.0, "probabilities": 0.0}
    for batch in (clips, clips[:1]):
        tensors = stacked(batch)
        with torch.no_grad():
            expected = [t.numpy() for t in graph(*tensors)]
        got = session.run(["logits", "probabilities"], {n: t.numpy() for n, t in zip(names, tensors, strict=True)})
        for name, want, have in zip(("logits", "probabilities"), expected, got, strict=True):
            if have.shape != want.shape:
                raise PevlError(f"{path}: ONNX output {name} has shape {have.shape}, PyTorch {want.shape}")
            worst[name] = max(worst[name], float(np.abs(have - want).max()))
    return worst, [str(v) for v in videos]


def describe(result: ExportResult) -> str:
    """A short report of an export."""
    lines = [f"wrote {result.path} ({result.path.stat().st_size / 1e6:.1f} MB): inputs {', '.join(result.inputs)}; "
             f"{len(result.labels)} classes; metadata in {result.metadata}"]  # fmt: skip
    if result.max_abs_diff:
        diffs = ", ".join(f"{k} {v:.2e}" for k, v in result.max_abs_diff.items())
        lines.append(f"onnxruntime vs PyTorch on {len(result.checked_clips)} real clips: max |diff| {diffs}")
    return "\n".join(lines)


def load_metadata(path: str | Path) -> dict[str, Any]:
    """The ``<model>.onnx.json`` written beside an export."""
    meta = Path(str(path) + ".json")
    try:
        return json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise file_error(meta, f"cannot read the export metadata ({err})") from None
