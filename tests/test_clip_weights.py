"""Real CLIP weights load into our CLIP: every key and shape checked, outputs equal to OpenAI's reference model."""

from __future__ import annotations

import dataclasses
import os
import pickle
import random
import warnings
import zipfile

import pytest
import torch
from safetensors.torch import save_file

from pevl.errors import PevlError
from pevl.hub.weights import (
    check_state_dict,
    convert_to_pevl,
    detect_format,
    infer_clip_config,
    load_clip_weights,
    read_checkpoint,
    read_torchscript_weights,
)
from pevl.models.clip import CLIP, CLIP_ARCHITECTURES, CLIPConfig, TextConfig, VisionConfig, resize_pos_embed
from pevl.models.tokenizer import tokenize
from reference_clip import (
    add_openai_release_buffers_,
    build_reference_clip,
    randomize_,
    use_plain_gelu_,
)

TEXTS = [
    "a video of action abseiling",
    "(VT) round-off, flic-flac on, stretched salto backward with 2 turn off",
    "Back+15som+05Twis+FREE",
]


def tiny_config(quick_gelu: bool = True, image_size: int = 32) -> CLIPConfig:
    """Our CLIP matching ``build_reference_clip()``: widths 128 -> 128 // 64 = 2 heads, as OpenAI builds them."""
    return CLIPConfig(32, VisionConfig(image_size, 8, 128, 2, 2), TextConfig(77, 49408, 128, 2, 2), quick_gelu)


@pytest.fixture(scope="module")
def inputs():
    gen = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, 32, 32, generator=gen), tokenize(TEXTS)


@pytest.fixture()
def reference():
    return randomize_(build_reference_clip()).eval()


def assert_same_embeddings(ours: CLIP, reference: torch.nn.Module, inputs) -> None:
    images, tokens = inputs
    with torch.no_grad():
        assert torch.allclose(ours.encode_image(images), reference.encode_image(images), atol=1e-5)
        assert torch.allclose(ours.encode_text(tokens), reference.encode_text(tokens), atol=1e-5)


def save_torchscript(model: torch.nn.Module, inputs, path, half: bool = False):
    """An archive like OpenAI's release files: traced, with their integer buffers (and fp16 if asked)."""
    add_openai_release_buffers_(model)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation notices about the reference code
        traced = torch.jit.trace(model, inputs)
        if half:
            traced = traced.half()
        torch.jit.save(traced, str(path))
    return path


# ---- equality with the reference ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_our_clip_equals_reference_loaded_from_an_openai_torchscript_archive(tmp_path, reference, inputs):
    path = save_torchscript(reference, inputs, tmp_path / "ViT-T-8.pt")
    assert detect_format(read_checkpoint(path)) == "openai"
    ours = CLIP(tiny_config()).eval()
    found = load_clip_weights(ours, path)
    assert found == ours.cfg
    assert_same_embeddings(ours, reference, inputs)


