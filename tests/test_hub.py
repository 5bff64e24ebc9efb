"""Weights where users get them: Hugging Face transformers CLIPs, video-finetuned CLIPs, and the Hub, offline."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from pevl.cli import main as cli_main
from pevl.errors import PevlError
from pevl.hub import create_model
from pevl.hub.weights import detect_format, load_clip_state_dict, load_clip_weights
from pevl.models.clip import CLIP, CLIPConfig, TextConfig, VisionConfig
from pevl.models.tokenizer import find_bpe_file, get_tokenizer, read_merges, tokenize
from reference_clip import build_reference_clip, randomize_

transformers = pytest.importorskip("transformers")
huggingface_hub = pytest.importorskip("huggingface_hub")

TEXTS = [
    "a video of action abseiling",
    "(VT) round-off, flic-flac on, stretched salto backward with 2 turn off",
    "Back+15som+05Twis+FREE",
    "Café naïve: 123,456 don't STOP",
]


def hf_clip(width: int, layers: int, heads: int, text_width: int, text_heads: int, embed: int, image: int, patch: int,
            act: str = "quick_gelu", seed: int = 0) -> torch.nn.Module:  # fmt: skip
    """A transformers CLIPModel built locally, every parameter random (LayerNorms and biases included)."""
    cfg = transformers.CLIPConfig(
        text_config=dict(hidden_size=text_width, intermediate_size=4 * text_width, num_hidden_layers=layers,
                         num_attention_heads=text_heads, hidden_act=act),
        vision_config=dict(hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers,
                           num_attention_heads=heads, image_size=image, patch_size=patch, hidden_act=act),
        projection_dim=embed,
    )  # fmt: skip
    model = transformers.CLIPModel(cfg).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.02 if p.ndim == 2 and p.shape[0] > 1000 else 0.1))
        model.logit_scale.fill_(3.7)
    return model


def tiny_pair(act: str = "quick_gelu") -> tuple[torch.nn.Module, CLIP]:
    hf = hf_clip(128, 2, 2, 64, 1, 32, 32, 8, act)
    ours = CLIP(CLIPConfig(32, VisionConfig(32, 8, 128, 2, 2), TextConfig(77, 49408, 64, 2, 1), act == "quick_gelu"))
    return hf, ours.eval()


def features(out: object) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out.pooler_output  # transformers 4.x / 5.x


def max_diffs(hf: torch.nn.Module, ours: CLIP, images: torch.Tensor, texts: list[str]) -> tuple[float, float]:
    tokens = tokenize(texts)
    with torch.no_grad():
        image = (features(hf.get_image_features(pixel_values=images)) - ours.encode_image(images)).abs().max()
        text = (features(hf.get_text_features(input_ids=tokens)) - ours.encode_text(tokens)).abs().max()
    return float(image), float(text)


@pytest.fixture()
def no_network(monkeypatch):
    """Any connection attempt fails the test: Hub access must come from the local cache."""

    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# ---- transformers' CLIP layout -----------------------------------------------------------------------------------


def test_transformers_folder_loads_and_embeds_like_transformers(tmp_path):
    hf, ours = tiny_pair()
    hf.save_pretrained(tmp_path / "clip")  # model.safetensors + config.json, the Hub's layout
    assert detect_format(hf.state_dict()) == "transformers"
    found = load_clip_weights(ours, tmp_path / "clip")
    assert (found.vision.width, found.vision.layers, found.text.width, found.embed_dim) == (128, 2, 64, 32)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    image_diff, text_diff = max_diffs(hf, ours, images, TEXTS)
    assert image_diff < 1e-4 and text_diff < 1e-4
    assert torch.equal(ours.logit_scale, hf.logit_scale)


@pytest.mark.slow
def test_vit_b16_shaped_transformers_clip_embeds_like_transformers():
    hf = hf_clip(768, 12, 12, 512, 8, 512, 224, 16)
    ours = CLIP(CLIPConfig()).eval()  # ViT-B/16 with QuickGELU, as openai/clip-vit-base-patch16
    load_clip_state_dict(ours, hf.state_dict())
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    image_diff, text_diff = max_diffs(hf, ours, images, TEXTS)
    assert image_diff < 1e-4 and text_diff < 1e-4, (image_diff, text_diff)


def test_token_ids_equal_transformers_tokenizer(tmp_path):
    """transformers' CLIPTokenizer over the same vocabulary gives the same ids as ours (and OpenAI's)."""
    ours = get_tokenizer()
    vocab, merges = tmp_path / "vocab.json", tmp_path / "merges.txt"
    vocab.write_text(json.dumps({symbol: i for i, symbol in enumerate(ours._symbols)}), encoding="utf-8")
    merges.write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in read_merges(find_bpe_file())), "utf-8")
    theirs = transformers.CLIPTokenizer(str(vocab), str(merges))
    for text, row in zip(TEXTS, tokenize(TEXTS), strict=True):
        ids = theirs(text)["input_ids"]
        assert ids == row[: len(ids)].tolist()
        assert not row[len(ids) :].any()  # then OpenAI's zero padding (transformers pads with <|endoftext|>)


def test_transformers_config_activation_and_heads_are_checked(tmp_path):
    hf, _ = tiny_pair(act="gelu")
    hf.save_pretrained(tmp_path / "clip")
    quick = CLIP(CLIPConfig(32, VisionConfig(32, 8, 128, 2, 2), TextConfig(77, 49408, 64, 2, 1), True))
    with pytest.raises(PevlError, match=r"config\.json: vision_config\.hidden_act is 'gelu'.*quick_gelu=False"):
        load_clip_weights(quick, tmp_path / "clip")
    four_heads = CLIP(CLIPConfig(32, VisionConfig(32, 8, 128, 2, 4), TextConfig(77, 49408, 64, 2, 1), False))
    with pytest.raises(PevlError, match="num_attention_heads is 2 but the model has 4 heads"):
        load_clip_weights(four_heads, tmp_path / "clip")
    plain = CLIP(CLIPConfig(32, VisionConfig(32, 8, 128, 2, 2), TextConfig(77, 49408, 64, 2, 1), False)).eval()
    load_clip_weights(plain, tmp_path / "clip")
    images = torch.randn(1, 3, 32, 32)
    assert max(max_diffs(hf, plain, images, TEXTS[:1])) < 1e-4


def test_transformers_missing_or_wrong_keys_are_named():
    hf, ours = tiny_pair()
    state = hf.state_dict()
    del state["text_model.encoder.layers.1.self_attn.k_proj.bias"]
    with pytest.raises(PevlError, match=r"'text_model\.encoder\.layers\.1\.self_attn\.k_proj\.bias'"):
        load_clip_state_dict(ours, state)
    state = hf.state_dict()
    del state["vision_model.post_layernorm.weight"]
    with pytest.raises(PevlError, match=r"missing key 'visual\.ln_post\.weight'.*'vision_model\.post_layernorm\."):
        load_clip_state_dict(ours, state)


def test_transformers_vision_model_with_projection_loads_the_image_tower():
    hf, ours = tiny_pair()
    state = {k: v for k, v in hf.state_dict().items() if k.startswith(("vision_model.", "visual_projection."))}
    load_clip_state_dict(ours, state, vision_only=True)
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        diff = (features(hf.get_image_features(pixel_values=images)) - ours.encode_image(images)).abs().max()
    assert diff < 1e-4


# ---- video-finetuned CLIPs in OpenAI's names ---------------------------------------------------------------------


def _reference_and_ours() -> tuple[torch.nn.Module, CLIP]:
    reference = randomize_(build_reference_clip()).eval()
    ours = CLIP(CLIPConfig(32, VisionConfig(32, 8, 128, 2, 2), TextConfig(77, 49408, 128, 2, 2), True)).eval()
    return reference, ours


def _same_as_reference(ours: CLIP, reference: torch.nn.Module) -> None:
    images, tokens = torch.randn(2, 3, 32, 32), tokenize(TEXTS)
    with torch.no_grad():
        assert torch.allclose(ours.encode_image(images), reference.encode_image(images), atol=1e-5)
        assert torch.allclose(ours.encode_text(tokens), reference.encode_text(tokens), atol=1e-5)


def test_actionclip_checkpoint_loads(tmp_path):
    """ActionCLIP saves {'model_state_dict': DataParallel CLIP in OpenAI names, 'fusion_model_state_dict': ...}."""
    reference, ours = _reference_and_ours()
    checkpoint = {
        "epoch": 49,
        "model_state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()},
        "fusion_model_state_dict": {"module.frame_position_embeddings.weight": torch.zeros(8, 32)},
        "optimizer_state_dict": {"state": {}, "param_groups": []},
    }
    torch.save(checkpoint, tmp_path / "actionclip.pt")
    load_clip_weights(ours, tmp_path / "actionclip.pt")
    _same_as_reference(ours, reference)


def _vificlip_state(reference: torch.nn.Module) -> dict[str, torch.Tensor]:
    """ViFi-CLIP's model: image_encoder = CLIP.visual, text_encoder = CLIP's text parts, prompts, logit scale."""
    state: dict[str, torch.Tensor] = {}
    for key, value in reference.state_dict().items():
        if key.startswith("visual."):
            state["image_encoder." + key[len("visual.") :]] = value
        elif key.startswith(("transformer.", "positional_embedding", "ln_final.", "text_projection")):
            state["text_encoder." + key] = value
        elif key == "logit_scale":
            state[key] = value
    state["prompt_learner.complete_text_embeddings"] = torch.randn(5, 77, 128)
    return state


def test_vificlip_checkpoint_needs_and_takes_its_base_clip(tmp_path):
    reference, ours = _reference_and_ours()
    save_file(_vificlip_state(reference), str(tmp_path / "vificlip.safetensors"))
    torch.save({"state_dict": reference.state_dict()}, tmp_path / "base.pt")
    assert detect_format(_vificlip_state(reference)) == "vificlip"
    with pytest.raises(PevlError, match="vificlip.safetensors: a ViFi-CLIP checkpoint stores no token embedding"):
        load_clip_weights(ours, tmp_path / "vificlip.safetensors")
    load_clip_weights(ours, tmp_path / "vificlip.safetensors", base=tmp_path / "base.pt")
    _same_as_reference(ours, reference)
    fine_tuned = _vificlip_state(reference)
    fine_tuned["image_encoder.proj"] = fine_tuned["image_encoder.proj"] + 1.0  # the checkpoint wins over the base
    load_clip_state_dict(ours, fine_tuned, base=reference.state_dict())
    assert torch.equal(ours.visual.proj, fine_tuned["image_encoder.proj"])


# ---- the Hub, offline --------------------------------------------------------------------------------------------


def hub_cache(root: Path, repo_id: str, files: dict[str, Path]) -> Path:
    """A Hugging Face cache holding one snapshot of ``repo_id``, as huggingface_hub lays it out."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = root / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, source in files.items():
        (snapshot / name).write_bytes(source.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return root


@pytest.fixture()
def offline_hub(monkeypatch, tmp_path, no_network):
    """Point huggingface_hub at an empty local cache, offline; returns the cache folder to fill."""
    import huggingface_hub.constants as constants

    cache = tmp_path / "hf_cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def test_hf_hub_clip_weights_from_the_local_cache(tmp_path, offline_hub):
    hf, ours = tiny_pair()
    hf.save_pretrained(tmp_path / "clip")
    files = {n: tmp_path / "clip" / n for n in ("model.safetensors", "config.json")}
    hub_cache(offline_hub, "openai/clip-tiny", files)
    load_clip_weights(ours, "hf-hub:openai/clip-tiny")
    assert max(max_diffs(hf, ours, torch.randn(1, 3, 32, 32), TEXTS[:2])) < 1e-4
    with pytest.raises(PevlError, match="hf-hub:openai/not-there: none of model.safetensors"):
        load_clip_weights(ours, "hf-hub:openai/not-there")


def _trained_checkpoint(root: Path) -> Path:
    from model_helpers import tiny_model
    from pevl.engine.checkpoint import save_checkpoint
    from pevl.engine.config import RunConfig

    model = tiny_model(num_classes=3)
    config = RunConfig().to_dict()
    config["data"].update(dataset="diving48", root="/data/Diving48", train_split="train", val_split="test")
    return save_checkpoint(
        root, model_state=model.state_dict(), epoch=3, step=120, config=config,
        metrics={"top1": 0.8125, "top5": 0.96875, "mean_class_acc": 0.75, "loss": 1.5, "note": "x"},
        extra={"classes": ["back dive", "forward dive", "inward dive"], "model_config": model.config.to_dict()},
    )  # fmt: skip


def test_hub_folder_has_weights_config_labels_and_a_card(tmp_path):
    from pevl.hub.hf import write_hub_folder

    checkpoint = _trained_checkpoint(tmp_path / "run")
    folder = write_hub_folder(checkpoint, tmp_path / "hub", "lab/pevl-diving48")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "labels.txt", "model.safetensors"]
    assert (folder / "model.safetensors").read_bytes() == (checkpoint / "model.safetensors").read_bytes()
    assert (folder / "labels.txt").read_text().splitlines() == ["back dive", "forward dive", "inward dive"]
    config = json.loads((folder / "config.json").read_text())
    assert config["classes"] == ["back dive", "forward dive", "inward dive"]
    assert config["metrics"] == {"top1": 0.8125, "top5": 0.96875, "mean_class_acc": 0.75, "loss": 1.5}
    assert config["training_data"]["dataset"] == "diving48" and config["training_data"]["val_split"] == "test"
    card = (folder / "README.md").read_text()
    front = card.split("---")[1]
    assert "library_name: pevl" in front and '- "diving48"' in front and "value: 81.25" in front
    assert "| Top-1 accuracy | 81.25% |" in card and "| Top-5 accuracy | 96.88% |" in card
    assert "- dataset: `diving48`" in card and "pevl predict video.mp4 -k hf-hub:lab/pevl-diving48" in card
    assert "3 action classes" in card
    with pytest.raises(PevlError, match="hub: exists and is not an empty folder"):
        write_hub_folder(checkpoint, tmp_path / "hub", "lab/pevl-diving48")


