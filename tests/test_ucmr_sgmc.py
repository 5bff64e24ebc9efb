"""UCMR (V2P-R, P2V-R) and SGMC (multi-level contrast, strength coefficients) behave as the paper describes."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pevl.models.losses import strength_coefficients, weighted_info_nce
from pevl.models.presets import create_model, get_config
from pevl.models.sgmc import SemanticConceptAttention
from pevl.models.ucmr import P2VRefinement, UCMRBlock, V2PRefinement


def test_v2p_assignment_splits_every_patch_among_joints_and_background():
    v2p = V2PRefinement(dim=16, background_token=True)
    pose, patches = torch.randn(2, 2, 17, 16), torch.randn(2, 9, 16)
    refined, assign = v2p(pose, patches)
    assert assign.shape == (2, 2, 17 + 1, 9)  # per pose frame of the window: 17 joints + 1 background token
    torch.testing.assert_close(assign.sum(dim=2), torch.ones(2, 2, 9))
    # Zero-initialised MLP: the refinement starts as the identity.
    torch.testing.assert_close(refined, pose)


def test_v2p_hard_assignment_is_one_hot_forward_and_differentiable():
    v2p = V2PRefinement(dim=16, hard=True)
    torch.nn.init.normal_(v2p.mlp[-1].weight)
    pose = torch.randn(1, 1, 17, 16, requires_grad=True)
    refined, assign = v2p(pose, torch.randn(1, 4, 16))
    one_hot = F.one_hot(assign.argmax(dim=2), assign.shape[2]).transpose(2, 3).float()
    torch.testing.assert_close(assign.detach(), one_hot, atol=1e-6, rtol=0)
    refined.sum().backward()
    assert v2p.q.weight.grad is not None and v2p.q.weight.grad.abs().sum() > 0


def test_p2v_attention_is_over_the_joints_of_the_window_and_starts_as_identity():
    p2v = P2VRefinement(dim=16, heads=2)
    frames, pose = torch.randn(3, 5, 16), torch.randn(3, 34, 16)
    out, logits = p2v(frames, pose, need_weights=True)
    probs = logits.softmax(-1)
    assert probs.shape == (3, 2, 5, 34)
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, 2, 5))
    torch.testing.assert_close(out, frames)


def test_ucmr_pairs_each_video_frame_with_its_pose_window():
    cfg = get_config("pevl_tiny")
    block = UCMRBlock(cfg)
    torch.nn.init.normal_(block.v2p.mlp[-1].weight)
    video = torch.randn(1, 4, 17, cfg.clip.vision.width)
    pose = torch.randn(1, 8, 17, cfg.clip.vision.width)
    _, refined, _ = block(video, pose)
    # Changing the patches of video frame 0 may only change pose frames 0-1 (its window), not the others.
    video2 = video.clone()
    video2[:, 0, 1:] += 5.0
    _, refined2, maps = block(video2, pose)
    changed = (refined2 - refined).abs().flatten(2).amax(-1)[0]
    assert changed[:2].gt(1e-6).all() and changed[2:].le(1e-6).all()
    assert maps.assignment.shape == (1, 4, 2, 17 + 1, 16)


def test_strength_coefficients_follow_label_text_discrepancy():
    texts = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.8, 0.6], [0.0, 1.0]]), dim=-1)
    labels = torch.tensor([0, 0, 1, 2])
    s = strength_coefficients(texts, texts, labels, labels)
    assert s[0, 1] == 0 and s[0, 0] == 0  # same label: not a negative at all
    assert s[0, 3] > s[0, 2] > 0  # a more different label is pushed harder
    # s_j = N_neg * d_j / sum_neg(d): the coefficients average one over each row's true negatives.
    negatives = (labels[:, None] != labels[None, :]).float().sum(-1)
    torch.testing.assert_close(s.sum(-1), negatives)


def test_weighted_info_nce_with_unit_weights_is_plain_info_nce():
    logits = torch.randn(5, 5)
    plain = F.cross_entropy(logits, torch.arange(5))
    torch.testing.assert_close(weighted_info_nce(logits, torch.arange(5), torch.ones(5, 5)), plain)
    # Zero-weight negatives drop out of the denominator.
    weights = torch.ones(5, 5)
    weights[0, 1:] = 0
    assert weighted_info_nce(logits[:1], torch.tensor([0]), weights[:1]).abs() < 1e-6


def test_semantic_concept_attention_rows_sum_to_one_and_match_cosine_for_one_frame():
    attention = SemanticConceptAttention(dim=8)
    frames, words = torch.randn(2, 6, 8), torch.randn(3, 5, 8)
    mask = torch.zeros(3, 5, dtype=torch.bool)
    mask[:, 1:4] = True
    sim, attn = attention(frames, words, mask)
    assert sim.shape == (2, 3) and attn.shape == (2, 3, 5, 6)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 3, 5))
    # With a single frame, each word is compared with that frame: the mean cosine over the label words.
    sim1, _ = attention(frames[:, :1], words, mask)
    cos = F.cosine_similarity(words[None, :, 1:4], frames[:, None, None, 0], dim=-1).mean(-1)
    torch.testing.assert_close(sim1, cos)


def test_fusion_starts_as_the_average_of_video_and_pose():
    model = create_model("pevl_tiny")
    video, pose = torch.randn(2, 4, 32), torch.randn(2, 8, 32)
    frames, _ = model.sgmc.stream_frames(video, pose)
    torch.testing.assert_close(frames["fused"].mean(1), (video.mean(1) + pose.mean(1)) / 2)


def test_scores_average_action_and_sub_action_probabilities():
    model = create_model("pevl_tiny").eval()
    size = model.config.clip.vision.image_size
    labels = ["a b, c", "d e, f", "g, h i"]
    with torch.no_grad():
        out = model(video=torch.randn(2, 4, 3, size, size), pose=torch.randn(2, 8, 17, 3), texts=labels)
    scale = model.sgmc.logit_scale.exp()
    expected = (
        (out.similarities.action["fused"] * scale).softmax(-1)
        + (out.similarities.sub_action["fused"] * scale).softmax(-1)
    ) / 2
    torch.testing.assert_close(out.logits.exp(), expected)
