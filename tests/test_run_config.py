"""Run configs: YAML with _base_ inheritance, typed --set overrides, strict keys with suggestions."""

from __future__ import annotations

import dataclasses
import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import pevl.data.datasets
from pevl.engine import config as config_module
from pevl.engine.config import (
    DataSection,
    ModelSection,
    OptimSection,
    RunConfig,
    TrainSection,
    apply_overrides,
    config_changes,
    load_config,
    save_config,
)
from pevl.errors import PevlError
from pevl.utils.typed_config import check_keys


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_no_file_gives_the_documented_defaults():
    cfg = load_config(None)
    assert cfg == RunConfig()
    assert cfg.model.preset == "pevl_tiny"
    assert cfg.data.batch_size == 8 and cfg.model.overrides == {}  # frame counts: the preset decides
    assert cfg.optim.lr == 3e-4 and cfg.optim.betas == (0.9, 0.98)
    assert cfg.train.keep_last == 2 and cfg.train.amp == "auto"


def test_sections_are_frozen():
    cfg = RunConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.optim.lr = 1.0  # type: ignore[misc]


def test_every_field_has_a_comment():
    for section in (ModelSection, DataSection, OptimSection, TrainSection, RunConfig):
        source = inspect.getsource(section)
        for f in dataclasses.fields(section):
            line = next(ln for ln in source.splitlines() if ln.strip().startswith(f"{f.name}:"))
            assert "#" in line, f"{section.__name__}.{f.name} has no comment"


def test_yaml_12_numbers_and_booleans(tmp_path):
    path = write(tmp_path / "run.yaml", "optim:\n  lr: 1e-4\n  min_lr: 5e-7\ntrain:\n  amp: off\n")
    cfg = load_config(path)
    assert cfg.optim.lr == pytest.approx(1e-4) and isinstance(cfg.optim.lr, float)
    assert cfg.optim.min_lr == pytest.approx(5e-7)
    assert cfg.train.amp == "off"  # a string, not YAML 1.1's False


def test_base_files_are_deep_merged_in_order(tmp_path):
    write(tmp_path / "_base_" / "schedule.yaml", "optim:\n  lr: 0.1\n  epochs: 5\n  warmup_epochs: 1\n")
    write(tmp_path / "_base_" / "data.yaml", "data:\n  dataset: gym99\n  batch_size: 16\noptim:\n  epochs: 7\n")
    path = write(
        tmp_path / "exp" / "run.yaml",
        "_base_: [../_base_/schedule.yaml, ../_base_/data.yaml]\noptim:\n  lr: 0.01\ndata:\n  num_workers: 0\n",
    )
    cfg = load_config(path)
    assert cfg.optim.lr == 0.01  # the file itself wins
    assert cfg.optim.epochs == 7  # later base wins over earlier base
    assert cfg.optim.warmup_epochs == 1.0  # untouched keys of a base survive
    assert (cfg.data.dataset, cfg.data.batch_size, cfg.data.num_workers) == ("gym99", 16, 0)


def test_nested_base_chain_and_delete(tmp_path):
    write(tmp_path / "a.yaml", "model:\n  overrides: {num_ucmr_blocks: 2, p2v: false}\n")
    write(tmp_path / "b.yaml", "_base_: a.yaml\nmodel:\n  overrides: {v2p: false}\n")
    merged = load_config(write(tmp_path / "c.yaml", "_base_: b.yaml\n"))
    assert merged.model.overrides == {"num_ucmr_blocks": 2, "p2v": False, "v2p": False}
    replaced = load_config(write(tmp_path / "d.yaml", "_base_: b.yaml\nmodel:\n  overrides: {_delete_: true}\n"))
    assert replaced.model.overrides == {}


