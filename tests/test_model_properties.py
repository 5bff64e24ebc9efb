"""Properties a broken PeVL cannot have: what each input may and may not change, on weights that look trained.

Each test perturbs one thing and checks where the change goes: a sample's batch neighbours, one joint of one frame,
the video frame paired with a pose window, a missing joint's coordinates, a sub-module's output.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from model_helpers import LABELS, clip_inputs, randomize, tiny_model
from pevl.errors import PevlError
from pevl.models.losses import semantic_guided_loss, strength_coefficients
from pevl.models.presets import create_model, get_config, list_models

TINY = list_models("_tiny")


def changed(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5) -> torch.Tensor:
    """Which leading positions differ: max |a - b| over the remaining axes > atol."""
    return (a - b).abs().flatten(a.dim() - 1 if a.dim() > 1 else 0).amax(-1) > atol


# ---- batch independence -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TINY)
@torch.no_grad()
def test_a_sample_does_not_depend_on_the_rest_of_its_batch(name):
    model = tiny_model(name)
    inputs = clip_inputs(model, batch=3, missing=0.2)
    together = model(**inputs, texts=LABELS).logits
    for i in range(3):
        alone = model(**{k: None if v is None else v[i : i + 1] for k, v in inputs.items()}, texts=LABELS).logits
        torch.testing.assert_close(alone[0], together[i], atol=2e-5, rtol=1e-4)


# ---- T-Attn along time, S-Attn across joints ------------------------------------------------------------------


@torch.no_grad()
def test_t_attn_mixes_only_along_time_and_s_attn_only_across_joints():
    model = tiny_model("pt_tiny")
    encoder, block = model.pose_encoder, model.clip.visual.blocks[0]
    adapters = encoder.adapters[0]
    x = torch.randn(2, 8, 17, model.config.clip.vision.width)
    x2 = x.clone()
    x2[1, 3, 5] += torch.randn(x.shape[-1])  # one joint of one frame of one sample (not a constant: LN hides it)
    step = encoder.temporal_attention_step
    temporal = step(block, adapters, x2) - step(block, adapters, x)
    moved = temporal.abs().amax(-1) > 1e-6  # [B, T, J]
    assert moved[1, :, 5].all(), "T-Attn must carry the joint's change to the same joint in every frame"
    moved[1, :, 5] = False
    assert not moved.any(), "T-Attn may only mix along time, within one joint of one sample"
    spatial = encoder.spatial_step(block, adapters, x2)[0] - encoder.spatial_step(block, adapters, x)[0]
    moved = spatial.abs().amax(-1) > 1e-6
    assert moved[1, 3, :].all(), "S-Attn must carry the change to every joint of the same frame"
    moved[1, 3, :] = False
    assert not moved.any(), "S-Attn may only mix across the joints of one frame"


@torch.no_grad()
def test_without_t_attn_no_pose_frame_sees_another():
    model = tiny_model("pevl_no_tattn_tiny")
    assert model.pose_encoder.embed.proj.in_features == 3  # no motion channels either (Table 3: no temporal modelling)
    pose = clip_inputs(model, batch=1)["pose"]
    pose2 = pose.clone()
    pose2[0, 2, :, :2] += 0.3
    tokens, _ = model.pose_encoder(pose, model.clip.visual)
    tokens2, _ = model.pose_encoder(pose2, model.clip.visual)
    moved = (tokens2 - tokens).abs().flatten(2).amax(-1)[0] > 1e-6  # per frame
    assert moved.tolist() == [t == 2 for t in range(pose.shape[1])]
    # The full model does see across frames through T-Attn.
    full = tiny_model("pt_tiny")
    tokens, _ = full.pose_encoder(pose, full.clip.visual)
    tokens2, _ = full.pose_encoder(pose2, full.clip.visual)
    assert ((tokens2 - tokens).abs().flatten(2).amax(-1)[0] > 1e-6).all()


# ---- temporal alignment of video and pose ----------------------------------------------------------------------


@torch.no_grad()
def test_video_frame_t_is_paired_with_pose_frames_t_w_to_t_plus_1_w():
    model = tiny_model("pevl_tiny")
    w = model.config.pose_window
    inputs = clip_inputs(model, batch=1)
    frames, _, _ = model.forward_features(**inputs)
    for t in (0, 2):
        video2 = inputs["video"].clone()
        video2[0, t] = torch.randn_like(video2[0, t])
        frames2, _, _ = model.forward_features(video=video2, pose=inputs["pose"])
        window = [t * w <= k < (t + 1) * w for k in range(model.config.num_pose_frames)]
        assert changed(frames2["fused"][0], frames["fused"][0]).tolist() == window
        assert changed(frames2["pose"][0], frames["pose"][0]).tolist() == window  # V2P-R: only the window's poses
        assert changed(frames2["video"][0], frames["video"][0]).tolist() == [k == t for k in range(4)]
    # Pose -> video (P2V-R), without T-Attn so that pose frames stay apart: pose frame 5 reaches video frame 5 // w.
    model = tiny_model("pevl_no_tattn_tiny")
    frames, _, _ = model.forward_features(**inputs)
    pose2 = inputs["pose"].clone()
    pose2[0, 5, :, :2] += 0.5
    frames2, _, _ = model.forward_features(video=inputs["video"], pose=pose2)
    assert changed(frames2["video"][0], frames["video"][0]).tolist() == [k == 5 // w for k in range(4)]


def test_v2p_groups_are_the_17_joints_and_the_background_of_each_pose_frame():
    for video_frames, pose_frames in ((4, 8), (2, 8), (4, 4)):
        model = tiny_model("pevl_tiny", num_video_frames=video_frames, num_pose_frames=pose_frames)
        inputs = clip_inputs(model, batch=2, missing=0.3)
        with torch.no_grad():
            out = model(**inputs, texts=LABELS, need_weights=True)
        assignment = out.maps["ucmr"][0].assignment
        w = pose_frames // video_frames
        assert assignment.shape == (2, video_frames, w, 17 + 1, 16)
        torch.testing.assert_close(assignment.sum(dim=3), torch.ones(2, video_frames, w, 16))
        missing = (inputs["pose"][..., 2] == 0).view(2, video_frames, w, 17)
        assert assignment[..., :17, :][missing].abs().max() == 0, "a missing joint is no group"


# ---- missing people ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,overrides",
    [
        ("pevl_tiny", {}),
        ("pt_tiny", {"pose_normalize": "clip", "pose_bones": True}),
        ("pevl_poseformer_tiny", {}),
        ("pevl_no_tattn_tiny", {}),
        ("pevl_ucmr2_tiny", {"v2p_hard_assignment": True}),
    ],
)
@torch.no_grad()
def test_what_a_missing_joint_or_frame_holds_changes_nothing(name, overrides):
    model = tiny_model(name, **overrides)
    inputs = clip_inputs(model, batch=2, missing=0.25)
    pose = inputs["pose"]
    pose[0, 3, :, 2] = 0.0  # nobody found in a frame
    pose[1, :, 4, 2] = 0.0  # one joint never found
    reference = model(**inputs, texts=LABELS, labels=torch.tensor([0, 1]))
    missing = pose[..., 2] == 0
    for fill in (0.0, 5.0, -3.0):
        other = pose.clone()
        other[..., :2] = torch.where(missing[..., None], torch.full_like(other[..., :2], fill), other[..., :2])
        out = model(**{**inputs, "pose": other}, texts=LABELS, labels=torch.tensor([0, 1]))
        torch.testing.assert_close(out.logits, reference.logits, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out.loss, reference.loss, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out.features["pose"], reference.features["pose"], atol=1e-5, rtol=1e-5)
    # The same coordinates with a score do change the result: the invariance comes from the mask.
    seen = pose.clone()
    seen[0, 3, :, 2] = 0.5
    seen[0, 3, :, :2] = 5.0
    assert not torch.allclose(model(**{**inputs, "pose": seen}, texts=LABELS).logits, reference.logits, atol=1e-5)


@torch.no_grad()
def test_a_clip_with_nobody_in_it_has_a_defined_finite_result():
    for name in ("pevl_tiny", "pt_tiny", "pevl_poseformer_tiny"):
        model = tiny_model(name)
        inputs = clip_inputs(model, batch=2)
        inputs["pose"][0, ..., 2] = 0.0
        out = model(**inputs, texts=LABELS, labels=torch.tensor([0, 1]))
        assert torch.isfinite(out.logits).all() and torch.isfinite(out.loss), name
        assert out.features["pose"][0].abs().max() == 0  # no pose feature at all
        if name == "pt_tiny":  # pose is all it has: every class equally likely
            torch.testing.assert_close(out.logits[0].exp(), torch.full((4,), 0.25))
        else:  # the fused stream falls back on the video
            assert out.logits[0].exp().std() > 0
    model = tiny_model("pt_tiny")
    inputs = clip_inputs(model, batch=2)
    inputs["pose"][..., 2] = 0.0
    out = model(**inputs, texts=LABELS, labels=torch.tensor([0, 1]))
    assert torch.isfinite(out.loss)


@torch.no_grad()
def test_frames_where_nobody_was_found_get_no_attention():
    model = tiny_model("pt_tiny")
    inputs = clip_inputs(model, batch=2)
    inputs["pose"][0, [1, 4], :, 2] = 0.0
    out = model(**inputs, texts=LABELS, need_weights=True)
    words = out.maps["word_attention"]["pose"]  # [B, C, L, T_p] word -> frame attention (Fig. 11)
    assert words[0, ..., [1, 4]].abs().max() == 0
    mask = model.build_class_texts(LABELS).word_mask[:, : words.shape[2]]
    torch.testing.assert_close(words[0][mask].sum(-1), torch.ones(int(mask.sum())))
    assert out.maps["frame_masks"]["pose"][0].tolist() == [t not in (1, 4) for t in range(8)]


def test_explicit_attention_path_masks_like_the_fused_one():
    model = tiny_model("pt_tiny")
    attn = model.clip.visual.blocks[0].attn
    x = torch.randn(3, 6, model.config.clip.vision.width)
    mask = torch.tensor([[1, 1, 0, 1, 0, 1], [0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    fused, _ = attn(x, key_mask=mask)
    explicit, probs = attn(x, key_mask=mask, need_weights=True)
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)
    assert probs[0, :, :, 2].abs().max() == 0 and probs[0, :, :, 4].abs().max() == 0
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, probs.shape[1], 6))


# ---- every part reaches the output -------------------------------------------------------------------------------

PARTS = [
    "video_encoder.adapters.0.s_adapter",
    "video_encoder.adapters.1.mlp_adapter",
    "pose_encoder.embed",
    "pose_encoder.adapters.0.t_adapter",
    "pose_encoder.adapters.1.s_adapter",
    "pose_encoder.adapters.1.mlp_adapter",
    "text_encoder.adapters.0",
    "ucmr.0.v2p",
    "ucmr.0.v2p.mlp",
    "ucmr.0.p2v",
    "ucmr.0.p2v.adapter",
    "sgmc.fusion",
    "sgmc.concept_attention.query",
]


@pytest.mark.parametrize("part", PARTS)
@torch.no_grad()
def test_every_sub_module_reaches_the_scores(part):
    model = tiny_model("pevl_tiny")
    inputs = clip_inputs(model, batch=2)
    reference = model(**inputs, texts=LABELS).logits
    module = model.get_submodule(part)

    def perturbed(_module, _args, output):  # a fixed random offset: a scale alone would vanish in a norm
        first = output[0] if isinstance(output, tuple) else output
        noise = torch.randn(first.shape, generator=torch.Generator().manual_seed(1)).to(first.dtype)
        first = first + 0.5 * noise * first.std()
        return (first, *output[1:]) if isinstance(output, tuple) else first

    handle = module.register_forward_hook(perturbed)
    try:
        model.train(False)  # drops the cached class texts
        out = model(**inputs, texts=LABELS).logits
    finally:
        handle.remove()
    assert not torch.allclose(out, reference, atol=1e-6), f"{part}'s output does not reach the scores"


def test_every_trainable_parameter_gets_a_nonzero_gradient():
    model = randomize(create_model("pevl_tiny"))
    inputs = clip_inputs(model, batch=4, missing=0.1)
    model(**inputs, texts=LABELS, labels=torch.tensor([0, 1, 2, 1])).loss.backward()
    dead = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().max() == 0)]
    assert not dead


# ---- SGMC: semantic-guided loss, precision, scale ----------------------------------------------------------------


def test_semantic_guided_loss_is_info_nce_for_equidistant_labels():
    torch.manual_seed(0)
    text = torch.eye(4)  # four label texts at equal distance from each other
    vision = F.normalize(torch.randn(4, 4), dim=-1)
    labels = torch.arange(4)
    scale = torch.tensor(10.0)
    loss = semantic_guided_loss(vision, vision, text, text, labels, labels, 0, scale)
    info_nce = (F.cross_entropy(scale * vision @ text.t(), labels) + F.cross_entropy(scale * text @ vision.t(), labels))
    torch.testing.assert_close(loss, info_nce / 2)
    # Label texts at different distances change the loss: the coefficients act exactly when the texts differ.
    text2 = F.normalize(text + 0.8 * torch.tensor([[0, 1.0, 0, 0], [1.0, 0, 0, 0], [0, 0, 0, 1.0], [0, 0, 1.0, 0]]), 1)
    assert not torch.allclose(semantic_guided_loss(vision, vision, text2, text2, labels, labels, 0, scale), loss)
    # A uniform rescaling of all discrepancies leaves the loss unchanged (the coefficients are normalised).
    s1 = strength_coefficients(text2, text2, labels, labels)
    s2 = strength_coefficients(text2 * 1.0, text2, labels, labels)
    torch.testing.assert_close(s1, s2)


def test_same_label_samples_are_no_negatives_and_do_not_inflate_the_others():
    text = torch.eye(3)[[0, 0, 1, 2]]  # samples 0 and 1 share a label
    labels = torch.tensor([0, 0, 1, 2])
    s = strength_coefficients(text, text, labels, labels)
    assert s[0, 1] == 0 and s[1, 0] == 0
    torch.testing.assert_close(s[0, 2:], torch.ones(2))  # equidistant true negatives keep weight one
    torch.testing.assert_close(s[2], torch.tensor([1.0, 1.0, 0.0, 1.0]))


@torch.no_grad()
def test_scores_are_float32_under_bf16_autocast_and_rank_classes_as_in_float32():
    model = tiny_model("pevl_tiny")
    labels = [f"back 2.5 somersault {k / 2:g} twist piked" for k in range(99)]  # 99 close classes
    inputs = clip_inputs(model, batch=3)
    frames, masks, _ = model.forward_features(**inputs)
    text = model.encode_class_texts(model.build_class_texts(labels))
    sims = model.sgmc.similarities(frames, text, masks)
    expected = model.sgmc.scores(sims, "fused")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        sims16 = model.sgmc.similarities(frames, text, masks)
        got = model.sgmc.scores(sims16, "fused")
        full = model(**inputs, texts=labels).logits
    assert got.dtype == torch.float32 and full.dtype == torch.float32
    assert torch.equal(got.argsort(dim=-1), expected.argsort(dim=-1))
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)
    assert got.unique().numel() > 250  # not the few dozen distinct values of bf16 scores


def test_logit_scale_is_clamped_at_100():
    model = tiny_model("pevl_tiny")
    with torch.no_grad():
        model.sgmc.logit_scale.fill_(math.log(1000.0))
    assert model.sgmc.scale.item() == pytest.approx(100.0)
    with pytest.raises(PevlError, match="logit_scale_init"):
        get_config("pevl_tiny", logit_scale_init=0.0)


@torch.no_grad()
def test_score_ensemble_averages_the_streams():
    model = tiny_model("pevl_tiny", score_ensemble=True)
    out = model(**clip_inputs(model), texts=LABELS)
    expected = torch.stack(
        [model.sgmc.stream_probabilities(out.similarities, s) for s in ("video", "pose", "fused")]
    ).mean(0)
    torch.testing.assert_close(out.logits.exp(), expected)
    single = tiny_model("pevl_tiny")
    assert not torch.allclose(single(**clip_inputs(single), texts=LABELS).logits, out.logits)


# ---- initial state and typed configuration -----------------------------------------------------------------------


@torch.no_grad()
def test_joint_tokens_start_distinct_for_the_frozen_attention(shared_data):
    from pevl.data.pose.pyskl import load_pyskl
    from pevl.models.pose_encoder import PoseEmbedding

    ann = load_pyskl(shared_data / "skeleton" / "ucf101_apply_eye_makeup_pyskl.pkl")["annotations"][0]
    height, width = ann["img_shape"]
    xy = torch.from_numpy(ann["keypoint"][0, :32]) / torch.tensor([width, height]) * 2 - 1
    pose = torch.cat([xy, torch.from_numpy(ann["keypoint_score"][0, :32])[..., None]], dim=-1)[None]
    embed = PoseEmbedding(3, 17, 32, 768)  # ViT-B/16 width, a real skeleton
    projected = embed.proj(torch.cat([pose, torch.zeros(*pose.shape[:3], 2)], dim=-1))
    ratio = embed.joint_embed.std() / projected.std()
    assert 0.5 < ratio < 2, f"joint embedding starts {1 / ratio:.1f}x smaller than the coordinate projection"
    normed = F.normalize(F.layer_norm(embed(pose), (768,)), dim=-1)
    cos = normed @ normed.transpose(-1, -2)  # [1, T, J, J]
    off_diagonal = cos[..., ~torch.eye(17, dtype=torch.bool)].mean()
    assert off_diagonal < 0.6, f"the joints of a frame start near-identical (mean cosine {off_diagonal:.2f})"


@pytest.mark.parametrize(
    "field,value", [("num_ucmr_blocks", 2.0), ("p2v", "off"), ("use_pose", "maybe"), ("num_ucmr_blocks", "two")]
)
def test_model_fields_refuse_values_of_the_wrong_type(field, value):
    with pytest.raises(PevlError, match=field):
        get_config("pevl_tiny", **{field: value})


def test_old_field_names_of_saved_configs_still_load():
    from pevl.models.config import PeVLConfig

    data = get_config("pevl_tiny").to_dict()
    data["content_loss"] = data.pop("semantic_guided_loss")
    data["content_loss_weight"] = data.pop("semantic_guided_loss_weight")
    assert PeVLConfig.from_dict(data) == get_config("pevl_tiny")


# ---- paths the default forward does not take -----------------------------------------------------------------------

MASKED_CASES = [
    ("pevl_tiny", {}),
    ("pevl_tiny", {"v2p_hard_assignment": True, "background_token": False}),
    ("pt_tiny", {}),
    ("vl_tiny", {}),
    ("pevl_poseformer_tiny", {}),
    ("pevl_no_tattn_tiny", {}),
    ("pevl_ucmr2_tiny", {"background_token": False}),
]


def masked_inputs(model, batch=3, seed=17):
    """Sample 0: one pose window with nobody; sample 1: nobody in the whole clip; the rest: joints missing."""
    inputs = clip_inputs(model, batch=batch, seed=seed, missing=0.3)
    if inputs["pose"] is not None:
        w = model.config.pose_window
        inputs["pose"][0, w : 2 * w, :, 2] = 0.0
        inputs["pose"][1, ..., 2] = 0.0
    return inputs


@pytest.mark.parametrize("name,overrides", MASKED_CASES)
@torch.no_grad()
def test_the_explicit_attention_path_gives_the_scores_of_the_sdpa_path(name, overrides):
    # ``explain`` runs need_weights=True: its predictions must be those of ``predict``.
    model = tiny_model(name, **overrides)
    inputs = masked_inputs(model)
    labels = torch.tensor([0, 3, 1])
    plain = model(**inputs, texts=LABELS, labels=labels)
    explained = model(**inputs, texts=LABELS, labels=labels, need_weights=True)
    assert explained.maps and not plain.maps
    torch.testing.assert_close(explained.logits, plain.logits, atol=1e-5, rtol=1e-5)
    for term, value in plain.losses.items():
        torch.testing.assert_close(explained.losses[term], value, atol=1e-5, rtol=1e-5, msg=term)
    for stream, feature in plain.features.items():
        torch.testing.assert_close(explained.features[stream], feature, atol=1e-5, rtol=1e-5, msg=stream)


@pytest.mark.parametrize("name", ["pevl_tiny", "pt_tiny", "pevl_ucmr2_tiny"])
def test_gradient_checkpointing_gives_the_same_losses_and_gradients(name):
    plain = tiny_model(name).train()
    checkpointed = tiny_model(name, grad_checkpointing=True).train()
    checkpointed.load_state_dict(plain.state_dict())
    inputs = masked_inputs(plain, batch=4)
    labels = torch.tensor([0, 3, 1, 1])
    out = plain(**inputs, texts=LABELS, labels=labels)
    out_ckpt = checkpointed(**inputs, texts=LABELS, labels=labels)
    out.loss.backward()
    out_ckpt.loss.backward()
    assert out.losses.keys() == out_ckpt.losses.keys()
    for term, value in out.losses.items():
        torch.testing.assert_close(out_ckpt.losses[term], value, atol=1e-6, rtol=1e-6, msg=term)
    grads = {n: p.grad for n, p in checkpointed.named_parameters() if p.requires_grad}
    for param_name, param in plain.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and grads[param_name] is not None, param_name
            torch.testing.assert_close(grads[param_name], param.grad, atol=1e-6, rtol=1e-5, msg=param_name)


@pytest.mark.parametrize("overrides", [{"v2p_hard_assignment": True}, {"background_token": False},
                                       {"v2p_hard_assignment": True, "background_token": False}])  # fmt: skip
def test_hard_assignment_and_no_background_token_forward_and_backward(overrides):
    model = tiny_model("pevl_tiny", **overrides).train()
    inputs = masked_inputs(model, batch=3)
    out = model(**inputs, texts=LABELS, labels=torch.tensor([0, 3, 1]), need_weights=True)
    assignment = out.maps["ucmr"][0].assignment  # [B, T_v, w, G, N]
    groups = 17 + (1 if model.config.background_token else 0)
    assert assignment.shape[3] == groups
    present = (inputs["pose"][..., 2] > 0).view(*assignment.shape[:3], 17)
    nobody = ~present.any(dim=-1)
    assert assignment[..., :17, :][~present].abs().max() == 0, "a missing joint is no group"
    totals = assignment.sum(dim=3)  # per patch: one, or nothing in a frame with no group at all
    expected = torch.where(nobody & (groups == 17), 0.0, 1.0)[..., None].expand_as(totals)
    torch.testing.assert_close(totals.detach(), expected)
    if model.config.v2p_hard_assignment:
        values = assignment.detach()
        assert torch.minimum(values, (1 - values).abs()).max() < 1e-6, "a hard assignment is one-hot"
    assert torch.isfinite(out.loss)
    out.loss.backward()
    for param_name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and torch.isfinite(param.grad).all(), param_name
    v2p = model.ucmr[0].v2p
    assert v2p.q.weight.grad.abs().sum() > 0 and v2p.k.weight.grad.abs().sum() > 0  # the assignment itself learns
    if v2p.background is not None:
        assert v2p.background.grad.abs().sum() > 0


# ---- resizing the position embeddings ------------------------------------------------------------------------------


def _cubic_matrix(size_in: int, size_out: int, a: float = -0.75) -> torch.Tensor:
    """1-D bicubic resampling as a matrix [out, in]: Keys' kernel, half-pixel centres, edges repeated."""

    def kernel(x: float) -> float:
        x = abs(x)
        if x <= 1:
            return (a + 2) * x**3 - (a + 3) * x**2 + 1
        if x < 2:
            return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
        return 0.0

    matrix = torch.zeros(size_out, size_in, dtype=torch.float64)
    for i in range(size_out):
        src = (i + 0.5) * size_in / size_out - 0.5
        base = math.floor(src)
        for tap in range(base - 1, base + 3):
            matrix[i, min(max(tap, 0), size_in - 1)] += kernel(src - tap)
    return matrix