def test_torchscript_reader_gives_the_state_dict_clip_load_would_use(tmp_path, reference, inputs):
    path = save_torchscript(reference, inputs, tmp_path / "half.pt", half=True)
    ours = read_torchscript_weights(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        trusted = torch.jit.load(str(path)).state_dict()  # our own archive: safe to load the usual way here
    assert ours.keys() == trusted.keys()
    for key, value in trusted.items():
        assert ours[key].dtype == value.dtype and torch.equal(ours[key], value), key
    assert ours["visual.conv1.weight"].dtype == torch.float16
    model = CLIP(tiny_config())
    load_clip_weights(model, path)
    assert model.visual.patch_embed.weight.dtype == torch.float32
    assert torch.equal(model.visual.patch_embed.weight, trusted["visual.conv1.weight"].float())


def test_torchscript_archive_code_never_runs(tmp_path, reference, inputs, monkeypatch):
    original = save_torchscript(reference, inputs, tmp_path / "original.pt")
    tampered = tmp_path / "tampered.pt"
    with zipfile.ZipFile(original) as src, zipfile.ZipFile(tampered, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info, b"raise RuntimeError('archive code ran')\n" if "/code/" in info.filename else data)
    with pytest.raises(RuntimeError), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.load(str(tampered))  # the JIT path compiles the archive's code ...

    def forbidden(*args, **kwargs):
        raise AssertionError("a code-executing loader was called")

    for owner, name in [
        (torch.jit, "load"),
        (torch, "load"),
        (torch._C, "import_ir_module"),
        (torch._C, "import_ir_module_from_buffer"),
    ]:
        monkeypatch.setattr(owner, name, forbidden)
    ours = CLIP(tiny_config()).eval()
    load_clip_weights(ours, tampered)  # ... ours never touches it
    assert_same_embeddings(ours, reference, inputs)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_archive_asking_for_other_globals_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("evil/data.pkl", pickle.dumps({"weight": _Payload(marker)}, protocol=2))
        zf.writestr("evil/constants.pkl", pickle.dumps((), protocol=2))
        zf.writestr("evil/code/__torch__.py", "")
        zf.writestr("evil/version", "3\n")
    with pytest.raises(PevlError) as err:
        read_checkpoint(path)
    assert str(path) in str(err.value) and "system" in str(err.value)
    assert not marker.exists()


def test_state_dict_pickle_with_code_is_refused(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil_state.pt"
    torch.save({"weight": torch.zeros(2), "hook": _Payload(marker)}, path)
    with pytest.raises(PevlError, match="not loaded for safety"):
        read_checkpoint(path)
    assert not marker.exists()


def test_open_clip_state_dicts_bin_and_safetensors_with_plain_gelu(tmp_path, inputs):
    reference = use_plain_gelu_(randomize_(build_reference_clip())).eval()
    state = reference.state_dict()
    bin_path = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(state, bin_path)
    st_path = tmp_path / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, st_path)
    for path in (bin_path, st_path):
        raw = read_checkpoint(path)
        assert detect_format(raw) == "open_clip"
        cfg = infer_clip_config(raw)
        assert cfg == tiny_config(quick_gelu=False)  # LAION's open_clip models use plain GELU
        ours = CLIP(cfg).eval()
        load_clip_weights(ours, path)
        assert_same_embeddings(ours, reference, inputs)
    wrong_activation = CLIP(tiny_config(quick_gelu=True)).eval()
    load_clip_weights(wrong_activation, bin_path)
    with torch.no_grad():
        assert not torch.allclose(wrong_activation.encode_text(inputs[1]), reference.encode_text(inputs[1]), atol=1e-3)


def test_wrapped_data_parallel_state_dict_with_quick_gelu(tmp_path, reference, inputs):
    path = tmp_path / "finetuned.pth"
    state = {f"module.{k}": v for k, v in reference.state_dict().items()}
    torch.save({"epoch": 3, "state_dict": state}, path)
    assert infer_clip_config(read_checkpoint(path), quick_gelu=True) == tiny_config()
    ours = CLIP(tiny_config()).eval()
    load_clip_weights(ours, path)
    assert_same_embeddings(ours, reference, inputs)


@pytest.mark.parametrize("arch", ["ViT-B/32", "ViT-B/16", "ViT-L/14", "ViT-L/14@336px"])
def test_full_size_architectures_agree_key_by_key_on_the_meta_device(arch):
    cfg = CLIP_ARCHITECTURES[arch]
    with torch.device("meta"):
        reference = build_reference_clip(
            cfg.embed_dim,
            cfg.vision.image_size,
            cfg.vision.layers,
            cfg.vision.width,
            cfg.vision.patch_size,
            cfg.text.context_length,
            cfg.text.vocab_size,
            cfg.text.width,
            cfg.text.heads,
            cfg.text.layers,
        )
        add_openai_release_buffers_(reference)
        ours = CLIP(cfg)
    state = reference.state_dict()
    assert detect_format(state) == "openai"
    converted = convert_to_pevl(state)
    check_state_dict(ours.state_dict(), converted)
    assert len(converted) == len(ours.state_dict()) == len(state) - 3  # only the three integers are dropped
    assert infer_clip_config(state) == cfg


# ---- errors ------------------------------------------------------------------------------------------------------


def test_missing_key_error_names_the_key_and_the_file(tmp_path, reference):
    state = reference.state_dict()
    del state["text_projection"]
    path = tmp_path / "no_projection.pt"
    torch.save(state, path)
    with pytest.raises(PevlError) as err:
        load_clip_weights(CLIP(tiny_config()), path)
    message = str(err.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert "missing key 'text.proj'" in message and "'text_projection'" in message and "[128, 32]" in message


def test_misshaped_key_error_names_the_key_and_both_shapes(tmp_path, reference):
    state = reference.state_dict()
    state["visual.transformer.resblocks.1.attn.in_proj_weight"] = torch.zeros(384, 64)
    path = tmp_path / "misshaped.pt"
    torch.save(state, path)
    with pytest.raises(PevlError) as err:
        load_clip_weights(CLIP(tiny_config()), path)
    message = str(err.value)
    assert str(path) in message
    assert (
        "'visual.blocks.1.attn.qkv.weight'" in message
        and "visual.transformer.resblocks.1.attn.in_proj_weight" in message
    )
    assert "[384, 64] in the checkpoint but [384, 128] in the model" in message


def test_unexpected_key_error_names_the_key(tmp_path, reference):
    state = reference.state_dict()
    state["visual.attn_pool.query"] = torch.zeros(4, 128)
    path = tmp_path / "extra.pt"
    torch.save(state, path)
    with pytest.raises(PevlError, match=r"unexpected key 'visual.attn_pool.query' of shape \[4, 128\]"):
        load_clip_weights(CLIP(tiny_config()), path)


def test_a_failed_load_leaves_the_model_untouched(tmp_path, reference):
    state = reference.state_dict()
    state["logit_scale"] = torch.zeros(2)
    path = tmp_path / "bad_scale.pt"
    torch.save(state, path)
    model = CLIP(tiny_config())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(PevlError, match="logit_scale"):
        load_clip_weights(model, path)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "no such file"),
        (b"", "empty file"),
        (b"\x00garbage that is not a checkpoint" * 10, "not a readable"),
        ("truncated-zip", "not a readable"),
        ([1, 2, 3], "holds a list"),
        ({"epoch": 3}, "holds no tensors"),
    ],
)
def test_unreadable_files_give_one_line_errors_naming_the_file(tmp_path, reference, content, problem):
    path = tmp_path / "weights.pt"
    if content == "truncated-zip":
        torch.save(reference.state_dict(), path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(PevlError) as err:
        read_checkpoint(path)
    assert str(path) in str(err.value) and problem in str(err.value) and "\n" not in str(err.value)


def test_unsupported_layouts_are_named():
    with pytest.raises(PevlError, match="ResNet"):
        detect_format({"visual.layer1.0.conv1.weight": torch.zeros(1), "visual.attnpool.positional_embedding": 0})
    assert detect_format({"vision_model.embeddings.patch_embedding.weight": torch.zeros(1)}) == "transformers"
    with pytest.raises(PevlError, match="unrecognised"):
        detect_format({"encoder.layer.0.weight": torch.zeros(1)})


# ---- architecture mismatches, devices, other layouts -------------------------------------------------------------


def test_strict_arch_false_resizes_the_position_embedding(tmp_path, reference):
    path = tmp_path / "32px.pt"
    torch.save(reference.state_dict(), path)
    cfg = tiny_config(image_size=64)
    bigger = CLIP(dataclasses.replace(cfg, text=dataclasses.replace(cfg.text, context_length=16)))
    with pytest.raises(PevlError, match=r"'visual.pos_embed'.*\[17, 128\] in the checkpoint but \[65, 128\]"):
        load_clip_weights(bigger, path)
    found = load_clip_weights(bigger, path, strict_arch=False)
    assert found.vision.image_size == 32 and found.text.context_length == 77  # the checkpoint's own sizes
    expected = resize_pos_embed(reference.visual.positional_embedding.detach(), 8)
    assert torch.allclose(bigger.visual.pos_embed, expected)
    assert torch.equal(bigger.text.pos_embed, reference.positional_embedding[:16])
    assert torch.equal(bigger.visual.patch_embed.weight, reference.visual.conv1.weight)


def test_openai_weights_need_quick_gelu_unless_not_strict(tmp_path, reference, inputs):
    path = save_torchscript(reference, inputs, tmp_path / "openai.pt")
    gelu_model = CLIP(tiny_config(quick_gelu=False))
    with pytest.raises(PevlError, match="QuickGELU"):
        load_clip_weights(gelu_model, path)
    load_clip_weights(gelu_model, path, strict_arch=False)
    assert torch.equal(gelu_model.text.proj, reference.text_projection)


def test_a_model_built_on_the_meta_device_gets_real_weights(tmp_path, reference, inputs):
    path = save_torchscript(reference, inputs, tmp_path / "openai.pt", half=True)
    with torch.device("meta"):
        ours = CLIP(tiny_config())
    ours.requires_grad_(False)  # a frozen backbone stays frozen
    load_clip_weights(ours, path)
    params = list(ours.parameters())
    assert not any(p.is_meta for p in params) and not any(p.requires_grad for p in params)
    assert {p.dtype for p in params} == {torch.float32}
    assert all(isinstance(p, torch.nn.Parameter) for p in params)
    reference.half().float()  # the archive holds fp16 values: compare with the same rounding
    assert_same_embeddings(ours.eval(), reference, inputs)


def timm_layout(reference: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The image tower as timm's ``vit_*_clip_*`` models name it (timm's documented layout, written out)."""
    v = reference.visual
    state = {
        "cls_token": v.class_embedding.reshape(1, 1, -1),
        "pos_embed": v.positional_embedding.unsqueeze(0),
        "patch_embed.proj.weight": v.conv1.weight,
        "norm_pre.weight": v.ln_pre.weight,
        "norm_pre.bias": v.ln_pre.bias,
        "norm.weight": v.ln_post.weight,
        "norm.bias": v.ln_post.bias,
        "head.weight": v.proj.t(),
        "head.bias": torch.zeros(v.proj.shape[1]),
    }
    for i, block in enumerate(v.transformer.resblocks):
        parts = {
            "norm1": block.ln_1,
            "norm2": block.ln_2,
            "attn.proj": block.attn.out_proj,
            "mlp.fc1": block.mlp.c_fc,
            "mlp.fc2": block.mlp.c_proj,
        }
        for name, module in parts.items():
            state[f"blocks.{i}.{name}.weight"] = module.weight
            state[f"blocks.{i}.{name}.bias"] = module.bias
        state[f"blocks.{i}.attn.qkv.weight"] = block.attn.in_proj_weight
        state[f"blocks.{i}.attn.qkv.bias"] = block.attn.in_proj_bias
    return {k: v.detach().clone().contiguous() for k, v in state.items()}


def test_timm_layout_loads_the_image_tower_only(tmp_path, reference, inputs):
    path = tmp_path / "model.safetensors"
    state = timm_layout(reference)
    save_file(state, path)
    assert detect_format(read_checkpoint(path)) == "timm"
    ours = CLIP(tiny_config()).eval()
    text_before = ours.text.proj.clone()
    with pytest.raises(PevlError, match="vision_only=True"):
        load_clip_weights(ours, path)
    load_clip_weights(ours, path, vision_only=True)
    with torch.no_grad():
        assert torch.allclose(ours.encode_image(inputs[0]), reference.encode_image(inputs[0]), atol=1e-5)
    assert torch.equal(ours.text.proj, text_before)
    state["head.bias"] = torch.ones_like(state["head.bias"])
    save_file(state, path)
    with pytest.raises(PevlError, match="head.bias"):
        load_clip_weights(ours, path, vision_only=True)


def test_our_own_layout_and_a_pevl_checkpoint_holding_our_clip(tmp_path, reference, inputs):
    source = CLIP(tiny_config()).eval()
    torch.save(reference.state_dict(), tmp_path / "ref.pt")
    load_clip_weights(source, tmp_path / "ref.pt")
    own = tmp_path / "own.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, own)
    nested = tmp_path / "pevl_model.safetensors"
    bigger = {f"clip.{k}": v.contiguous() for k, v in source.state_dict().items()}
    bigger["video_encoder.temporal_embed"] = torch.zeros(8, 128)
    save_file(bigger, nested)
    for path in (own, nested):
        assert detect_format(read_checkpoint(path)) == "pevl"
        ours = CLIP(tiny_config()).eval()
        load_clip_weights(ours, path)
        assert_same_embeddings(ours, reference, inputs)


def test_truncated_tensor_data_in_an_archive_is_reported(tmp_path, reference, inputs):
    original = save_torchscript(reference, inputs, tmp_path / "original.pt")
    broken = tmp_path / "broken.pt"
    with zipfile.ZipFile(original) as src, zipfile.ZipFile(broken, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info, data[:3] if info.filename.endswith("/data/0") else data)
    with pytest.raises(PevlError, match="truncated") as err:
        read_checkpoint(broken)
    assert str(broken) in str(err.value)


@pytest.mark.slow
def test_corrupted_archive_pickles_fail_cleanly(tmp_path, reference, inputs):
    original = save_torchscript(reference, inputs, tmp_path / "original.pt")
    with zipfile.ZipFile(original) as src:
        entries = [(info, src.read(info)) for info in src.infolist()]
    rng = random.Random(0)
    for trial in range(30):
        broken = tmp_path / f"broken{trial}.pt"
        with zipfile.ZipFile(broken, "w") as dst:
            for info, data in entries:
                if info.filename.endswith("/data.pkl"):
                    data = bytearray(data)
                    for _ in range(3):
                        data[rng.randrange(len(data))] = rng.randrange(256)
                    data = bytes(data)
                dst.writestr(info, data)
        try:
            read_checkpoint(broken)  # a flip inside a name or a number can still read
        except PevlError as err:
            assert str(broken) in str(err) and "\n" not in str(err)