def test_hf_hub_model_loads_offline_and_predicts_like_the_checkpoint(tmp_path, offline_hub):
    from pevl.engine.builder import load_trained_model
    from pevl.hub.hf import HUB_FILES, write_hub_folder

    checkpoint = _trained_checkpoint(tmp_path / "run")
    folder = write_hub_folder(checkpoint, tmp_path / "hub", "lab/pevl-tiny")
    hub_cache(offline_hub, "lab/pevl-tiny", {n: folder / n for n in HUB_FILES})
    model = create_model("hf-hub:lab/pevl-tiny")
    assert model.classes == ["back dive", "forward dive", "inward dive"] and not model.training
    local = load_trained_model(checkpoint).model
    for (name, ours), (_, theirs) in zip(model.state_dict().items(), local.state_dict().items(), strict=True):
        assert torch.equal(ours, theirs), name
    assert load_trained_model("hf-hub:lab/pevl-tiny@main").classes == model.classes
    with pytest.raises(PevlError, match="used as it is"):
        create_model("hf-hub:lab/pevl-tiny", num_classes=5)
    with pytest.raises(PevlError, match="hf-hub:org/name"):
        create_model("hf-hub:a/b/c")


def test_push_uploads_the_folder(tmp_path, monkeypatch, no_network):
    from pevl.hub.hf import push_hub_folder, write_hub_folder

    calls = []
    monkeypatch.setattr(huggingface_hub, "create_repo", lambda repo, **kw: calls.append(("create", repo, kw)))
    monkeypatch.setattr(huggingface_hub, "upload_folder", lambda **kw: calls.append(("upload", kw)) or "url")
    folder = write_hub_folder(_trained_checkpoint(tmp_path / "run"), tmp_path / "hub", "lab/m")
    assert push_hub_folder(folder, "lab/m", private=True) == "url"
    assert calls[0] == ("create", "lab/m", {"private": True, "exist_ok": True})
    assert calls[1][1]["repo_id"] == "lab/m" and calls[1][1]["folder_path"] == str(folder)
    with pytest.raises(PevlError, match="not a hub folder"):
        push_hub_folder(tmp_path, "lab/m")