@pytest.mark.parametrize("old,new", [(4, 8), (4, 6), (7, 14), (14, 7)])
def test_position_embedding_resize_matches_an_independent_bicubic_interpolation(old, new):
    from pevl.models.clip import resize_pos_embed

    pos = torch.randn(1 + old * old, 5, dtype=torch.float64)
    grid = pos[1:].reshape(old, old, 5)  # [row, column, channel]: row-major like the patch sequence
    m = _cubic_matrix(old, new)
    expected = torch.einsum("ir,rcd,jc->ijd", m, grid, m).reshape(new * new, 5)
    resized = resize_pos_embed(pos.float(), new)
    assert resized.shape == (1 + new * new, 5)
    torch.testing.assert_close(resized[0], pos[0].float())  # [cls] keeps its position
    torch.testing.assert_close(resized[1:], expected.float(), atol=1e-5, rtol=1e-5)
    # Rows stay rows: an embedding that only depends on the row only depends on the row after resizing.
    rows = torch.arange(old, dtype=torch.float32)[:, None, None].expand(old, old, 5).reshape(-1, 5)
    out = resize_pos_embed(torch.cat([torch.zeros(1, 5), rows]), new)[1:].reshape(new, new, 5)
    assert (out - out[:, :1]).abs().max() < 1e-5 and (out[1:, 0] - out[:-1, 0]).abs().min() > 0


