"""What trains: every trainable parameter of every preset gets a gradient from the training loss, frozen or not.

This is DistributedDataParallel's check run in one process: a trainable parameter the loss does not use makes a
multi-process run fail on its second step.
"""

from __future__ import annotations

import pytest
import torch

from model_helpers import LABELS, clip_inputs, randomize
from pevl.models.presets import create_model, list_models
from pevl.models.trainable import frozen_parameters, frozen_reason, parameter_owner

# Option combinations that leave parts of CLIP unused (the pose-only model without CLIP's image embedding or blocks).
OPTION_CASES = [
    ("pt_tiny", {"pose_backbone": "poseformer"}),
    ("pt_tiny", {"pose_ln_pre": False}),
    ("pevl_tiny", {"sgmc": False}),
    ("pevl_tiny", {"sub_action": False, "text_to_vision": False, "semantic_guided_loss": False}),
    ("pevl_tiny", {"action_streams": ("fused",), "sub_action_streams": ("fused",)}),
]
CASES = [(name, {}) for name in list_models("tiny")] + OPTION_CASES


def _backward(name: str, freeze: bool, options: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    model = randomize(create_model(name, freeze_clip=freeze, **options)).train()  # off the zero init of adapters
    out = model(**clip_inputs(model, batch=4), texts=LABELS, labels=torch.tensor([0, 1, 2, 3]))
    out.loss.backward()
    return model


@pytest.mark.parametrize("freeze", [True, False], ids=["frozen", "scratch"])
@pytest.mark.parametrize(("name", "options"), CASES, ids=[f"{n}{'-' + '-'.join(o) if o else ''}" for n, o in CASES])
def test_every_trainable_parameter_gets_a_gradient(name, options, freeze):
    model = _backward(name, freeze, options)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    no_grad = [n for n, p in trainable if p.grad is None]
    zero_grad = [n for n, p in trainable if p.grad is not None and not p.grad.any()]
    assert no_grad == [] and zero_grad == []
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert all(p.grad is None for n, p in model.named_parameters() if not p.requires_grad)
    assert "clip.logit_scale" in frozen  # PeVL's contrasts use SGMC's logit scale
    if freeze:
        assert all(n.startswith("clip.") for n in frozen) and not any(n.startswith("clip.") for n, _ in trainable)
    else:  # trained from scratch: all of CLIP the model uses trains
        clip_trainable = {n for n, _ in trainable if n.startswith("clip.")}
        assert any(n.startswith("clip.text.") for n in clip_trainable)
        assert any(n.startswith("clip.visual.") for n in clip_trainable)  # the vision head projects every stream


def test_frozen_table_says_why():
    model_cfg = create_model("pevl_tiny", freeze_clip=True).config
    assert frozen_parameters(model_cfg) == {"clip": "freeze_clip=True"}
    scratch = frozen_parameters(model_cfg.replace(freeze_clip=False))
    assert list(scratch) == ["clip.logit_scale"]
    pose_only = frozen_parameters(model_cfg.replace(freeze_clip=False, use_video=False))
    assert frozen_reason("clip.visual.patch_embed.weight", pose_only).startswith("use_video=False")
    assert frozen_reason("clip.visual.blocks.0.attn.qkv.weight", pose_only) is None
    assert frozen_reason("clip.visual.proj", pose_only) is None
    assert frozen_reason("clip.visual.pos_embedding_extra", pose_only) is None  # whole names only, not prefixes
    poseformer = frozen_parameters(model_cfg.replace(freeze_clip=False, use_video=False, pose_backbone="poseformer"))
    assert "poseformer" in frozen_reason("clip.visual.blocks.0.attn.qkv.weight", poseformer)


def test_loaded_or_rebuilt_models_keep_the_rule():
    model = create_model("vl_tiny", freeze_clip=False)
    state = model.state_dict()
    again = create_model("vl_tiny", freeze_clip=False)
    again.load_state_dict(state)
    assert not again.clip.logit_scale.requires_grad and again.clip.visual.proj.requires_grad


@pytest.mark.parametrize(
    ("name", "option"),
    [
        ("clip.logit_scale", "freeze_clip"),
        ("ucmr.0.p2v.attn.in_proj_weight", "p2v"),
        ("ucmr.0.v2p.mlp.fc1.weight", "v2p / background_token"),
        ("ucmr.0.norm.weight", "num_ucmr_blocks"),
        ("sgmc.fusion.weight", "sgmc / sub_action / action_streams / text_to_vision / semantic_guided_loss"),
        ("mystery.weight", "the model code"),
    ],
)
def test_parameter_owner(name, option):
    assert parameter_owner(name) == option
