"""Stored outputs: every tiny preset's logits and losses on a fixed input, so a refactor cannot change them unseen.

The weights are the preset's seeded init moved off it (:func:`model_helpers.randomize`), the input has missing
joints and a frame where nobody was found. After an intended change of the numbers, regenerate the file with
``python tests/test_regression.py`` and say why in the commit.
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


@pytest.mark.parametrize("name", TINY)
def test_tiny_preset_outputs_equal_the_stored_ones(name):
    stored = {k: v for k, v in load_file(STORED).items() if k.startswith(f"{name}/")}
    assert stored, f"no stored outputs for {name}: regenerate {STORED.name}"
    got = _outputs(name)
    assert sorted(got) == sorted(stored), "the loss terms differ from the stored ones"
    for key, value in stored.items():
        torch.testing.assert_close(got[key], value, atol=2e-5, rtol=2e-5, msg=lambda m, k=key: f"{k}: {m}")


if __name__ == "__main__":
    outputs: dict[str, torch.Tensor] = {}
    for preset in TINY:
        outputs.update(_outputs(preset))
    STORED.parent.mkdir(exist_ok=True)
    save_file({k: v.contiguous() for k, v in outputs.items()}, STORED)
    print(f"wrote {len(outputs)} tensors of {len(TINY)} presets to {STORED}")
