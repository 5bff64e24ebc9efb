"""UCMR (V2P-R, P2V-R) and SGMC (multi-level contrast, strength coefficients) behave as the paper describes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from model_helpers import LABELS, clip_inputs, randomize, tiny_model
from pevl.models.config import MAX_LOGIT_SCALE
from pevl.models.losses import SGMCLoss, strength_coefficients, weighted_info_nce
from pevl.models.presets import create_model, get_config
from pevl.models.sgmc import SemanticConceptAttention, clamp_logit_scales
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


# ---- the logit scale: clamped as a parameter after each step, its gradient flows at the cap -------------------------


def _scale_loss(model, labels):
    inputs = clip_inputs(model, batch=4, seed=3)
    return model(**inputs, texts=LABELS, labels=labels).loss


def test_a_logit_scale_above_the_cap_still_gets_gradient_and_is_brought_back():
    model = randomize(create_model("pevl_tiny"))
    with torch.no_grad():
        model.sgmc.logit_scale.fill_(math.log(1000.0))
    assert model.sgmc.scale.item() == pytest.approx(100.0)  # used at most at the cap
    _scale_loss(model, torch.tensor([0, 1, 2, 3])).backward()
    assert model.sgmc.logit_scale.grad is not None and model.sgmc.logit_scale.grad.abs() > 0
    optimizer = torch.optim.SGD([model.sgmc.logit_scale], lr=1e-3)
    optimizer.step()
    assert model.sgmc.logit_scale.item() != pytest.approx(math.log(1000.0))
    clamp_logit_scales(model)
    assert model.sgmc.logit_scale.item() == pytest.approx(math.log(MAX_LOGIT_SCALE))


def test_a_logit_scale_at_the_cap_can_come_back_down():
    model = randomize(create_model("pevl_tiny"))
    with torch.no_grad():
        model.sgmc.logit_scale.fill_(math.log(MAX_LOGIT_SCALE))
    # Labels the (random) model gets wrong: a confident scale hurts, the gradient must lower it.
    inputs = clip_inputs(model, batch=4, seed=3)
    with torch.no_grad():
        wrong = model(**inputs, texts=LABELS).logits.argmin(dim=-1)
    optimizer = torch.optim.SGD([model.sgmc.logit_scale], lr=0.05)
    for _ in range(3):
        optimizer.zero_grad()
        model(**inputs, texts=LABELS, labels=wrong).loss.backward()
        optimizer.step()
        clamp_logit_scales(model)
    assert model.sgmc.logit_scale.item() < math.log(MAX_LOGIT_SCALE) - 1e-3


# ---- the fused stream with missing pose frames ----------------------------------------------------------------------


@pytest.mark.parametrize("empty_frames", [[], [1], [0, 2, 5, 7], [4, 5, 6, 7], list(range(8))])
@torch.no_grad()
def test_the_fused_clip_feature_is_the_fusion_of_the_clip_features(empty_frames):
    # The fused stream depends on which pose frames are missing only through z_p: z_vp = fusion(z_v, z_p).
    model = tiny_model("pevl_tiny")
    inputs = clip_inputs(model, batch=2, missing=0.1)
    inputs["pose"][0, empty_frames, :, 2] = 0.0
    out = model(**inputs, texts=LABELS)
    expected = model.sgmc.fusion(torch.cat([out.features["video"], out.features["pose"]], dim=-1))
    torch.testing.assert_close(out.features["fused"], expected, atol=2e-5, rtol=2e-5)


@torch.no_grad()
def test_fused_frames_of_a_frame_with_nobody_carry_the_clip_pose_feature():
    model = tiny_model("pevl_tiny")
    inputs = clip_inputs(model, batch=1)
    inputs["pose"][0, [2, 3], :, 2] = 0.0
    frames, masks, _ = model.forward_features(**inputs)
    z_p = frames["pose"][0][masks["pose"][0]].mean(0)
    w = model.config.pose_window
    video = frames["video"][0].repeat_interleave(w, dim=0)
    expected = model.sgmc.fusion(torch.cat([video[2], z_p]))
    torch.testing.assert_close(frames["fused"][0, 2], expected, atol=1e-5, rtol=1e-5)


# ---- hard assignment with nobody in a pose frame --------------------------------------------------------------------


@pytest.mark.parametrize("background", [False, True])
def test_a_pose_frame_with_nobody_assigns_nothing(background):
    v2p = V2PRefinement(dim=16, background_token=background, hard=True)
    torch.nn.init.normal_(v2p.mlp[-1].weight)
    pose = torch.randn(2, 2, 17, 16)
    present = torch.ones(2, 2, 17, dtype=torch.bool)
    present[0, 1] = False  # nobody in the second pose frame of the first window
    present[1, 0, 3:] = False
    refined, assign = v2p(pose, torch.randn(2, 9, 16), present)
    joints = assign[:, :, :17]
    if background:  # the background takes every patch of a frame with nobody
        assert joints[0, 1].abs().max() == 0 and (assign[0, 1, 17] == 1).all()
    else:
        assert assign[0, 1].abs().max() == 0, "a frame with nobody assigns no patch to any joint"
    assert joints[1, 0, 3:].abs().max() == 0  # missing joints take nothing
    torch.testing.assert_close(assign[1].sum(dim=1), torch.ones(2, 9))
    assert torch.isfinite(refined).all()


# ---- P2V-R: only what is read is computed ---------------------------------------------------------------------------


def _p2v_query_lengths(model):
    lengths = []
    hooks = [block.p2v.attn.register_forward_hook(lambda m, args, out: lengths.append(args[0].shape[1]))
             for block in model.ucmr]  # fmt: skip
    return lengths, hooks


@pytest.mark.parametrize("name", ["pevl_tiny", "pevl_ucmr2_tiny", "pevl_ucmr3_tiny"])
@torch.no_grad()
def test_the_last_p2v_refines_only_the_cls_token_unless_maps_are_asked_for(name):
    model = tiny_model(name)
    tokens = 1 + (model.config.clip.vision.image_size // model.config.clip.vision.patch_size) ** 2
    inputs = clip_inputs(model, batch=2, missing=0.2)
    lengths, hooks = _p2v_query_lengths(model)
    plain = model(**inputs, texts=LABELS).logits
    blocks = model.config.num_ucmr_blocks
    assert lengths == [tokens] * (blocks - 1) + [1]  # patch updates of the last block are never read
    lengths.clear()
    explained = model(**inputs, texts=LABELS, need_weights=True)
    assert lengths == [tokens] * blocks  # the maps draw every patch's attention
    for hook in hooks:
        hook.remove()
    torch.testing.assert_close(explained.logits, plain, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_p2v_on_the_cls_token_alone_gives_the_cls_token_of_the_full_refinement():
    cfg = get_config("pevl_tiny")
    block = UCMRBlock(cfg)
    randomize(block)
    video = torch.randn(2, 4, 17, cfg.clip.vision.width)
    pose = torch.randn(2, 8, 17, cfg.clip.vision.width)
    present = torch.rand(2, 8, 17) > 0.3
    full_video, full_pose, _ = block(video, pose, present=present)
    cls_video, cls_pose, _ = block(video, pose, present=present, refine_patches=False)
    torch.testing.assert_close(cls_video[:, :, 0], full_video[:, :, 0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(cls_pose, full_pose, atol=0, rtol=0)


# ---- two processes give the losses and gradients of one --------------------------------------------------------------


def _sgmc_inputs(x: torch.Tensor, classes: torch.Tensor, logit_scale: torch.Tensor) -> tuple:
    clip = {"video": F.normalize(x[:, 0], dim=-1), "fused": F.normalize(x[:, 1], dim=-1)}
    action = {stream: feats @ classes.t() for stream, feats in clip.items()}
    sub_action = {stream: (0.5 * sim).tanh() for stream, sim in action.items()}
    return clip, action, sub_action, classes, logit_scale.exp()


def _two_process_worker(rank: int, world: int, port: int, data: dict, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        n = data["x"].shape[0] // world
        rows = slice(rank * n, (rank + 1) * n)
        x = data["x"][rows].clone().requires_grad_()
        logit_scale = data["logit_scale"].clone().requires_grad_()
        criterion = SGMCLoss(get_config("pevl_tiny"))
        losses = criterion(*_sgmc_inputs(x, data["classes"], logit_scale)[:4], data["labels"][rows],
                           logit_scale.exp())  # fmt: skip
        criterion.total(losses).backward()
        result = {name: value.detach() for name, value in losses.items()}
        result.update(x_grad=x.grad, scale_grad=logit_scale.grad)
        torch.save(result, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_two_processes_give_the_losses_and_gradients_of_one(tmp_path):
    import socket

    import torch.multiprocessing as mp

    gen = torch.Generator().manual_seed(0)
    data = {
        "x": torch.randn(6, 2, 8, generator=gen),
        "classes": F.normalize(torch.randn(4, 8, generator=gen), dim=-1),
        "labels": torch.tensor([0, 2, 2, 1, 3, 0]),
        "logit_scale": torch.tensor(2.0),
    }
    x = data["x"].clone().requires_grad_()
    logit_scale = data["logit_scale"].clone().requires_grad_()
    criterion = SGMCLoss(get_config("pevl_tiny"))
    clip, action, sub_action, classes, _ = _sgmc_inputs(x, data["classes"], logit_scale)
    reference = criterion(clip, action, sub_action, classes, data["labels"], logit_scale.exp())
    assert {"loss_t2v_fused", "loss_semantic_guided"} <= reference.keys()  # the terms that gather
    criterion.total(reference).backward()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # fork: no new interpreter to start, so the two processes take well under a second.
    mp.start_processes(_two_process_worker, args=(2, port, data, str(tmp_path)), nprocs=2, start_method="fork")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for name, value in reference.items():  # every term is a mean over the local rows: the ranks average to it
        torch.testing.assert_close((ranks[0][name] + ranks[1][name]) / 2, value.detach(), msg=name)
    # DistributedDataParallel averages the gradients of the two processes: that is the one-process gradient.
    torch.testing.assert_close(torch.cat([r["x_grad"] for r in ranks]) / 2, x.grad)
    torch.testing.assert_close((ranks[0]["scale_grad"] + ranks[1]["scale_grad"]) / 2, logit_scale.grad)