@torch.no_grad()
def test_images_of_another_size_use_the_resized_grid():
    model = tiny_model("vl_tiny")
    visual = model.clip.visual
    g = visual.cfg.grid_size
    images = torch.randn(2, 3, 2 * visual.cfg.image_size, 2 * visual.cfg.image_size)
    m = _cubic_matrix(g, 2 * g).float()
    grid = visual.pos_embed[1:].reshape(g, g, -1)
    pos = torch.cat([visual.pos_embed[:1], torch.einsum("ir,rcd,jc->ijd", m, grid, m).reshape(4 * g * g, -1)])
    patches = visual.patch_embed(images).flatten(2).transpose(1, 2)
    tokens = torch.cat([visual.cls_token.expand(2, 1, -1), patches], dim=1) + pos
    torch.testing.assert_close(visual.embed(images), visual.ln_pre(tokens), atol=1e-5, rtol=1e-5)


def _linear_resample(embed: torch.Tensor, frames: int) -> torch.Tensor:
    """Each channel of ``[T0, D]`` interpolated linearly at ``frames`` points spread over the same span (numpy)."""
    import numpy as np

    old = np.linspace(0.0, 1.0, embed.shape[0]) if embed.shape[0] > 1 else np.zeros(1)
    new = np.linspace(0.0, 1.0, frames)
    columns = [np.interp(new, old, column) for column in embed.double().numpy().T]
    return torch.from_numpy(np.stack(columns, axis=1)).float()