def test_overrides_are_yaml_typed(tmp_path):
    cfg = load_config(
        None,
        [
            "optim.lr=1e-4",
            "data.batch_size=4",
            "optim.betas=[0.8, 0.9]",
            "model.pretrained=null",
            "data.root=/data/finegym",
            "train.tensorboard=true",
            "optim.clip_grad_norm=null",
            "model.overrides.num_ucmr_blocks=2",
        ],
    )
    assert cfg.optim.lr == pytest.approx(1e-4)
    assert cfg.data.batch_size == 4
    assert cfg.optim.betas == (0.8, 0.9)
    assert cfg.model.pretrained is None
    assert cfg.data.root == "/data/finegym"
    assert cfg.train.tensorboard is True
    assert cfg.optim.clip_grad_norm is None
    assert cfg.model.overrides == {"num_ucmr_blocks": 2}


def test_overrides_apply_on_top_of_the_file_in_order(tmp_path):
    path = write(tmp_path / "run.yaml", "optim:\n  lr: 0.5\n")
    cfg = load_config(path, ["optim.lr=0.25", "optim.lr=0.125"])
    assert cfg.optim.lr == 0.125


def test_deep_keys_of_mapping_fields(tmp_path):
    cfg = load_config(None, ["data.options.subset=gym99", "data.options.folds.train=[1, 2]"], validate_data=None)
    assert cfg.data.options == {"subset": "gym99", "folds": {"train": [1, 2]}}
    cleared = apply_overrides(cfg, ["data.options={}"], validate_data=None)
    assert cleared.data.options == {}


def test_apply_overrides_returns_a_new_config():
    base = RunConfig()
    changed = apply_overrides(base, ["optim.epochs=3", "train.seed=7"])
    assert (changed.optim.epochs, changed.train.seed) == (3, 7)
    assert base.optim.epochs == 30


def test_unknown_file_key_names_the_file_and_suggests(tmp_path):
    path = write(tmp_path / "run.yaml", "optim:\n  lrr: 1e-4\n")
    with pytest.raises(PevlError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: unknown config key 'optim.lrr' (did you mean 'optim.lr'?)"


def test_unknown_key_in_a_base_file_names_that_base(tmp_path):
    base = write(tmp_path / "base.yaml", "data:\n  batch_szie: 4\n")
    path = write(tmp_path / "run.yaml", "_base_: base.yaml\n")
    with pytest.raises(PevlError, match="batch_szie") as err:
        load_config(path)
    assert str(err.value).startswith(f"{base.resolve()}: ")
    assert "did you mean 'data.batch_size'?" in str(err.value)


def test_unknown_set_key_names_the_override_and_suggests():
    with pytest.raises(PevlError) as err:
        load_config(None, ["optim.lrr=1e-4"])
    assert str(err.value) == "--set optim.lrr=1e-4: unknown config key 'optim.lrr' (did you mean 'optim.lr'?)"


def test_key_in_the_wrong_section_points_to_the_right_one():
    with pytest.raises(PevlError, match=r"unknown config key 'data\.lr' \(did you mean 'optim\.lr'\?\)"):
        load_config(None, ["data.lr=1"])
    with pytest.raises(PevlError, match=r"did you mean 'optim"):
        load_config(None, ["optimm.lr=1"])


def test_bad_values_name_the_file_that_set_them(tmp_path):
    base = write(tmp_path / "base.yaml", "optim:\n  lr: fast\n")
    path = write(tmp_path / "run.yaml", "_base_: base.yaml\ndata:\n  batch_size: 2\n")
    with pytest.raises(PevlError) as err:
        load_config(path)
    assert str(err.value) == f"{base.resolve()}: config key 'optim.lr' must be a number, got 'fast'"
    with pytest.raises(PevlError, match=r"^--set data\.batch_size=0: config key 'data\.batch_size' must be >= 1"):
        load_config(path, ["optim.lr=0.1", "data.batch_size=0"])


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("train.tensorboard=yes", "must be true or false"),
        ("data.batch_size=2.5", "must be an integer"),
        ("optim.betas=[0.9]", "must be a list of 2 numbers"),
        ("train.amp=fp8", "must be one of"),
        ("optim.optimizer=lion", "must be one of"),
        ("optim.warmup_epochs=-1", "must be >= 0"),
        ("optim.lr.x=1", "has no sub-keys"),
        ("optim.lr", "expected key=value"),
        ("optim=3", "must be a mapping"),
    ],
)
def test_bad_overrides_fail_with_one_line(item, message):
    with pytest.raises(PevlError) as err:
        load_config(None, [item])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_yaml_names_file_and_line(tmp_path):
    path = write(tmp_path / "run.yaml", "optim:\n  lr: 0.1\n  betas: [0.9, 0.98\n")
    with pytest.raises(PevlError) as err:
        load_config(path)
    message = str(err.value)
    assert message.startswith(f"{path.resolve()}: invalid YAML at line ")
    assert "\n" not in message


