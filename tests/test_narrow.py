"""Narrowing a trained RVOS decoder (recvos.models.narrow): exact where the dropped units are unused, sliced
consistently everywhere, and a checkpoint the trainer can warm-start from."""

from __future__ import annotations

import pytest
import torch

from recvos.errors import RecvosError
from recvos.models.factory import build_model
from recvos.models.loading import load_checkpoint, save_model, warm_start
from recvos.models.narrow import main, narrow
from recvos.models.rvos import RVOS

H, W = 64, 96


def model(hidden: int = 32, **kw) -> RVOS:
    torch.manual_seed(0)
    kw = {"backbone": "resnet18", "hidden_size": hidden, **kw}
    return build_model("rvos-st", **kw).eval()


def run(m: RVOS, steps: int = 3, objects: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and objectness of a few steps on a fixed clip (the ground truth fed back)."""
    g = torch.Generator().manual_seed(1)
    frames = torch.rand(steps, 1, 3, H, W, generator=g)
    masks = (torch.rand(steps, 1, objects, H, W, generator=g) > 0.6).float()
    with torch.no_grad():
        state = m.init_state(frames[0], masks[0] if m.one_shot else None)
        logits, obj = [], []
        for t in range(1, steps):
            out = m.step(frames[t], state, masks[t - 1] if m.uses_prev_masks else None)
            state = out.state
            logits.append(out.logits)
            obj.append(out.objectness)
    return torch.stack(logits), torch.stack(obj)


def silence(m: RVOS, factor: int, seed: int = 0) -> None:
    """Zero every weight that reads a hidden unit or skip channel outside a random 1/factor of each level
    (not a prefix, so the selection is tested, not the order), and make the BatchNorm scales of the kept skip
    channels clearly non-zero: narrowing by ``factor`` must then drop exactly the silenced ones."""
    g = torch.Generator().manual_seed(seed)

    def dropped(n: int) -> torch.Tensor:
        return torch.randperm(n, generator=g)[n // factor :]

    dims = m.hidden_dims
    units = [dropped(d) for d in dims]
    with torch.no_grad():
        for level, cell in enumerate(m.cells):
            d = dims[level]
            w = cell.conv.weight
            own = w.shape[1] - d * (1 + cell.extra_hidden)
            for e in range(1 + cell.extra_hidden):
                w[:, own + e * d + units[level]] = 0
            if level:
                w[:, units[level - 1]] = 0
            cell.shared_conv.weight[:, dropped(m.skip_dims[level])] = 0
            m.skips[level][1].weight.abs_().add_(0.1)
        m.mask_head.weight[:, units[-1]] = 0
        if m.objectness_head is not None:
            start = 0
            for d, u in zip(dims, units, strict=True):
                m.objectness_head.weight[:, start + u] = 0
                start += d


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"reference": True, "memory": 2},
        {"mode": "zero-shot"},
        {"reference": True, "local_radius": 1, "local_dim": 4},
        {"reference": True, "memory": 2, "value_dim": 4},
    ],
)
def test_narrowing_drops_unused_units_exactly(options):
    wide = model(32, **options)
    silence(wide, 2)
    thin = narrow(wide, 16)
    assert thin.hidden_dims == (16, 8, 4, 2) and thin.skip_dims == (16, 16, 8, 4)
    logits_w, obj_w = run(wide)
    logits_t, obj_t = run(thin)
    torch.testing.assert_close(logits_t, logits_w, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(obj_t, obj_w, atol=1e-6, rtol=1e-6)


def test_narrowing_to_the_same_width_is_the_identity():
    wide = model(32, reference=True)
    same = narrow(wide, 32)
    for k, v in wide.state_dict().items():
        assert torch.equal(same.state_dict()[k], v), k
    assert same.config == wide.config


def test_narrowing_keeps_the_strongest_units_and_changes_the_outputs_otherwise():
    wide = model(32)
    thin = narrow(wide, 16)
    assert thin.config["hidden_size"] == 16 and not thin.training
    assert sum(p.numel() for p in thin.parameters()) < sum(p.numel() for p in wide.parameters())
    # the finest level's mask head keeps the 2 of 4 units with the largest weights
    w = wide.mask_head.weight.detach().flatten()
    cell_cols = wide.cells[3].conv.weight.detach()
    own = cell_cols.shape[1] - 4 * 2
    score = w.pow(2) + sum(
        cell_cols[:, own + e * 4 : own + (e + 1) * 4].pow(2).sum((0, 2, 3)) for e in range(2)
    )
    kept = score.topk(2).indices.sort().values
    torch.testing.assert_close(thin.mask_head.weight.detach().flatten(), w[kept])
    logits_w, _ = run(wide)
    logits_t, _ = run(thin)
    assert logits_t.shape == logits_w.shape and not torch.allclose(logits_t, logits_w)


@pytest.mark.parametrize("hidden", [12, 40, 0])
def test_bad_widths_are_refused(hidden):
    with pytest.raises(RecvosError, match="multiple of 8"):
        narrow(model(32), hidden)


def test_only_rvos_can_be_narrowed():
    s2s = build_model("s2s", backbone="resnet18", hidden_size=32)
    with pytest.raises(RecvosError, match="RVOS"):
        narrow(s2s, 16)


def test_command_writes_a_checkpoint_the_trainer_warm_starts_from(tmp_path, capsys):
    src = tmp_path / "wide.pt"
    save_model(model(32, reference=True, memory=2), src)
    assert main([str(src), str(tmp_path / "thin.pt"), "--hidden-size", "16"]) == 0
    assert "hidden_size 32 -> 16" in capsys.readouterr().out
    thin = load_checkpoint(tmp_path / "thin.pt")
    assert thin.hidden_dims[0] == 16 and thin.config["memory"] == 2
    fresh = model(16, reference=True, memory=2)
    assert warm_start(fresh, tmp_path / "thin.pt") == []
    for k, v in thin.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
