"""Shared fixtures: the optional real data in ../shared/data, and small torch settings for fast tests."""

from __future__ import annotations

import os

# as the CLI does (recvos.cli.main): threads that spin-wait collapse when other processes share the cores
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _torch_threads():
    torch.set_num_threads(2)
    yield


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory) -> Path:
    """A tiny one-shot RVOS-T checkpoint (random weights, seeded) for the CLI tests."""
    from recvos.models.factory import build_model
    from recvos.models.loading import save_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_model(build_model("rvos-t", hidden_size=16), path)
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of ../shared/data; tests that use it skip when it is absent."""
    if not SHARED.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED


@pytest.fixture(scope="session")
def davis2016_root(shared_data: Path) -> Path:
    root = shared_data / "davis2016"
    if not root.is_dir():
        pytest.skip("../shared/data/davis2016 is not present")
    return root


@pytest.fixture(scope="session")
def unroll():
    """``unroll(model, frames [B,T,3,H,W], masks [B,T,O,H,W] | None, teacher=True)`` -> ClipOutput: the model's
    own loop over a clip with a ClipFeed (teacher forcing, or Mask-ST+ with ``teacher=False``; zero-shot
    without masks)."""
    from recvos.models.feed import ClipFeed

    def run(model, frames, masks=None, teacher=True):
        feed = ClipFeed(zero_shot=True) if masks is None else ClipFeed(masks, teacher=teacher)
        return model.unroll_clip(frames, feed)

    return run