@pytest.mark.parametrize(
    ("text", "problem"),
    [("- a\n- b\n", "must hold a mapping"), ("_base_: nowhere.yaml\n", "_base_ file not found")],
)
def test_malformed_files(tmp_path, text, problem):
    path = write(tmp_path / "run.yaml", text)
    with pytest.raises(PevlError, match=problem):
        load_config(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(PevlError, match=r"nope\.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(PevlError, match="is a directory"):
        load_config(tmp_path)


def test_circular_inheritance_is_reported(tmp_path):
    write(tmp_path / "a.yaml", "_base_: b.yaml\n")
    write(tmp_path / "b.yaml", "_base_: a.yaml\n")
    with pytest.raises(PevlError, match="circular _base_"):
        load_config(tmp_path / "a.yaml")


def test_saved_config_loads_back_identically(tmp_path):
    cfg = load_config(
        None,
        ["optim.lr=1.5e-5", "train.amp=off", "data.options.note='1e-4'", "data.options.flag='yes'", "data.root=/x y"],
        validate_data=None,
    )
    path = save_config(cfg, tmp_path / "work" / "config.yaml")
    assert load_config(path, validate_data=None) == cfg
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.data.options == {"note": "1e-4", "flag": "yes"}


def test_model_overrides_are_checked_against_the_model_config():
    with pytest.raises(PevlError) as err:
        load_config(None, ["model.overrides.num_ucmr=2"])
    assert "unknown config key 'model.overrides.num_ucmr' (did you mean 'model.overrides.num_ucmr_blocks'?)" in str(
        err.value
    )


def test_custom_model_validator_plugs_in(tmp_path):
    @dataclass(frozen=True)
    class Inner:
        depth: int = 1

    @dataclass(frozen=True)
    class Toy:
        width: int = 4
        inner: Inner = field(default_factory=Inner)

    def validate(section: ModelSection) -> None:
        check_keys(section.overrides, Toy, "model.overrides.")

    path = write(tmp_path / "run.yaml", "model:\n  overrides:\n    inner: {depht: 2}\n")
    with pytest.raises(PevlError) as err:
        load_config(path, validate_model=validate)
    assert str(err.value) == (
        f"{path.resolve()}: unknown config key 'model.overrides.inner.depht' "
        "(did you mean 'model.overrides.inner.depth'?)"
    )
    cfg = load_config(None, ["model.overrides.width=8"], validate_model=validate)
    assert cfg.model.overrides == {"width": 8}


def test_dataset_options_are_checked_by_the_data_layer(monkeypatch, tmp_path):
    def dataset_options(name: str) -> list[str]:
        return {"gym99": ["subset", "min_frames"]}.get(name, [])

    monkeypatch.setattr(pevl.data.datasets, "dataset_options", dataset_options, raising=False)
    ok = load_config(None, ["data.dataset=gym99", "data.options.subset=gym288"])
    assert ok.data.options == {"subset": "gym288"}
    path = write(tmp_path / "run.yaml", "data:\n  dataset: gym99\n  options: {subsett: gym99}\n")
    with pytest.raises(PevlError) as err:
        load_config(path)
    assert str(err.value) == (
        f"{path.resolve()}: unknown config key 'data.options.subsett' (did you mean 'data.options.subset'?)"
    )


def test_check_keys_suggests_the_closest_field():
    with pytest.raises(
        PevlError, match=r"unknown config key 'optim\.weight_decya' \(did you mean 'optim\.weight_decay'"
    ):
        check_keys({"weight_decya": 0.1}, OptimSection, "optim.")
    check_keys({"weight_decay": 0.1, "lr": 1.0}, OptimSection, "optim.")  # valid keys pass


def test_sections_validate_direct_construction():
    assert OptimSection(lr=1).lr == 1.0 and isinstance(OptimSection(lr=1).lr, float)
    with pytest.raises(PevlError, match="optim.lr"):
        OptimSection(lr=0)
    assert config_module.SECTIONS["train"] is TrainSection


def test_config_changes_lists_the_dotted_keys_that_differ():
    old = {"model": {"overrides": {"pose_bones": True}}, "optim": {"lr": 1e-3, "betas": (0.9, 1)}}
    new = {"model": {"overrides": {}}, "optim": {"lr": 2e-3, "betas": [0.9, 1]}}
    assert config_changes(old, new) == ["model.overrides.pose_bones", "optim.lr"]
    assert config_changes(new, new) == []


# ---- typed model overrides: one parser for train, eval and profile ------------------------------------------------


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("model.overrides.p2v=off", "config key 'model.overrides.p2v' must be true or false, got 'off' (write false)"),
        ("model.overrides.freeze_clip='no'", "'model.overrides.freeze_clip' must be true or false, got 'no'"),
        ("model.overrides.use_pose=maybe", "config key 'model.overrides.use_pose' must be true or false, got 'maybe'"),
        ("model.overrides.num_ucmr_blocks=2.0", "config key 'model.overrides.num_ucmr_blocks' must be an integer"),
        ("model.overrides.num_ucmr_blocks=two", "must be an integer, got 'two'"),
        ("model.overrides.action_streams=5", "config key 'model.overrides.action_streams' must be a list, got 5"),
        ("model.overrides.clip={vision: {layers: deep}}", "config key 'model.overrides.clip.vision.layers' must be"),
        ("model.overrides.num_pose_frames=30", "model.overrides: num_pose_frames (30) must be a multiple"),
    ],
)
def test_model_overrides_are_typed_like_the_run_sections(item, message):
    with pytest.raises(PevlError) as err:
        load_config(None, [item])
    assert str(err.value).startswith(f"--set {item}: ")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_model_overrides_in_a_file_name_the_file(tmp_path):
    path = write(tmp_path / "run.yaml", 'model:\n  overrides:\n    freeze_clip: "no"\n')
    with pytest.raises(PevlError) as err:
        load_config(path)
    assert str(err.value) == (
        f"{path}: config key 'model.overrides.freeze_clip' must be true or false, got 'no' (write false)"
    )


