"""The numbers behind the paper's attention figures (Figs. 8-12), computed for one clip.

* **spatial attention** (Fig. 8): P2V-R attention of the frame tokens over the joints of their window (mean over
  heads, frame tokens and the window's pose frames: one weight per joint, summing to one per frame), and the same
  attention logits normalised over the image patches, weighted by those joint weights: a heat map over patches that
  sums to one per frame;
* **background-token grouping** (Fig. 9): for every patch, the V2P-R group (17 joints + the background token) with the
  highest assignment score (joints of the window's pose frames are merged by joint type);
* **temporal attention** (Figs. 10, 12): attention over the clip's frames for the predicted class: the mean over the
  label's words of SGMC's semantic concept attention, or, for a model without it (the VL baseline), the softmax over
  frames of the frame-text similarity;
* **semantic concept attention** (Fig. 11): for each comma-separated phrase of the predicted label, the mean over its
  words of the word -> frame attention.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pevl.apps.inference import ClipInput, run_model
from pevl.data.transforms import centre_square_box
from pevl.models.pevl import PeVL
from pevl.models.prompts import split_phrases
from pevl.viz.explanation import BACKGROUND, Explanation


def _crops_and_joints(model: PeVL, clip: ClipInput) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre crops of the RGB frames, and the aligned pose frame's joints in crop pixels."""
    height, width = clip.frames.shape[1:3]
    x0, y0, w, h = centre_square_box(height, width)
    crops = clip.frames[:, y0 : y0 + h, x0 : x0 + w]
    cfg = model.config
    window = cfg.pose_window
    aligned = np.arange(len(clip.frames)) * window + window // 2
    if clip.pose is not None:
        pose = clip.pose[0, aligned].numpy()  # normalised to the crop: [-1, 1] spans the crop
        joints = (pose[..., :2] + 1) / 2 * np.array([w, h], dtype=np.float32)
        visible = pose[..., 2] > 0
    else:
        joints = np.zeros((len(crops), cfg.num_joints, 2), np.float32)
        visible = np.zeros((len(crops), cfg.num_joints), bool)
    return np.ascontiguousarray(crops), joints, visible


def _temporal(
    model: PeVL, out: Any, predicted: int, texts: Any, clip: ClipInput
) -> tuple[np.ndarray, np.ndarray, str, Any]:
    """Temporal attention of the predicted class, the frame numbers of its cells, its description, word attention."""
    words = out.maps.get("word_attention", {})
    stream = next((s for s in ("fused", "pose", "video") if s in words), None)
    frame_numbers = {"video": clip.video_indices, "pose": clip.pose_indices, "fused": clip.pose_indices}
    if stream is not None:
        attention = words[stream][0, predicted].float()  # [L, T]
        mask = texts.word_mask[predicted][: attention.shape[0]].to(attention.device)
        temporal = attention[mask].mean(dim=0)
        source = f"semantic concept attention of the {stream} stream (mean over the label's words)"
        return temporal.cpu().numpy(), frame_numbers[stream], source, attention
    frames = out.maps["frames"]
    stream = next(s for s in ("fused", "pose", "video") if s in frames)
    text = model.encode_class_texts(texts)
    sim = F.normalize(frames[stream][0].float(), dim=-1) @ F.normalize(text.sentence[predicted].float(), dim=-1)
    temporal = (model.sgmc.scale * sim).softmax(dim=0)
    source = f"softmax over frames of the {stream} frame-text similarity (no SGMC in this model)"
    return temporal.cpu().numpy(), frame_numbers[stream], source, None


def _phrase_attention(attention: torch.Tensor, texts: Any, predicted: int) -> tuple[list[str], np.ndarray]:
    """Mean word -> frame attention of each comma-separated phrase of the predicted label."""
    index = texts.phrase_index[predicted][: attention.shape[0]].to(attention.device)
    phrases = split_phrases(texts.labels[predicted])
    rows, names = [], []
    for k in range(int(index.max().item()) + 1 if (index >= 0).any() else 0):
        selected = index == k
        if selected.any():
            rows.append(attention[selected].mean(dim=0).cpu().numpy())
            names.append(phrases[k] if k < len(phrases) else f"phrase {k + 1}")
    return names, np.stack(rows) if rows else np.zeros((0, attention.shape[1]), np.float32)


