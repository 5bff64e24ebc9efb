"""The PeVL model: adapters start as identity, frozen CLIP stays frozen, ablations remove their parts, it learns."""

from __future__ import annotations

import math

import pytest
import torch

import pevl
from pevl.errors import PevlError
from pevl.models.config import PeVLConfig
from pevl.models.presets import create_model, get_config, list_models

LABELS = [
    "forward takeoff, 1 somersault, piked",
    "back takeoff, 2 somersaults, tuck",
    "reverse takeoff, 1.5 somersaults, straight",
    "inward takeoff, 2.5 somersaults, free position",
]
TINY = [name for name in list_models() if name.endswith("_tiny")]


def clip_inputs(model, batch=3, video_frames=None, pose_frames=None):
    cfg = model.config
    size = cfg.clip.vision.image_size
    video = torch.randn(batch, video_frames or cfg.num_video_frames, 3, size, size)
    pose = torch.rand(batch, pose_frames or cfg.num_pose_frames, cfg.num_joints, 3) * 2 - 1
    return {"video": video if cfg.use_video else None, "pose": pose if cfg.use_pose else None}


def test_registry_has_the_paper_presets_and_tiny_versions():
    names = set(pevl.list_models())
    for name in ["pevl_vit_b16", "pevl_vit_l14", "vl_vit_b16", "vpt_vit_b16", "pevl_no_p2v", "pevl_no_v2p",
                 "pevl_no_tattn", "pevl_poseformer", "pevl_tiny", "vl_tiny", "vpt_tiny", "pevl_no_p2v_tiny",
                 "pevl_no_v2p_tiny", "pevl_no_tattn_tiny", "pevl_poseformer_tiny"]:  # fmt: skip
        assert name in names
    with pytest.raises(PevlError, match="did you mean"):
        pevl.create_model("pevl_vit_b61")


def test_unknown_override_suggests_the_closest_field():
    with pytest.raises(PevlError, match="num_ucmr_blocks"):
        get_config("pevl_tiny", num_ucmr_block=2)


def test_pose_frames_must_be_a_multiple_of_video_frames():
    with pytest.raises(PevlError, match="multiple"):
        get_config("pevl_tiny", num_video_frames=3, num_pose_frames=8)


def test_config_round_trips_through_a_dict():
    cfg = get_config("pevl_poseformer_tiny", num_ucmr_blocks=2, action_streams=["fused"])
    assert PeVLConfig.from_dict(cfg.to_dict()) == cfg


@torch.no_grad()
def test_adapters_start_as_identity_for_images():
    model = create_model("pevl_tiny").eval()
    images = torch.randn(2, 3, 32, 32)
    expected = model.clip.encode_image(images)
    torch.testing.assert_close(model.encode_video(images[:, None]), expected, atol=1e-5, rtol=0)
    # Several identical frames: zero temporal embedding and per-frame encoding give the same clip feature.
    torch.testing.assert_close(
        model.encode_video(images[:, None].expand(-1, 4, -1, -1, -1)), expected, atol=1e-5, rtol=0
    )


@torch.no_grad()
def test_adapters_start_as_identity_for_text():
    model = create_model("pevl_tiny").eval()
    tokens = pevl.tokenize(LABELS + ["a much longer text " * 20])
    torch.testing.assert_close(model.encode_text(tokens), model.clip.encode_text(tokens), atol=1e-5, rtol=0)


def test_identity_breaks_once_adapters_move():
    model = create_model("pevl_tiny").eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        model.video_encoder.adapters[0].s_adapter.fc2.weight.normal_()
        assert not torch.allclose(model.encode_video(images[:, None]), model.clip.encode_image(images), atol=1e-4)


@pytest.mark.parametrize("name", TINY)
def test_every_preset_runs_forward_and_backward(name):
    model = create_model(name)
    out = model(**clip_inputs(model, batch=4), texts=LABELS, labels=torch.tensor([0, 1, 2, 1]))
    assert out.logits.shape == (4, len(LABELS))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    for param_name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and torch.isfinite(param.grad).all(), param_name
        else:
            assert param.grad is None, param_name