@pytest.mark.parametrize("frames", [2, 3, 8, 16])
@torch.no_grad()
def test_temporal_embeddings_resize_linearly_for_other_clip_lengths(frames):
    from pevl.models.clip import resize_temporal_embed
    from pevl.models.pose_encoder import PoseEmbedding

    embed = torch.randn(8, 6)
    torch.testing.assert_close(resize_temporal_embed(embed, frames), _linear_resample(embed, frames))
    # The pose embedding of T frames is the one trained for T frames would be, with the resampled rows.
    trained = PoseEmbedding(3, 17, 8, 16)
    fresh = PoseEmbedding(3, 17, frames, 16)
    fresh.load_state_dict({**trained.state_dict(), "temporal_embed": _linear_resample(trained.temporal_embed, frames)})
    pose = torch.rand(2, frames, 17, 3) * 2 - 1
    torch.testing.assert_close(trained(pose), fresh(pose), atol=1e-6, rtol=1e-6)


@torch.no_grad()
def test_a_video_of_another_length_uses_the_resampled_temporal_embedding():
    model = tiny_model("vl_tiny")  # 4 video frames
    model.video_encoder.temporal_embed.normal_()
    other = tiny_model("vl_tiny", num_video_frames=2, num_pose_frames=2)
    other.load_state_dict(
        {**model.state_dict(), "video_encoder.temporal_embed": _linear_resample(model.video_encoder.temporal_embed, 2)}
    )
    video = torch.randn(2, 2, 3, 32, 32)
    torch.testing.assert_close(model.encode_video(video), other.encode_video(video), atol=1e-5, rtol=1e-5)