@torch.no_grad()
def explain_clip(
    model: PeVL,
    clip: ClipInput,
    labels: list[str],
    coarse: list[str] | None = None,
    model_name: str = "model",
    target: int | None = None,
) -> Explanation:
    """Run the model on a prepared clip with attention maps and turn them into figure-ready numbers.

    Args:
        model: The model (eval mode).
        clip: One clip from :func:`pevl.apps.inference.prepare_clip` (one crop).
        labels: The label texts to score.
        coarse: Their coarse action types, or ``None``.
        model_name: Name shown in the figures.
        target: Class whose temporal and concept attention to show (default: the predicted one), e.g. another
            model's prediction when two models are compared on the same class.

    Returns:
        The :class:`Explanation` (``predicted`` is ``target`` when given).
    """
    probabilities, out = run_model(model, clip, labels, coarse, amp="off", need_weights=True)
    predicted = int(np.argmax(probabilities)) if target is None else int(target)
    texts = model.build_class_texts(labels, coarse)
    crops, joints, visible = _crops_and_joints(model, clip)
    vision = model.config.clip.vision
    grid_side = vision.image_size // vision.patch_size
    temporal, temporal_frames, source, word_attention = _temporal(model, out, predicted, texts, clip)
    expl = Explanation(
        model_name, list(labels), probabilities, predicted, crops, clip.video_indices, joints, visible,
        (grid_side, grid_side), temporal, np.asarray(temporal_frames), source,
    )  # fmt: skip
    if word_attention is not None:
        expl.phrases, expl.phrase_attention = _phrase_attention(word_attention, texts, predicted)
    else:
        expl.notes.append("This model has no semantic concept attention (no SGMC sub-action level).")

    blocks = out.maps.get("ucmr") or []
    maps = blocks[-1] if blocks else None
    num_joints = model.config.num_joints
    if maps is not None and maps.p2v is not None:
        frame_tokens = maps.p2v[0].float().mean(dim=(1, 2))  # [T_v, w*J]: mean over heads and frame tokens
        per_joint = frame_tokens.view(frame_tokens.shape[0], -1, num_joints).mean(dim=1)
        expl.joint_weights = (per_joint / per_joint.sum(dim=-1, keepdim=True).clamp_min(1e-12)).cpu().numpy()
        patches = maps.p2v_patches[0].float().mean(dim=1)  # [T_v, w*J, N]: mean over heads
        heat = (frame_tokens.unsqueeze(-1) * patches).sum(dim=1)
        heat = heat / heat.sum(dim=-1, keepdim=True).clamp_min(1e-12)
        expl.patch_heat = heat.view(-1, grid_side, grid_side).cpu().numpy()
    elif model.config.use_pose and model.config.use_video:
        expl.notes.append("This model has no P2V-R, so there is no spatial attention over joints and patches.")
    if maps is not None and maps.assignment is not None:
        # The V2P-R groups of the pose frame aligned with each RGB frame (the one whose joints are drawn): its 17
        # joints + the background token, exactly the softmax the model takes (a missing joint has no share).
        window = model.config.pose_window
        assignment = maps.assignment[0, :, window // 2].float()  # [T_v, J (+1), N]
        best = assignment.argmax(dim=1)
        has_background = assignment.shape[1] == num_joints + 1
        groups = torch.where(has_background & (best == num_joints), torch.full_like(best, BACKGROUND), best)
        expl.grouping = groups.view(-1, grid_side, grid_side).cpu().numpy()
    elif model.config.use_pose and model.config.use_video:
        expl.notes.append("This model has no V2P-R, so there is no background-token grouping.")

    missing = [int(n) for n, v in zip(clip.video_indices, visible, strict=True) if not v.any()]
    if clip.pose is not None and missing:
        expl.notes.append(
            f"No person was found in frame{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))}: "
            "the joints are left out there."
        )
    return expl
