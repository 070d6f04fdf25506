"""Config: defaults < YAML preset < key=value overrides; bad keys and values raise RecvosError."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from recvos.errors import RecvosError
from recvos.training.config import Config, config_to_dict, load_config, parse_override, save_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_defaults_preset_and_overrides(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text(
        "train:\n  steps: 50\n  batch_size: 2\ndata:\n  size: [64, 96]\nmodel:\n  options: {backbone: resnet18}\n"
    )
    cfg = load_config(
        preset,
        [
            "train.steps=7",
            "optim.lr=3e-4",
            "data.mix.synthetic=1",
            "model.options.max_objects=4",
            "curriculum.own_masks_from_step=null",
            "optim.backbone_lr=1",
        ],
    )
    assert cfg.train.steps == 7  # override beats preset
    assert cfg.train.batch_size == 2  # preset beats default
    assert cfg.train.accumulate == Config().train.accumulate  # default kept
    assert cfg.data.size == [64, 96]
    assert cfg.optim.lr == pytest.approx(3e-4) and isinstance(cfg.optim.lr, float)
    assert cfg.optim.backbone_lr == 1.0 and isinstance(cfg.optim.backbone_lr, float)  # int accepted for float
    assert cfg.data.mix.synthetic == 1.0
    assert cfg.model.options == {"backbone": "resnet18", "max_objects": 4}
    assert cfg.curriculum.own_masks_from_step is None


def test_unknown_key_lists_close_matches(tmp_path):
    with pytest.raises(RecvosError, match=r"train\.steps") as e:
        load_config(None, ["train.step=3"])
    assert "unknown config key 'train.step'" in str(e.value)
    with pytest.raises(RecvosError, match=r"optim\.lr"):
        load_config(None, ["optim.lrr=1"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  num_frame: 4\n")
    with pytest.raises(RecvosError, match=r"bad\.yaml.*data\.num_frames"):
        load_config(bad)


@pytest.mark.parametrize(
    "override, match",
    [
        ("train.steps=abc", "must be int"),
        ("train.steps=1.5", "must be int"),
        ("model.options.mode=semi", "one-shot, zero-shot or interactive"),
        ("val.max_size=4", ">= 8"),
        ("data.size=[1, 2, 3]", "H, W"),
        ("train.steps", "key=value"),
        ("data=3", "section"),
        ("data.num_frames=0", ">= 1"),
        ("data.mix.real=0", "positive sum"),
        ("train.amp=fp8", "none, bf16, fp16"),
    ],
)
def test_bad_values(override, match):
    with pytest.raises(RecvosError, match=match):
        load_config(None, [override])


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(RecvosError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "x.yaml").write_text("train: [1, 2\n")
    with pytest.raises(RecvosError, match="not valid YAML"):
        load_config(tmp_path / "x.yaml")


def test_parse_override_yaml_scalars():
    assert parse_override("a.b=1e-3") == ("a.b", 0.001)
    assert parse_override("a=true") == ("a", True)
    assert parse_override("a=[240, 427]") == ("a", [240, 427])
    assert parse_override("a=x=y") == ("a", "x=y")


def test_save_roundtrip(tmp_path):
    cfg = load_config(None, ["train.steps=11", "model.options.backbone=resnet18"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert config_to_dict(again) == config_to_dict(cfg)


@pytest.mark.parametrize("preset", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_presets_load(preset):
    cfg = load_config(CONFIGS / preset)
    assert cfg.train.steps >= 1
    raw = yaml.safe_load((CONFIGS / preset).read_text())
    assert raw["model"]["name"] == cfg.model.name


def test_required_presets_exist():
    names = {p.name for p in CONFIGS.glob("*.yaml")}
    assert {
        "rvos_oneshot_davis2016.yaml",
        "rvos_zeroshot_davis2016.yaml",
        "s2s_davis2016.yaml",
        "rvos_youtubevos.yaml",
        "smoke_synthetic.yaml",
    } <= names


def test_sequence_lists_select_and_exclude(tmp_path):
    """data.sequences / data.exclude carve a validation split out of a training split."""
    from recvos.data.datasets import open_dataset
    from recvos.data.synthetic import write_synthetic_dataset
    from recvos.errors import RecvosError
    from recvos.training.data import open_videos

    root = write_synthetic_dataset(tmp_path / "ds", num_videos=3, num_frames=3, size=(32, 48))
    names = list(open_dataset("folder", root).names)
    kept = open_videos("folder", str(root), None, "data", [], [names[0]])
    assert [v.name for v in kept] == names[1:]
    only = open_videos("folder", str(root), None, "val", [names[2]], [])
    assert [v.name for v in only] == [names[2]]
    with pytest.raises(RecvosError, match="not in"):
        open_videos("folder", str(root), None, "data", ["nope"], [])
    with pytest.raises(RecvosError, match="no sequences left"):
        open_videos("folder", str(root), None, "data", [], names)
    cfg = load_config(None, ["data.exclude=[a, b]", "val.sequences=[c]"])
    assert cfg.data.exclude == ["a", "b"] and cfg.val.sequences == ["c"]


def test_older_run_configs_are_migrated():
    """A config.yaml saved before train.task / val.size moved still resumes."""
    from recvos.training.config import config_from_dict

    cfg = config_from_dict(
        {
            "train": {"task": "zero-shot", "steps": 3},
            "val": {"size": [240, 427]},
            "model": {"name": "rvos-st"},
        }
    )
    assert cfg.model.options["mode"] == "zero-shot" and cfg.model.zero_shot
    assert cfg.val.max_size == 240 and cfg.train.steps == 3
    kept = config_from_dict({"train": {"task": "one-shot"}, "model": {"options": {"mode": "one-shot"}}})
    assert kept.model.options == {"mode": "one-shot"} and not kept.model.zero_shot


def test_cli_waits_passively_unless_told_and_checks_threads(monkeypatch, capsys):
    """recvos sets OMP_WAIT_POLICY=PASSIVE before torch loads (spinning threads collapse on a shared CPU),
    keeps a user's own value, and refuses --threads below 1 in one line."""
    import os

    from recvos.cli.main import main

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert main(["train"]) == 2  # no config: a one-line error, after the environment is set
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert main(["train", "--threads", "0", "--config", "configs/smoke_synthetic.yaml"]) == 2
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    assert "--threads 0" in capsys.readouterr().err
