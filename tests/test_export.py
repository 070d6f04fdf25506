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