# ---- long label prompts ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prompt", ["label", "action", "coarse"])
@torch.no_grad()
def test_the_end_of_text_token_of_a_long_prompt_is_never_a_label_word(prompt):
    from pevl.models.tokenizer import get_tokenizer

    model = tiny_model("pevl_tiny", prompt=prompt)
    long_label = ", ".join(f"twist {k} pike somersault" for k in range(40))  # far more than 77 tokens
    texts = model.build_class_texts(["tuck", long_label], coarse=["diving", "diving"])
    eot_id = get_tokenizer().eot_token_id
    assert texts.tokens[1, -1] == eot_id and texts.tokens[1].argmax() == texts.tokens.shape[1] - 1
    assert not texts.word_mask[1, -1] and texts.phrase_index[1, -1] == -1
    start = int(texts.word_mask[1].nonzero()[0])
    # Every position between the first label word and the end-of-text token is a word or a comma.
    commas = texts.tokens[1, start:-1] == get_tokenizer().encode(",")[0]
    assert (texts.word_mask[1, start:-1] | commas).all()
    encoded = model.encode_class_texts(texts)
    eot = texts.tokens.argmax(dim=-1)
    assert not encoded.word_mask[torch.arange(2), eot].any()
    assert encoded.word_mask[0].sum() == 1  # "tuck"
    out = model(**clip_inputs(model, batch=1), texts=texts)
    assert torch.isfinite(out.logits).all()