@pytest.mark.slow
def test_frozen_clip_gets_no_gradient_and_adapters_do():
    model = create_model("pevl_tiny")
    out = model(**clip_inputs(model, batch=4), texts=LABELS, labels=torch.tensor([0, 1, 2, 3]))
    out.loss.backward()
    assert all(not p.requires_grad and p.grad is None for p in model.clip.parameters())
    # The zero-initialised last layer of an adapter is what receives gradient first.
    assert model.video_encoder.adapters[-1].s_adapter.fc2.weight.grad.abs().sum() > 0
    assert model.pose_encoder.adapters[-1].mlp_adapter.fc2.weight.grad.abs().sum() > 0
    assert model.text_encoder.adapters[-1].fc2.weight.grad.abs().sum() > 0
    trainable = {name.split(".")[0] for name, _ in model.trainable_parameters()}
    assert trainable == {"video_encoder", "pose_encoder", "text_encoder", "ucmr", "sgmc"}


def test_unfrozen_clip_trains_too():
    model = create_model("vl_tiny", freeze_clip=False)
    out = model(**clip_inputs(model), texts=LABELS, labels=torch.tensor([0, 1, 2]))
    out.loss.backward()
    assert model.clip.visual.blocks[0].attn.qkv.weight.grad is not None


def _param_names(name):
    return [n for n, _ in create_model(name).named_parameters()]


def test_ablation_switches_remove_their_parts():
    full = _param_names("pevl_tiny")
    assert any(".v2p." in n for n in full) and any(".p2v." in n for n in full)
    assert any("t_adapter" in n for n in full) and any("background" in n for n in full)

    no_v2p = _param_names("pevl_no_v2p_tiny")
    assert not any(".v2p." in n for n in no_v2p) and any(".p2v." in n for n in no_v2p)
    no_p2v = _param_names("pevl_no_p2v_tiny")
    assert not any(".p2v." in n for n in no_p2v) and any(".v2p." in n for n in no_p2v)
    assert not any("t_adapter" in n for n in _param_names("pevl_no_tattn_tiny"))
    no_background = create_model("pevl_tiny", background_token=False)
    assert no_background.ucmr[0].v2p.background is None

    vl = create_model("vl_tiny")
    assert vl.pose_encoder is None and vl.ucmr is None and vl.sgmc.concept_attention is None
    vpt = create_model("vpt_tiny")
    assert vpt.pose_encoder is not None and vpt.ucmr is None and vpt.sgmc.concept_attention is None
    poseformer = create_model("pevl_poseformer_tiny")
    assert not any(n.startswith("pose_encoder.adapters") for n, _ in poseformer.named_parameters())
    assert all(p.requires_grad for p in poseformer.pose_encoder.parameters())
    assert len(create_model("pevl_ucmr3_tiny").ucmr) == 3


@pytest.mark.slow
def test_ablations_change_the_loss_terms():
    labels = torch.tensor([0, 1, 2])
    terms = {}
    for name in ["pevl_tiny", "vl_tiny", "vpt_tiny", "pt_tiny"]:
        model = create_model(name)
        terms[name] = set(model(**clip_inputs(model), texts=LABELS, labels=labels).losses)
    assert {"loss_semantic_guided", "loss_sub_fused", "loss_t2v_video", "loss_action_pose"} <= terms["pevl_tiny"]
    assert terms["vl_tiny"] == {"loss_action_video"}
    assert terms["vpt_tiny"] == {"loss_action_video", "loss_action_pose", "loss_action_fused"}
    assert "loss_sub_pose" in terms["pt_tiny"] and not any("video" in t for t in terms["pt_tiny"])


def test_prompt_styles_follow_table_4():
    label_only = create_model("pevl_prompt_label_tiny").build_class_texts(LABELS[:1], ["diving"])
    action = create_model("pevl_prompt_action_tiny").build_class_texts(LABELS[:1], ["diving"])
    coarse = create_model("pevl_tiny").build_class_texts(LABELS[:1], ["diving"])
    assert label_only.prompts == [LABELS[0]]
    assert action.prompts == [f"a video of action {LABELS[0]}"]
    assert coarse.prompts == [f"a video of diving action {LABELS[0]}"]
    # The label words are located among the prompt's tokens, whatever the prefix.
    for texts in (label_only, action, coarse):
        word_tokens = texts.tokens[0][texts.word_mask[0]]
        expected = [t for t in pevl.tokenize(LABELS[0])[0].tolist() if t not in (49406, 49407, 0, 267)]
        assert word_tokens.tolist() == expected
        assert texts.phrase_index[0].max().item() == 2  # three comma-separated phrases