def test_model_overrides_are_coerced_to_the_field_types():
    from pevl.engine.builder import model_config

    cfg = load_config(
        None,
        [
            "model.overrides.p2v=false",
            "model.overrides.logit_scale_init='1e-4'",
            "model.overrides.adapter_ratio=1",
            "model.overrides.action_streams=fused",
            "model.overrides.num_pose_frames=8",
            "model.overrides.num_video_frames=2",
        ],
    )
    overrides = cfg.model.overrides
    assert overrides["p2v"] is False
    assert overrides["logit_scale_init"] == 1e-4 and isinstance(overrides["logit_scale_init"], float)
    assert overrides["adapter_ratio"] == 1.0 and isinstance(overrides["adapter_ratio"], float)
    model_cfg = model_config(cfg)
    assert model_cfg.p2v is False and model_cfg.action_streams == ("fused",)
    assert (model_cfg.num_video_frames, model_cfg.num_pose_frames) == (2, 8)


def test_frame_counts_and_checkpointing_live_in_the_model_section_only():
    for section, key in (("data", "num_video_frames"), ("data", "num_pose_frames"), ("train", "grad_checkpointing")):
        with pytest.raises(PevlError) as err:
            load_config(None, [f"{section}.{key}=1"])
        assert f"did you mean 'model.overrides.{key}'?" in str(err.value)
    assert "image_size" not in {f.name for f in dataclasses.fields(DataSection)}
    cfg = load_config(None, ["model.overrides.grad_checkpointing=true"])
    assert cfg.model.overrides == {"grad_checkpointing": True}


