"""Exporting a checkpoint to shipped weights: fp16, gzip, loadable by load_checkpoint."""

from __future__ import annotations

import torch

from recvos.models.factory import build_model
from recvos.models.loading import load_checkpoint, save_model
from recvos.training.export import export_weights


def test_export_to_gzip_fp16_roundtrip(tmp_path):
    torch.manual_seed(0)
    model = build_model("rvos-t", mode="one-shot", hidden_size=16).eval()
    src = tmp_path / "model.pt"
    save_model(model, src)
    out = export_weights(src, tmp_path / "small.pt.gz")
    assert out.stat().st_size < src.stat().st_size * 0.6  # fp16 + gzip
    loaded = load_checkpoint(out)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    frame = torch.rand(1, 3, 64, 96)
    masks = (torch.rand(1, 2, 64, 96) > 0.5).float()
    with torch.inference_mode():
        a = model.step(frame, model.init_state(frame, masks), masks).logits
        b = loaded.step(frame, loaded.init_state(frame, masks), masks).logits
    assert torch.allclose(a, b, atol=5e-2, rtol=0)
    assert (torch.sigmoid(a) > 0.5).eq(torch.sigmoid(b) > 0.5).float().mean() > 0.99


def test_export_sets_the_memory_the_model_runs_with(tmp_path):
    import pytest

    from recvos.errors import RecvosError

    model = build_model("rvos-st", hidden_size=16, reference=True, ref_dim=4, memory=3).eval()
    src = tmp_path / "model.pt"
    save_model(model, src)
    out = export_weights(src, tmp_path / "m6.pt.gz", memory=6)
    loaded = load_checkpoint(out)
    assert loaded.memory == 6 and loaded.config["memory"] == 6
    assert all(
        torch.equal(a.half().float() if a.is_floating_point() else a, b)
        for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True)
    )
    with pytest.raises(RecvosError, match="1..64"):
        export_weights(src, tmp_path / "bad.pt.gz", memory=0)
    plain = tmp_path / "plain.pt"
    save_model(build_model("rvos-st", hidden_size=16).eval(), plain)
    with pytest.raises(RecvosError, match="without a memory"):
        export_weights(plain, tmp_path / "bad.pt.gz", memory=6)