def test_loss_at_init_is_about_log_num_classes():
    torch.manual_seed(1)
    model = create_model("pevl_tiny")
    out = model(**clip_inputs(model, batch=16), texts=LABELS, labels=torch.arange(16) % 4)
    for name, value in out.losses.items():
        if name.startswith(("loss_action", "loss_sub")):
            assert abs(value.item() - math.log(4)) < 0.6, name
    assert abs(out.loss.item() - math.log(4)) < 0.8


@pytest.mark.slow
def test_tiny_pevl_overfits_a_small_training_set():
    torch.manual_seed(0)
    model = create_model("pevl_tiny")
    inputs = clip_inputs(model, batch=16)
    labels = torch.arange(16) % 4
    texts = model.build_class_texts(LABELS, ["diving"] * 4)
    optimizer = torch.optim.AdamW([p for _, p in model.trainable_parameters()], lr=1e-3)
    accuracy = 0.0
    for step in range(300):
        model.train()
        loss = model(**inputs, texts=texts, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 10 == 9:
            model.eval()
            with torch.no_grad():
                accuracy = (model(**inputs, texts=texts).logits.argmax(-1) == labels).float().mean().item()
            if accuracy == 1.0:
                break
    assert accuracy == 1.0


def test_missing_modality_and_wrong_class_count_are_clear_errors():
    model = create_model("pevl_tiny", num_classes=4)
    inputs = clip_inputs(model)
    with pytest.raises(PevlError, match="pose clip"):
        model(video=inputs["video"], texts=LABELS)
    with pytest.raises(PevlError, match="3 class texts"):
        model(**inputs, texts=LABELS[:3], labels=torch.tensor([0, 1, 2]))
    with pytest.raises(PevlError, match="pose must be"):
        model(video=inputs["video"], pose=torch.zeros(3, 8, 15, 3), texts=LABELS)


def test_clips_of_other_lengths_run():
    model = create_model("pevl_tiny").eval()
    with torch.no_grad():
        out = model(**clip_inputs(model, video_frames=2, pose_frames=16), texts=LABELS)
    assert out.logits.shape == (3, 4)


@torch.no_grad()
def test_per_clip_pose_normalisation_ignores_where_and_how_large_the_person_is():
    from pevl.models.pose_encoder import normalize_per_clip

    pose = torch.rand(2, 8, 17, 3) * 2 - 1
    pose[..., 2] = 1.0
    pose[0, 3, 5, 2] = 0.0  # a missed joint
    moved = pose.clone()
    moved[..., :2] = 0.3 * pose[..., :2] + torch.tensor([0.4, -0.2])
    normalised = normalize_per_clip(pose)
    torch.testing.assert_close(normalised, normalize_per_clip(moved), atol=1e-5, rtol=1e-4)
    present = normalised[..., 2] > 0
    assert normalised[0, 3, 5, :2].abs().sum() == 0  # missed joints stay at zero
    centre = (normalised[..., :2] * present[..., None]).sum(dim=(1, 2)) / present.sum(dim=(1, 2))[:, None]
    torch.testing.assert_close(centre, torch.zeros(2, 2), atol=1e-5, rtol=0)
    model = create_model("pt_tiny", pose_normalize="clip").eval()
    torch.testing.assert_close(model.encode_pose(pose), model.encode_pose(moved), atol=1e-4, rtol=1e-4)
    with pytest.raises(PevlError, match="pose_normalize"):
        create_model("pt_tiny", pose_normalize="image")


@torch.no_grad()
def test_bone_channels_carry_each_joint_relative_to_its_parent():
    from pevl.data.pose.layouts import COCO17_JOINTS, COCO17_PARENT
    from pevl.models.pose_encoder import PoseEmbedding

    parent = dict(zip(COCO17_JOINTS, (COCO17_JOINTS[i] for i in COCO17_PARENT), strict=True))
    assert parent["left_wrist"] == "left_elbow" and parent["right_ankle"] == "right_knee"
    from pevl.models.config import COCO17_TREE

    assert COCO17_TREE == COCO17_PARENT  # the model's default tree is the data layout's
    embed = PoseEmbedding(3, 17, 8, 16, motion=False, bones=True, parents=COCO17_PARENT)
    assert embed.proj.in_features == 5
    seen = []
    embed.proj.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    pose = torch.rand(1, 8, 17, 3) * 2 - 1
    pose[..., 2] = 1.0
    pose[0, 2, 7, 2] = 0.0  # left elbow missed in frame 2: its bone and the left wrist's are zero there
    embed(pose)
    bones = seen[0][..., 3:]
    torch.testing.assert_close(bones[0, 0, 9], pose[0, 0, 9, :2] - pose[0, 0, 7, :2])
    assert bones[0, 0, 0].abs().sum() == 0  # the root has no bone
    assert bones[0, 2, 7].abs().sum() == 0 and bones[0, 2, 9].abs().sum() == 0
    with pytest.raises(ValueError, match="parent of each"):
        PoseEmbedding(3, 15, 8, 16, bones=True, parents=COCO17_PARENT)


@torch.no_grad()
def test_class_text_features_are_cached_in_eval_only():
    model = create_model("pevl_tiny").eval()
    texts = model.build_class_texts(LABELS)
    first = model.encode_class_texts(texts)
    assert model.encode_class_texts(texts) is first
    model.train()
    assert model.encode_class_texts(texts) is not first


def test_new_label_texts_score_without_retraining():
    model = create_model("pevl_tiny").eval()
    with torch.no_grad():
        out = model(**clip_inputs(model), texts=["jumping jacks", "cartwheel", "handstand", "lunge", "squat"])
    assert out.logits.shape == (3, 5)


def test_meta_device_builds_full_size_models_without_memory():
    with torch.device("meta"):
        model = create_model("pevl_vit_l14")
    assert model.clip.visual.blocks[0].attn.qkv.weight.is_meta
    assert model.config.clip.vision.width == 1024 and len(model.clip.visual.blocks) == 24


@torch.no_grad()
def test_cached_class_texts_follow_every_weight_change():
    model = create_model("pevl_tiny").eval()
    texts = model.build_class_texts(LABELS)
    first = model.encode_class_texts(texts).sentence.clone()
    # load_state_dict of other weights, in eval mode: the cache must not serve the old features.
    other = create_model("pevl_tiny")
    for param in other.text_encoder.parameters():
        param.normal_(std=0.1)
    model.load_state_dict(other.state_dict())
    expected = other.eval().encode_class_texts(texts).sentence
    got = model.encode_class_texts(texts).sentence
    assert not torch.allclose(got, first, atol=1e-4)
    torch.testing.assert_close(got, expected)
    # An in-place change of one weight (an optimiser step, a user's edit) too.
    model.text_encoder.adapters[-1].fc2.bias[:4].add_(1.0)  # not all channels alike: ln_final would remove it
    changed = model.encode_class_texts(texts).sentence
    assert not torch.allclose(changed, got, atol=1e-4)
    # Frozen CLIP text weights count as well.
    model.clip.text.ln_final.weight.mul_(2.0)
    assert not torch.allclose(model.encode_class_texts(texts).sentence, changed, atol=1e-4)
    # Unchanged weights: the cached features themselves.
    assert model.encode_class_texts(texts) is model.encode_class_texts(texts)


@torch.no_grad()
def test_cached_class_texts_are_keyed_on_the_autocast_dtype():
    model = create_model("pevl_tiny").eval()
    texts = model.build_class_texts(LABELS)
    full = model.encode_class_texts(texts)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = model.encode_class_texts(texts)
        assert half is not full and half.sentence.dtype == torch.bfloat16
        assert model.encode_class_texts(texts) is half
    assert model.encode_class_texts(texts).sentence.dtype == torch.float32


@pytest.mark.parametrize("name,paper", [("pevl_paper_params_vit_b16", 43e6), ("pevl_paper_params_vit_l14", 112e6)])
def test_paper_params_presets_match_table_2_and_only_widen_the_adapters(name, paper):
    with torch.device("meta"):
        model = create_model(name)
    tunable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert abs(tunable - paper) < 0.01 * paper
    default = get_config(name.replace("_paper_params", ""))
    assert model.config.replace(adapter_ratio=default.adapter_ratio) == default  # nothing else differs


def test_a_model_built_in_inference_mode_scores_without_the_cache():
    with torch.inference_mode():
        model = create_model("pevl_tiny").eval()
        texts = model.build_class_texts(LABELS)
        first = model.encode_class_texts(texts)
        out = model(**clip_inputs(model), texts=texts)
    assert out.logits.shape == (3, len(LABELS))
    with torch.no_grad():
        torch.testing.assert_close(model.encode_class_texts(texts).sentence, first.sentence)