def test_profile_parses_model_fields_with_the_same_parser():
    from pevl.engine.config import parse_model_overrides

    assert parse_model_overrides(["num_ucmr_blocks=2", "model.overrides.p2v=false", "logit_scale_init=1e-4"]) == {
        "num_ucmr_blocks": 2,
        "p2v": False,
        "logit_scale_init": 1e-4,
    }
    with pytest.raises(PevlError) as err:
        parse_model_overrides(["num_ucmr_blocks=2.0"])
    assert str(err.value) == "--set num_ucmr_blocks=2.0: config key 'num_ucmr_blocks' must be an integer, got 2.0"
    with pytest.raises(PevlError, match=r"unknown config key 'num_ucmr' \(did you mean 'num_ucmr_blocks'\?\)"):
        parse_model_overrides(["num_ucmr=1"])


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("p2v=off", "--set p2v=off: config key 'p2v' must be true or false, got 'off' (write false)"),
        ("num_ucmr_blocks=two", "--set num_ucmr_blocks=two: config key 'num_ucmr_blocks' must be an integer"),
        ("use_pose=maybe", "--set use_pose=maybe: config key 'use_pose' must be true or false, got 'maybe'"),
        ("num_ucmr=2", "--set num_ucmr=2: unknown config key 'num_ucmr' (did you mean 'num_ucmr_blocks'?)"),
    ],
)
def test_pevl_profile_rejects_bad_model_fields_in_one_line(item, message, capsys):
    from pevl.cli import main

    assert main(["profile", "pevl_tiny", "--set", item]) == 2
    err = capsys.readouterr().err
    assert err == f"pevl: error: {message}\n" or (err.startswith(f"pevl: error: {message}") and err.count("\n") == 1)


def test_pevl_profile_takes_a_float_in_exponent_form(capsys):
    from pevl.cli import main

    assert main(["profile", "pevl_tiny", "--json", "--set", "logit_scale_init=1e-4", "num_ucmr_blocks=0"]) == 0
    assert isinstance(json.loads(capsys.readouterr().out), dict)


@pytest.mark.parametrize("command", [["train"], ["eval", "-k", "ckpt"], ["profile", "pevl_tiny"]])
def test_cfg_options_is_an_alias_of_set(command):
    from pevl.cli import build_parser

    args = build_parser().parse_args([*command, "--cfg-options", "a=1", "b=2", "--set", "c=3", "--cfg-options", "d=4"])
    assert args.overrides == ["a=1", "b=2", "c=3", "d=4"]


def test_an_empty_config_file_warns_in_one_line(tmp_path, capsys):
    path = write(tmp_path / "run.yaml", "# nothing set yet\n")
    assert load_config(path) == RunConfig()
    err = capsys.readouterr().err
    assert err == f"warning: {path.resolve()}: the config file is empty; every setting takes its default\n"
    load_config(write(tmp_path / "full.yaml", "optim:\n  lr: 0.1\n"))
    assert capsys.readouterr().err == ""


def test_a_checkpoint_config_of_an_older_release_is_upgraded():
    from pevl.engine.config import RunConfig

    old = RunConfig().to_dict()
    old["data"].update({"num_video_frames": 4, "num_pose_frames": 16, "image_size": 64})
    old["train"]["grad_checkpointing"] = True
    cfg = RunConfig.from_saved(old)
    assert cfg.model.overrides["num_video_frames"] == 4 and cfg.model.overrides["num_pose_frames"] == 16
    assert cfg.model.overrides["grad_checkpointing"] is True
    with pytest.raises(PevlError, match="model.overrides.num_video_frames"):
        RunConfig.from_dict(old)  # a user's own file with the old keys is told where they went


def test_a_dataset_option_that_belongs_elsewhere_is_named(tmp_path):
    from pevl.engine.builder import build_dataset
    from pevl.models.presets import get_config

    cfg = load_config(None, ["data.dataset=pyskl", f"data.options.pose_file={tmp_path / 'x.pkl'}"])
    with pytest.raises(PevlError, match=r"data.options.pose_file is not a dataset option: it is set by data.pose_file"):
        build_dataset(cfg, get_config("pt_tiny"), "train", train=True)
