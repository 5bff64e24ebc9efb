"""Every config shipped in configs/ loads, names a real preset and dataset, and keeps the paper's defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from pevl.data.datasets import DATASETS
from pevl.engine.builder import model_config
from pevl.engine.config import load_config
from pevl.models.presets import list_models

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_configs_cover_the_papers_datasets_and_backbones():
    names = {path.stem for path in CONFIGS}
    for dataset in ("gym99", "gym288", "diving48", "haa500", "toyota_cs", "toyota_cv1", "toyota_cv2", "kinetics400"):
        for arch in ("vit_b16", "vit_l14"):
            assert f"{dataset}_{arch}" in names
    assert "pose_text_pyskl" in names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_loads(path):
    cfg = load_config(path)
    assert cfg.model.preset in list_models()
    assert cfg.data.dataset in DATASETS
    model_cfg = model_config(cfg)  # the preset accepts the overrides and frame counts
    if path.stem.endswith(("vit_b16", "vit_l14")):
        assert (model_cfg.num_video_frames, model_cfg.num_pose_frames) == (8, 32)
        assert model_cfg.freeze_clip and cfg.optim.optimizer == "adamw" and cfg.optim.warmup_epochs > 0
        assert cfg.model.pretrained in ("ViT-B/16", "ViT-L/14")
