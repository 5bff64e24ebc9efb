"""Optimiser groups (no decay on norms, biases, embeddings, tokens, logit scales) and the warm-up + cosine schedule."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from pevl.engine.config import OptimSection
from pevl.engine.optim import build_optimizer, build_scheduler, param_groups
from pevl.errors import PevlError
from pevl.models.presets import create_model, list_models


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.embed = nn.Linear(3, 4)  # a linear layer named like an embedding: decayed all the same
        self.norm = nn.LayerNorm(4)
        self.positional_embedding = nn.Parameter(torch.zeros(5, 4))
        self.temporal_embed = nn.Parameter(torch.zeros(3, 4))
        self.background_token = nn.Parameter(torch.zeros(1, 1, 4))
        self.logit_scale = nn.Parameter(torch.tensor(2.0))
        self.adapter_fc = nn.Linear(4, 2)
        self.adapter_scale = nn.Parameter(torch.ones(4))
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)


def group_names(optimizer: torch.optim.Optimizer) -> dict[str, set[str]]:
    return {g["name"]: set(g["param_names"]) for g in optimizer.param_groups}


def test_weight_decay_only_on_the_matrices_of_layers():
    optimizer = build_optimizer(Toy(), OptimSection(lr=1e-3, weight_decay=0.1))
    assert isinstance(optimizer, torch.optim.AdamW)
    groups = group_names(optimizer)
    assert groups["decay"] == {"proj.weight", "embed.weight", "adapter_fc.weight"}
    assert groups["no_decay"] == {
        "proj.bias",
        "embed.bias",
        "norm.weight",
        "norm.bias",
        "positional_embedding",
        "temporal_embed",
        "background_token",
        "logit_scale",
        "adapter_fc.bias",
        "adapter_scale",
    }
    decays = {g["name"]: g["weight_decay"] for g in optimizer.param_groups}
    assert decays == {"decay": 0.1, "no_decay": 0.0}


def test_frozen_parameters_are_not_optimised():
    model = Toy()
    optimizer = build_optimizer(model, OptimSection())
    optimised = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert id(model.frozen.weight) not in optimised and id(model.frozen.bias) not in optimised
    assert len(optimised) == sum(p.requires_grad for p in model.parameters())


def test_hyper_parameters_come_from_the_config():
    optimizer = build_optimizer(Toy(), OptimSection(lr=0.02, betas=(0.8, 0.95), warmup_epochs=0))
    for group in optimizer.param_groups:
        assert group["lr"] == 0.02 and group["betas"] == (0.8, 0.95)
    sgd = build_optimizer(Toy(), OptimSection(optimizer="sgd", lr=0.1, betas=(0.9, 0.999)))
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.9


def test_a_fully_frozen_model_is_an_error():
    model = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(PevlError, match="no trainable parameters"):
        build_optimizer(model, OptimSection())


def lr_trace(cfg: OptimSection, steps_per_epoch: int, steps: int) -> list[float]:
    optimizer = build_optimizer(nn.Linear(2, 2), cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch)
    trace = []
    for _ in range(steps):
        trace.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return trace


def test_linear_warmup_then_cosine_to_min_lr():
    # 3 epochs x 4 steps = 12 steps, 4 of warm-up, lr 1.0 decaying to 0.1.
    trace = lr_trace(OptimSection(lr=1.0, min_lr=0.1, epochs=3, warmup_epochs=1), steps_per_epoch=4, steps=13)
    assert trace[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert trace[4] == pytest.approx(1.0)  # cosine starts at the peak
    assert trace[6] == pytest.approx(0.868198, abs=1e-6)  # progress 1/4: 0.1 + 0.9 * (1 + cos(pi/4)) / 2
    assert trace[8] == pytest.approx(0.55)  # progress 1/2
    assert trace[12] == pytest.approx(0.1)  # the end of the schedule
    assert all(a >= b for a, b in zip(trace[4:], trace[5:], strict=False))


def test_fractional_and_zero_warmup():
    half = lr_trace(OptimSection(lr=1.0, epochs=2, warmup_epochs=0.5), steps_per_epoch=4, steps=4)
    assert half == pytest.approx([0.5, 1.0, 1.0, (1 + math.cos(math.pi / 6)) / 2])  # 2 warm-up steps of 8
    none = lr_trace(OptimSection(lr=1.0, epochs=1, warmup_epochs=0), steps_per_epoch=4, steps=1)
    assert none == [1.0]


def test_every_group_follows_the_schedule():
    optimizer = build_optimizer(Toy(), OptimSection(lr=1.0, epochs=2, warmup_epochs=1))
    scheduler = build_scheduler(optimizer, OptimSection(lr=1.0, epochs=2, warmup_epochs=1), steps_per_epoch=2)
    optimizer.step()
    scheduler.step()
    assert [g["lr"] for g in optimizer.param_groups] == [1.0, 1.0]


def test_scheduler_state_round_trips_through_json():
    cfg = OptimSection(lr=1.0, min_lr=0.0, epochs=4, warmup_epochs=1)
    optimizer = build_optimizer(nn.Linear(2, 2), cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch=5)
    for _ in range(7):
        optimizer.step()
        scheduler.step()
    state = json.loads(json.dumps(scheduler.state_dict()))
    optimizer_state = optimizer.state_dict()

    fresh_optimizer = build_optimizer(nn.Linear(2, 2), cfg)
    fresh = build_scheduler(fresh_optimizer, cfg, steps_per_epoch=5)
    fresh_optimizer.load_state_dict(optimizer_state)
    fresh.load_state_dict(state)
    for _ in range(3):
        optimizer.step()
        scheduler.step()
        fresh_optimizer.step()
        fresh.step()
        assert fresh_optimizer.param_groups[0]["lr"] == pytest.approx(optimizer.param_groups[0]["lr"])
    assert fresh.last_epoch == 10


def test_an_epoch_without_steps_is_an_error():
    optimizer = build_optimizer(nn.Linear(2, 2), OptimSection())
    with pytest.raises(PevlError, match="at least one optimiser step"):
        build_scheduler(optimizer, OptimSection(), steps_per_epoch=0)


# ---- weight decay by role, on real models ---------------------------------------------------------------------------


def _split(model: nn.Module) -> dict[str, set[str]]:
    groups = {g["name"]: set(g["param_names"]) for g in param_groups(model, 0.1)}
    return {"decay": groups.get("decay", set()), "no_decay": groups.get("no_decay", set())}


def _layer_weights(model: nn.Module) -> set[str]:
    """Names of the weight matrices of linear and convolution layers, found independently of the optimiser code."""
    names = set()
    for module_name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            names.add(f"{module_name}.weight" if module_name else "weight")
        if isinstance(module, nn.MultiheadAttention) and module.in_proj_weight is not None:
            names.add(f"{module_name}.in_proj_weight")
    return names


@pytest.mark.parametrize("preset", list_models())
def test_weight_decay_goes_to_layer_matrices_only_on_every_preset(preset):
    with torch.device("meta"):
        model = create_model(preset)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    split = _split(model)
    assert split["decay"] | split["no_decay"] == trainable and not split["decay"] & split["no_decay"]
    assert split["decay"] == _layer_weights(model) & trainable
    assert all(dict(model.named_parameters())[n].ndim >= 2 for n in split["decay"])
    if model.pose_encoder is not None and hasattr(model.pose_encoder.embed, "proj"):
        assert "pose_encoder.embed.proj.weight" in split["decay"]  # a linear layer, though named "embed"
    for name in split["no_decay"]:  # embeddings, tokens, scales, temperatures, biases and norms
        assert not name.endswith(".weight") or name not in _layer_weights(model), name


def test_an_unfrozen_clip_decays_its_matrices_but_not_its_embeddings():
    model = create_model("vl_tiny", freeze_clip=False)
    split = _split(model)
    for name in ("clip.visual.proj", "clip.text.proj", "clip.visual.blocks.0.attn.qkv.weight",
                 "clip.visual.patch_embed.weight"):  # fmt: skip
        assert name in split["decay"], name
    for name in ("clip.visual.pos_embed", "clip.visual.cls_token", "clip.text.pos_embed",
                 "clip.text.token_embedding.weight", "clip.visual.ln_pre.weight",
                 "sgmc.logit_scale", "video_encoder.temporal_embed"):  # fmt: skip
        assert name in split["no_decay"], name
    # CLIP's own logit scale is used by no loss of PeVL, so it never trains (models/trainable.py): in no group
    assert "clip.logit_scale" not in split["decay"] and "clip.logit_scale" not in split["no_decay"]


def test_pevl_no_decay_parameters_by_role():
    model = create_model("pevl_tiny")
    split = _split(model)
    for name in ("pose_encoder.embed.joint_embed", "pose_encoder.embed.temporal_embed", "ucmr.0.v2p.background",
                 "sgmc.logit_scale", "sgmc.concept_attention.log_temperature", "ucmr.0.v2p.norm_groups.weight",
                 "ucmr.0.p2v.adapter.fc1.bias"):  # fmt: skip
        assert name in split["no_decay"], name
    for name in ("pose_encoder.embed.proj.weight", "ucmr.0.v2p.q.weight", "sgmc.fusion.weight",
                 "video_encoder.adapters.0.s_adapter.fc1.weight", "sgmc.concept_attention.query.weight"):  # fmt: skip
        assert name in split["decay"], name


# ---- the logit scale is clamped after every optimiser step of a run -------------------------------------------------


def test_the_training_step_clamps_the_logit_scale():
    from types import SimpleNamespace

    from pevl.engine.train import Trainer
    from pevl.models.config import MAX_LOGIT_SCALE

    model = create_model("pevl_tiny")
    trainer = Trainer.__new__(Trainer)
    cfg = OptimSection(optimizer="sgd", lr=10.0, epochs=1, warmup_epochs=0)
    trainer.model, trainer.cfg, trainer.step, trainer._skipped_in_a_row = model, SimpleNamespace(optim=cfg), 0, 0
    trainer.optimizer = build_optimizer(model, cfg)
    trainer.scheduler = build_scheduler(trainer.optimizer, cfg, steps_per_epoch=4)
    model.sgmc.logit_scale.grad = torch.tensor(-10.0)  # a step that pushes the scale far above the cap
    assert trainer._optimizer_step()
    assert model.sgmc.logit_scale.item() == pytest.approx(math.log(MAX_LOGIT_SCALE))


def test_resuming_clamps_a_logit_scale_saved_above_the_cap(monkeypatch, tmp_path):
    from types import SimpleNamespace

    import pevl.engine.train as train_module
    from pevl.engine.train import Trainer
    from pevl.models.config import MAX_LOGIT_SCALE

    model = create_model("pevl_tiny")
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    saved["sgmc.logit_scale"] = torch.tensor(math.log(1000.0))  # written when only the forward capped the scale
    checkpoint = SimpleNamespace(config={}, step=3, epoch=1, extra={}, metrics={})
    monkeypatch.setattr(train_module, "locate_checkpoint", lambda source: tmp_path / "ckpt")
    monkeypatch.setattr(train_module, "load_checkpoint", lambda path, device: checkpoint)
    monkeypatch.setattr(train_module, "config_changes", lambda old, new: [])
    monkeypatch.setattr(train_module, "load_model_state", lambda m, ckpt: m.load_state_dict(saved))
    monkeypatch.setattr(train_module, "restore_training_state", lambda *args, **kwargs: None)
    trainer = Trainer.__new__(Trainer)
    trainer.model, trainer.work_dir, trainer.main = model, tmp_path, False
    trainer.cfg = SimpleNamespace(to_dict=dict)
    trainer.info = SimpleNamespace(rank=0)
    trainer.optimizer = trainer.scheduler = trainer.sampler = None
    trainer._resume(tmp_path / "ckpt")
    assert model.sgmc.logit_scale.item() == pytest.approx(math.log(MAX_LOGIT_SCALE))
