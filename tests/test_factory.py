"""The factory: names and options, every registry entry at the DAVIS internal size, checkpoints, the CLI."""

from __future__ import annotations

import pytest
import torch

import recvos
from recvos.cli.main import main
from recvos.errors import RecvosError
from recvos.models.factory import build_model, list_models, model_names
from recvos.models.loading import (
    CHECKPOINT_FORMAT,
    load_checkpoint,
    model_from_checkpoint,
    model_to_checkpoint,
    save_model,
)

H, W = 61, 107


def tiny(name: str, **kw):
    torch.manual_seed(0)
    kw = {"backbone": "resnet18", "hidden_size": 16, **kw}
    if name == "s2s":
        kw["decoder_dims"] = (8, 8, 4, 4, 4)
    return build_model(name, **kw)


def test_names_and_errors():
    assert model_names() == ["rvos-st", "rvos-s", "rvos-t", "s2s", "prompt-head"]
    with pytest.raises(
        RecvosError, match="unknown model 'rvos'; valid names: rvos-st, rvos-s, rvos-t, s2s, prompt-head"
    ):
        build_model("rvos")
    with pytest.raises(
        RecvosError, match="unknown option 'hiden_size' for model rvos-st; valid options: .*hidden_size"
    ):
        build_model("rvos-st", hiden_size=3)
    with pytest.raises(RecvosError, match="has variant='T'"):
        build_model("rvos-t", variant="ST")
    with pytest.raises(RecvosError, match="unknown backbone"):
        build_model("s2s", backbone="alexnet")
    assert recvos.build_model is build_model


@pytest.mark.slow
@pytest.mark.parametrize("name", ["rvos-st", "rvos-s", "rvos-t", "s2s"])
def test_every_entry_with_defaults_at_240x427(name):
    model = build_model(name).eval()
    assert model.name == name
    frame = torch.rand(1, 3, 240, 427)
    masks = torch.zeros(1, 2, 240, 427)
    masks[:, 0, 50:100, 60:200] = 1
    masks[:, 1, 120:200, 250:400] = 1
    with torch.no_grad():
        state = model.init_state(frame, masks)
        out = model.step(frame, state, masks)
        out = model.step(frame, out.state, torch.sigmoid(out.logits))
    assert out.logits.shape == (1, 2, 240, 427) and out.objectness.shape == (1, 2)
    assert torch.isfinite(out.logits).all()


@pytest.mark.parametrize(
    "name,opts",
    [
        ("rvos-st", {}),
        ("rvos-st", {"mode": "zero-shot", "max_objects": 3}),
        ("rvos-t", {}),
        ("s2s", {"prev_mask_input": True}),
    ],
)
def test_save_and_reload_gives_identical_outputs(tmp_path, name, opts):
    model = tiny(name, **opts).eval()
    path = tmp_path / "sub" / "model.pt"
    save_model(model, path, note="hello")
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temp file left
    loaded = load_checkpoint(path)
    assert type(loaded) is type(model) and loaded.config == model.config and not loaded.training
    frame = torch.rand(1, 3, H, W)
    masks = (torch.rand(1, 2, H, W) > 0.5).float()
    zero_shot = opts.get("mode") == "zero-shot"
    with torch.no_grad():
        outs = [
            m.step(frame, m.init_state(frame, None if zero_shot else masks), None if zero_shot else masks)
            for m in (model, loaded)
        ]
    assert torch.equal(outs[0].logits, outs[1].logits)
    assert torch.equal(outs[0].objectness, outs[1].objectness)
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == CHECKPOINT_FORMAT and raw["model_name"] == name and raw["note"] == "hello"


def test_training_checkpoint_and_dtype(tmp_path):
    model = tiny("rvos-s")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ckpt = {**model_to_checkpoint(model), "optimizer": opt.state_dict(), "step": 7}
    torch.save(ckpt, tmp_path / "train.pt")
    loaded = load_checkpoint(tmp_path / "train.pt", dtype=torch.float64)
    assert next(loaded.parameters()).dtype == torch.float64
    assert model_from_checkpoint(ckpt).name == "rvos-s"


def test_strict_loading_rejects_a_mismatched_checkpoint(tmp_path):
    ckpt = model_to_checkpoint(tiny("rvos-st"))
    ckpt["model_config"] = {**ckpt["model_config"], "hidden_size": 32}
    torch.save(ckpt, tmp_path / "wrong.pt")
    with pytest.raises(RecvosError, match=r"wrong.pt: shape mismatch: cells.*does not match rvos-st"):
        load_checkpoint(tmp_path / "wrong.pt")
    ckpt = model_to_checkpoint(tiny("s2s"))
    del ckpt["state_dict"]["head.weight"]
    ckpt["state_dict"]["extra.weight"] = torch.zeros(1)
    torch.save(ckpt, tmp_path / "keys.pt")
    with pytest.raises(RecvosError, match="missing keys: head.weight; unexpected keys: extra.weight"):
        load_checkpoint(tmp_path / "keys.pt")


def test_bad_checkpoint_files(tmp_path):
    with pytest.raises(RecvosError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RecvosError, match="junk.pt: not a recvos checkpoint") as err:
        load_checkpoint(tmp_path / "junk.pt")
    assert "weights_only" not in str(err.value)  # never torch's advice to unpickle arbitrary code
    torch.save({"state_dict": {}}, tmp_path / "partial.pt")
    with pytest.raises(RecvosError, match="partial.pt: not a recvos checkpoint"):
        load_checkpoint(tmp_path / "partial.pt")
    ckpt = model_to_checkpoint(tiny("rvos-t"))
    ckpt["model_name"] = "rvos-x"
    torch.save(ckpt, tmp_path / "name.pt")
    with pytest.raises(RecvosError, match="name.pt: unknown model 'rvos-x'"):
        load_checkpoint(tmp_path / "name.pt")


def test_list_models_and_cli(capsys):
    rows = list_models(count_params=False)
    assert [r.name for r in rows] == model_names()
    assert all(r.backbone == "efficientnet_lite0" for r in rows)
    assert main(["models", "--backbone", "resnet18"]) == 0
    out = capsys.readouterr().out
    for name in ("rvos-st", "rvos-s", "rvos-t", "s2s", "resnet101", "vgg16", "efficientnet_lite2"):
        assert name in out
    assert main(["models", "--backbone", "resnet7"]) == 2
    assert "unknown backbone 'resnet7'" in capsys.readouterr().err
