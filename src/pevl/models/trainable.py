"""Which parameters of a PeVL model train: the one place that decides it.

A parameter trains when the training loss uses it. Frozen are:

* all of CLIP with ``freeze_clip=True`` (the paper: only adapters and the new modules train);
* CLIP's own ``logit_scale`` always: every PeVL contrast uses SGMC's logit scale instead;
* with ``use_video=False`` (the PT preset), the image-only parts of CLIP's vision tower (patch embedding, [cls]
  token, position embedding), plus ``ln_pre`` without ``pose_ln_pre`` and the whole tower but its head with the
  PoseFormer-style backbone.

A trainable parameter that receives no gradient is more than waste: ``DistributedDataParallel`` fails on the second
step of a multi-process run. :func:`frozen_parameters` is the table of what never trains and why; the tests check on
every preset that every other parameter gets a gradient from the training loss.
"""

from __future__ import annotations

from torch import nn

from pevl.models.config import PeVLConfig


def frozen_parameters(cfg: PeVLConfig) -> dict[str, str]:
    """The parameters (or modules, by dotted name) that never train under ``cfg``, each with the reason.

    Args:
        cfg: The model configuration.

    Returns:
        ``{name: option or reason}``; a name covers the parameter of that name and everything under it.
    """
    if cfg.freeze_clip:
        return {"clip": "freeze_clip=True"}
    frozen = {"clip.logit_scale": "unused: PeVL's contrasts use sgmc.logit_scale"}
    if not cfg.use_video:
        image_only = "use_video=False (image-only part of CLIP's vision tower)"
        for name in ("clip.visual.patch_embed", "clip.visual.cls_token", "clip.visual.pos_embed"):
            frozen[name] = image_only
        if cfg.pose_backbone == "poseformer":
            backbone = "use_video=False with pose_backbone='poseformer' (only the vision head projects pose tokens)"
            frozen |= dict.fromkeys(("clip.visual.ln_pre", "clip.visual.blocks"), backbone)
        elif not cfg.pose_ln_pre:
            frozen["clip.visual.ln_pre"] = "use_video=False with pose_ln_pre=False"
    return frozen


def frozen_reason(name: str, frozen: dict[str, str]) -> str | None:
    """Why the parameter ``name`` is frozen according to the table ``frozen`` (``None``: it trains)."""
    for prefix, reason in frozen.items():
        if name == prefix or name.startswith(prefix + "."):
            return reason
    return None


def set_trainable(model: nn.Module, cfg: PeVLConfig) -> None:
    """Freeze what :func:`frozen_parameters` names and make every other parameter of ``model`` trainable."""
    frozen = frozen_parameters(cfg)
    for name, param in model.named_parameters():
        param.requires_grad_(frozen_reason(name, frozen) is None)


def parameter_owner(name: str) -> str:
    """The model option that builds or switches the part a parameter belongs to (for error messages)."""
    owners = (
        ("clip.", "freeze_clip"),
        ("video_encoder.", "use_video"),
        ("pose_encoder.", "use_pose / pose_backbone / temporal_attention / pose_motion / pose_bones"),
        ("text_encoder.", "text_adapter"),
        ("sgmc.", "sgmc / sub_action / action_streams / text_to_vision / semantic_guided_loss"),
    )
    if name.startswith("ucmr."):
        for part, option in ((".p2v.", "p2v"), (".v2p.", "v2p / background_token")):
            if part in name:
                return option
        return "num_ucmr_blocks"
    return next((option for prefix, option in owners if name.startswith(prefix)), "the model code")
