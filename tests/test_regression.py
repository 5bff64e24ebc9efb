"""Stored outputs: every tiny preset's logits and losses on fixed inputs, so a refactor cannot change them unseen.

The weights are the preset's seeded init moved off it (:func:`model_helpers.randomize`). Three groups of entries:

* ``<preset>/...``: an input with missing joints and one frame where nobody was found;
* ``clean/<preset>/...``: every joint of every frame detected;
* ``masked/<preset>[+variant]/...``: a pose window with nobody in it, a clip with nobody at all and frames with some
  joints missing, for every tiny preset and for the V2P-R variants (hard assignment, no background token); these also
  store the loss's gradient norm per module, so that a wrong line of the backward pass fails too.

After an intended change of the numbers, regenerate the file with ``python tests/test_regression.py`` and say why in
the commit.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from model_helpers import LABELS, clip_inputs, tiny_model
from pevl.models.presets import list_models

STORED = Path(__file__).parent / "data" / "tiny_outputs.safetensors"
TINY = list_models("_tiny")
VARIANTS = {
    "hard": {"v2p_hard_assignment": True},
    "nobg": {"background_token": False},
    "hard+nobg": {"v2p_hard_assignment": True, "background_token": False},
}
MASKED = [(name, "") for name in TINY] + [("pevl_tiny", v) for v in VARIANTS] + [("pevl_ucmr2_tiny", "hard+nobg")]
GRAD_GROUPS = ("video_encoder", "pose_encoder", "text_encoder", "ucmr", "sgmc")


def _outputs(name: str) -> dict[str, torch.Tensor]:
    model = tiny_model(name, seed=7)
    inputs = clip_inputs(model, batch=3, seed=11, missing=0.15)
    if inputs["pose"] is not None:
        inputs["pose"][1, 2, :, 2] = 0.0
    with torch.no_grad():
        out = model(**inputs, texts=LABELS, labels=torch.tensor([0, 2, 2]))
    result = {f"{name}/logits": out.logits.float()}
    for term, value in out.losses.items():
        result[f"{name}/{term}"] = value.detach().float().reshape(1)
    return result


def _clean_outputs(name: str) -> dict[str, torch.Tensor]:
    model = tiny_model(name, seed=7)
    inputs = clip_inputs(model, batch=3, seed=13)
    with torch.no_grad():
        out = model(**inputs, texts=LABELS, labels=torch.tensor([1, 3, 1]))
    result = {f"clean/{name}/logits": out.logits.float()}
    for term, value in out.losses.items():
        result[f"clean/{name}/{term}"] = value.detach().float().reshape(1)
    return result


def masked_inputs(model: torch.nn.Module) -> dict[str, torch.Tensor | None]:
    """Sample 0: one pose window with nobody; sample 1: nobody in the whole clip; sample 2: 30% of joints missing."""
    inputs = clip_inputs(model, batch=3, seed=17, missing=0.3)
    pose = inputs["pose"]
    if pose is not None:
        w = model.config.pose_window
        pose[0, w : 2 * w, :, 2] = 0.0
        pose[1, ..., 2] = 0.0
        pose[2, 0, :5, 2] = 0.0  # besides the random ones, a frame with only its legs seen
    return inputs


def _masked_outputs(name: str, variant: str) -> dict[str, torch.Tensor]:
    model = tiny_model(name, seed=5, **VARIANTS.get(variant, {})).train()
    key = f"masked/{name}{'+' + variant if variant else ''}"
    out = model(**masked_inputs(model), texts=LABELS, labels=torch.tensor([1, 0, 3]))
    out.loss.backward()
    result = {f"{key}/logits": out.logits.detach().float()}
    for term, value in out.losses.items():
        result[f"{key}/{term}"] = value.detach().float().reshape(1)
    for group in GRAD_GROUPS:
        grads = [p.grad.float().pow(2).sum() for n, p in model.named_parameters() if n.startswith(group + ".")
                 and p.grad is not None]  # fmt: skip
        if grads:
            result[f"{key}/grad_norm_{group}"] = torch.stack(grads).sum().sqrt().reshape(1)
    return result


def _check(got: dict[str, torch.Tensor], prefix: str) -> None:
    stored = {k: v for k, v in load_file(STORED).items() if k.startswith(prefix)}
    assert stored, f"no stored outputs for {prefix}: regenerate {STORED.name}"
    assert sorted(got) == sorted(stored), "the loss terms differ from the stored ones"
    for key, value in stored.items():
        torch.testing.assert_close(got[key], value, atol=2e-5, rtol=2e-5, msg=lambda m, k=key: f"{k}: {m}")


@pytest.mark.parametrize("name", TINY)
def test_tiny_preset_outputs_equal_the_stored_ones(name):
    _check(_outputs(name), f"{name}/")


@pytest.mark.parametrize("name", TINY)
def test_tiny_preset_outputs_on_clean_input_equal_the_stored_ones(name):
    _check(_clean_outputs(name), f"clean/{name}/")


@pytest.mark.parametrize("name,variant", MASKED)
def test_outputs_and_gradients_with_missing_people_equal_the_stored_ones(name, variant):
    _check(_masked_outputs(name, variant), f"masked/{name}{'+' + variant if variant else ''}/")


def all_outputs() -> dict[str, torch.Tensor]:
    """Every stored entry, computed by the current code."""
    outputs: dict[str, torch.Tensor] = {}
    for preset in TINY:
        outputs.update(_outputs(preset))
        outputs.update(_clean_outputs(preset))
    for preset, variant in MASKED:
        outputs.update(_masked_outputs(preset, variant))
    return outputs


if __name__ == "__main__":
    torch.set_num_threads(1)
    outputs = all_outputs()
    STORED.parent.mkdir(exist_ok=True)
    save_file({k: v.contiguous() for k, v in outputs.items()}, STORED)
    print(f"wrote {len(outputs)} tensors to {STORED}")