def test_push_to_hub_command(tmp_path, capsys):
    checkpoint = _trained_checkpoint(tmp_path / "run")
    out = tmp_path / "hub"
    assert cli_main(["push-to-hub", str(checkpoint), "--repo-id", "lab/m", "--out", str(out),
                     "--metrics", '{"top1": 0.5}', "--dataset", "Diving48"]) == 0  # fmt: skip
    assert json.loads((out / "config.json").read_text())["metrics"] == {"top1": 0.5}
    assert "| Top-1 accuracy | 50.00% |" in (out / "README.md").read_text()
    assert cli_main(["push-to-hub", str(checkpoint), "--repo-id", "lab/m", "--out", str(tmp_path / "o2"),
                     "--metrics", "[1]"]) == 2  # fmt: skip
    assert "--metrics must be a JSON object" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()


@pytest.mark.slow
def test_predict_with_a_hub_model_offline(tmp_path, offline_hub, shared_data, capsys):
    from pevl.hub.hf import HUB_FILES, write_hub_folder

    checkpoint = _trained_checkpoint(tmp_path / "run")
    folder = write_hub_folder(checkpoint, tmp_path / "hub", "lab/pevl-tiny")
    hub_cache(offline_hub, "lab/pevl-tiny", {n: folder / n for n in HUB_FILES})
    video = str(shared_data / "videos" / "k400_tai_chi.mp4")
    assert cli_main(["predict", video, "-k", "hf-hub:lab/pevl-tiny", "--top-k", "3", "--json"]) == 0
    from_hub = json.loads(capsys.readouterr().out)
    assert cli_main(["predict", video, "-k", str(checkpoint), "--top-k", "3", "--json"]) == 0
    local = json.loads(capsys.readouterr().out)
    assert [t["label"] for t in from_hub["top_k"]] == [t["label"] for t in local["top_k"]]
    assert [t["probability"] for t in from_hub["top_k"]] == pytest.approx([t["probability"] for t in local["top_k"]])


def test_a_failed_hub_folder_leaves_nothing(tmp_path, monkeypatch):
    import pevl.hub.hf as hf
    from pevl.engine.checkpoint import load_checkpoint, save_checkpoint

    checkpoint = _trained_checkpoint(tmp_path / "run")
    with monkeypatch.context() as patch:
        patch.setattr(hf, "model_card", lambda *a, **k: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            hf.write_hub_folder(checkpoint, tmp_path / "out" / "hub", "lab/m")
    assert list((tmp_path / "out").iterdir()) == []  # no folder, no temporary left behind
    loaded = load_checkpoint(checkpoint)
    bare = save_checkpoint(tmp_path / "run2", model_state=loaded.model_state, epoch=1, step=1, config={},
                           extra={"model_config": loaded.extra["model_config"]})  # fmt: skip
    with pytest.raises(PevlError, match="names no classes"):
        hf.write_hub_folder(bare, tmp_path / "hub2", "lab/m")
    assert not (tmp_path / "hub2").exists()
