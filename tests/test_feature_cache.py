"""Training from cached backbone features: exactness, crops, the trainer path, and bad input."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from recvos.data.clips import ClipKey
from recvos.errors import RecvosError
from recvos.models.backbones import feature_sizes, with_features
from recvos.models.factory import build_model
from recvos.training.config import load_config
from recvos.training.feature_cache import (
    LEVELS,
    CachedClipDataset,
    _pool_dataset,
    open_cached_dataset,
    prepare_feature_cache,
)
from recvos.training.objective import ClipModel
from recvos.training.trainer import Trainer

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def cache_cfg(tmp_path: Path, *extra: str):
    """The smoke preset at 64x96 (multiples of 32 plus an odd width) with a small feature cache."""
    return load_config(
        CONFIGS / "smoke_synthetic.yaml",
        [
            f"out={tmp_path / 'run'}",
            "train.progress=false",
            "train.tensorboard=false",
            "val.every=0",
            "train.steps=3",
            "train.ckpt_every=2",
            "model.name=rvos-st",
            "model.options.hidden_size=16",
            "model.options.frozen_bn=true",
            "data.size=[64, 90]",
            "data.synthetic.size=[96, 128]",
            "optim.freeze_backbone_steps=1000",
            f"data.feature_cache.dir={tmp_path / 'cache'}",
            "data.feature_cache.clips=3",
            "data.feature_cache.frames=5",
            *extra,
        ],
    )


def model_of(cfg):
    torch.manual_seed(0)
    return build_model(cfg.model.name, **cfg.model.options).eval()


def test_cache_holds_the_backbone_features_of_the_pool_clips(tmp_path):
    cfg = cache_cfg(tmp_path)
    model = model_of(cfg)
    path = prepare_feature_cache(cfg, model)
    info = json.loads((path / "manifest.json").read_text())
    assert info["size"] == [96, 122] and info["shapes"]["f4"] == [3, 5, 24, 24, 31]
    pool = _pool_dataset(cfg, None)
    item = pool[ClipKey(1, 5, "all")]
    with torch.no_grad():
        direct = model.backbone(item["frames"])
    for lv, f in zip(LEVELS, direct, strict=True):
        cached = torch.from_numpy(np.load(path / f"{lv}.npy")[1]).float()
        assert torch.allclose(cached, f, atol=2e-2, rtol=1e-2), lv
    slots = np.load(path / "slots.npy")[1]
    for o in range(2):
        assert np.array_equal(slots == o + 1, item["masks"][:, o].numpy() > 0.5)
    # nothing but the cache is left next to it
    assert [p.name for p in path.parent.iterdir()] == ["cache"]


def test_crops_cut_every_level_where_the_masks_are(tmp_path):
    cfg = cache_cfg(tmp_path)
    path = prepare_feature_cache(cfg, model_of(cfg))
    ds = CachedClipDataset(path, cfg.data.size, length=16, seed=0)
    full = {k: np.load(path / f"{k}.npy") for k in (*LEVELS, "slots")}
    seen = set()
    for k in range(16):
        item = ds[ClipKey(k, 3)]
        # "cache[<pool index>]:<pool clip name>@<first frame>+<y>,<x>"
        head, where = item["name"].rsplit("@", 1)
        pool_n = int(head[len("cache[") : head.index("]")])
        assert head.endswith(ds.names[pool_n])
        t0, yx = where.split("+")
        y, x = map(int, yx.split(","))
        seen.add((y, x))
        assert item["masks"].shape == (3, 2, 64, 90)
        slot = torch.from_numpy(full["slots"][pool_n, int(t0) : int(t0) + 3, y : y + 64, x : x + 90])
        assert torch.equal(item["masks"][:, 0] > 0, slot == 1)
        for lv, f, (h, w), s in zip(
            LEVELS, item["features"], feature_sizes(64, 90), (4, 8, 16, 32), strict=True
        ):
            assert f.shape[-2:] == (h, w) and f.dtype == torch.float16
            ref = full[lv][pool_n, int(t0) : int(t0) + 3, :, y // s : y // s + h, x // s : x // s + w]
            assert np.array_equal(f.numpy(), ref), lv
        assert item["present"].any() and not item["valid"][~item["annotated"]].any()
    assert len(seen) > 1  # offsets vary (multiples of 32)
    assert all(y % 32 == 0 and x % 32 == 0 for y, x in seen)


def test_features_replace_the_frames_in_the_models_loop(tmp_path):
    """With margin 0 a cached clip is the pool clip: the model given its features computes what it computes
    from the frames (up to fp16 storage)."""
    cfg = cache_cfg(tmp_path, "data.feature_cache.margin=0", "data.size=[96, 128]")
    model = model_of(cfg)
    path = prepare_feature_cache(cfg, model)
    pool = _pool_dataset(cfg, None)
    frames = pool[ClipKey(0, 5, "all")]["frames"][None, :4]
    feats = [torch.from_numpy(np.load(path / f"{lv}.npy")[0:1, :4]).float() for lv in LEVELS]
    masks = (
        torch.from_numpy(np.load(path / "slots.npy")[0:1, :4])
        .unsqueeze(2)
        .eq(torch.tensor([1, 2]).view(1, 1, 2, 1, 1))
    )
    masks = masks.float()
    valid = torch.ones(1, 4, 2, dtype=torch.bool)
    net = ClipModel(model)
    with torch.no_grad():
        a, _ = net(frames, masks, valid, True)
        b, _ = net(None, masks, valid, True, feats)
    assert (torch.sigmoid(a) - torch.sigmoid(b)).abs().max() < 2e-2
    assert ((a > 0) == (b > 0)).float().mean() > 0.99


def test_a_backbone_refuses_features_of_another_shape():
    model = build_model("rvos-st", hidden_size=16)
    bad = [torch.zeros(1, c, 3, 3) for c in model.backbone.channels]
    with pytest.raises(RecvosError, match="rebuild the feature cache"):
        model.backbone(with_features(1, 64, 64, bad))


def test_training_from_the_cache_runs_resumes_and_uses_bf16_on_cpu(tmp_path, monkeypatch):
    seen = []
    forward = ClipModel.forward

    def spy(self, frames, masks, valid, teacher, features=None):
        seen.append((frames is None, features is not None, torch.is_autocast_enabled("cpu")))
        return forward(self, frames, masks, valid, teacher, features)

    monkeypatch.setattr(ClipModel, "forward", spy)
    cfg = cache_cfg(tmp_path, "train.amp=bf16", "train.steps=4")
    first = Trainer(cfg, stop_after=3).fit()
    assert first.step == 3 and (tmp_path / "cache" / "manifest.json").is_file()
    built = (tmp_path / "cache" / "f4.npy").stat().st_mtime_ns
    done = Trainer(cfg, resume=True).fit()
    assert done.step == 4 and all(np.isfinite(done.losses)) and len(done.losses) == 2
    assert (tmp_path / "cache" / "f4.npy").stat().st_mtime_ns == built  # reused, not rebuilt
    assert seen and all(s == (True, True, True) for s in seen)  # features in place of frames, bf16 autocast


@pytest.mark.parametrize("native", [True, False])
def test_amp_auto_trains_in_bf16_only_where_the_cpu_has_it(tmp_path, monkeypatch, native):
    """train.amp=auto: bf16 autocast on a CPU with native bf16, fp32 where bf16 would be emulated (slower)."""
    import recvos.training.trainer as trainer

    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda: native)
    seen = []
    forward = ClipModel.forward

    def spy(self, *args, **kwargs):
        seen.append(torch.is_autocast_enabled("cpu"))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(ClipModel, "forward", spy)
    done = Trainer(cache_cfg(tmp_path, "train.amp=auto", "train.steps=2")).fit()
    assert done.step == 2 and seen and set(seen) == {native}


def test_resolve_amp_names_the_autocast_of_each_device(monkeypatch):
    import recvos.training.trainer as trainer

    cpu = torch.device("cpu")
    for native, want in ((True, "bf16"), (False, "none")):
        monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda n=native: n)
        assert trainer.resolve_amp("auto", cpu) == want
        assert trainer.resolve_amp("bf16", cpu) == "bf16"  # asked for: kept, even where emulated
        assert trainer.resolve_amp("fp16", cpu) == "none"  # CPU autocast runs bf16 only
        assert trainer.resolve_amp("none", cpu) == "none"
    for supported, want in ((True, "bf16"), (False, "fp16")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda s=supported: s)
        assert trainer.resolve_amp("auto", torch.device("cuda", 0)) == want


def test_a_cache_built_for_another_size_or_backbone_is_refused_or_rebuilt(tmp_path):
    cfg = cache_cfg(tmp_path)
    model = model_of(cfg)
    prepare_feature_cache(cfg, model)
    other = cache_cfg(tmp_path, "data.size=[64, 64]")
    with pytest.raises(RecvosError, match=r"cache .* was built for another margin|built for another .*size"):
        prepare_feature_cache(other, model)
    changed = model_of(cfg)
    with torch.no_grad():
        changed.backbone.first_conv().weight.add_(0.1)
    with pytest.raises(RecvosError, match="another backbone_sha256"):
        prepare_feature_cache(cfg, changed)
    rebuilt = cache_cfg(tmp_path, "data.size=[64, 64]", "data.feature_cache.rebuild=true")
    path = prepare_feature_cache(rebuilt, model)
    assert json.loads((path / "manifest.json").read_text())["key"]["size"] == [64, 64]
    assert len(open_cached_dataset(rebuilt)[ClipKey(0, 3)]["masks"][0, 0]) == 64


def test_full_disk_while_building_leaves_no_cache(tmp_path, monkeypatch):
    cfg = cache_cfg(tmp_path)
    real = np.lib.format.open_memmap
    calls = []

    def full(path, *a, **k):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, *a, **k)

    monkeypatch.setattr(np.lib.format, "open_memmap", full)
    with pytest.raises(RecvosError, match="disk is full.*nothing was kept") as e:
        prepare_feature_cache(cfg, model_of(cfg))
    assert "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []  # no cache, no half-built folder


def watch_pool(monkeypatch, rendered: list, stop_at: int | None = None) -> None:
    """Builds from now on render their pool clips through a wrapper that records each clip id in ``rendered``
    and raises KeyboardInterrupt (the session ends) when clip ``stop_at`` is asked for."""
    import recvos.training.feature_cache as fcache

    real_pool = _pool_dataset

    class Watched:
        def __init__(self, pool):
            self.pool = pool

        def __getitem__(self, key):
            if key.clip_id == stop_at:
                raise KeyboardInterrupt
            rendered.append(key.clip_id)
            return self.pool[key]

    monkeypatch.setattr(fcache, "_pool_dataset", lambda c, v: Watched(real_pool(c, v)))


def test_an_interrupted_build_resumes_where_it_stopped_and_gives_the_same_cache(tmp_path, monkeypatch):
    import recvos.training.feature_cache as fcache

    monkeypatch.setattr(fcache, "PROGRESS_EVERY", 1)
    cfg = cache_cfg(tmp_path)
    model = model_of(cfg)
    rendered = []
    watch_pool(monkeypatch, rendered, stop_at=2)  # the session ends while clip 2 is rendered
    with pytest.raises(KeyboardInterrupt):
        prepare_feature_cache(cfg, model)
    assert not (tmp_path / "cache").exists() and (tmp_path / ".cache.partial" / "progress.json").is_file()
    assert rendered == [0, 1]
    watch_pool(monkeypatch, rendered)
    path = prepare_feature_cache(cfg, model)
    assert rendered == [0, 1, 2]  # only the clip that was not done
    assert [p.name for p in path.parent.iterdir()] == ["cache"]
    assert sorted(p.name for p in path.iterdir()) == sorted(
        [f"{lv}.npy" for lv in LEVELS] + ["slots.npy", "annotated.npy", "names.json", "manifest.json"]
    )
    whole_cfg = cache_cfg(tmp_path, f"data.feature_cache.dir={tmp_path / 'whole'}")
    whole = prepare_feature_cache(whole_cfg, model)
    for name in [*(f"{lv}.npy" for lv in LEVELS), "slots.npy", "annotated.npy"]:
        assert np.array_equal(np.load(path / name), np.load(whole / name)), name
    assert (path / "names.json").read_text() == (whole / "names.json").read_text()


def test_a_partial_build_for_another_key_starts_over(tmp_path, monkeypatch):
    import recvos.training.feature_cache as fcache

    monkeypatch.setattr(fcache, "PROGRESS_EVERY", 1)
    cfg = cache_cfg(tmp_path)
    model = model_of(cfg)
    watch_pool(monkeypatch, [], stop_at=2)
    with pytest.raises(KeyboardInterrupt):
        prepare_feature_cache(cfg, model)
    rendered = []
    watch_pool(monkeypatch, rendered)
    other = cache_cfg(tmp_path, "data.size=[64, 64]")
    path = prepare_feature_cache(other, model)
    assert rendered == [0, 1, 2]
    assert json.loads((path / "manifest.json").read_text())["key"]["size"] == [64, 64]


def test_a_cache_being_built_by_another_process_is_refused(tmp_path):
    import fcntl

    cfg = cache_cfg(tmp_path)
    partial = tmp_path / ".cache.partial"
    partial.mkdir()
    with open(partial / "build.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(RecvosError, match=r"cache .*cache is being built by another process") as e:
            prepare_feature_cache(cfg, model_of(cfg))
    assert "\n" not in str(e.value)
    assert not (tmp_path / "cache").exists()


def test_not_enough_free_space_is_refused_before_building(tmp_path, monkeypatch):
    import shutil

    cfg = cache_cfg(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(RecvosError, match=r"needs .* GiB, 0.0 GiB free"):
        prepare_feature_cache(cfg, model_of(cfg))
    assert not (tmp_path / "cache").exists()


def test_a_folder_that_is_not_a_cache_is_not_touched(tmp_path):
    cfg = cache_cfg(tmp_path)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "mine.txt").write_text("keep")
    with pytest.raises(RecvosError, match="is not a recvos feature cache"):
        prepare_feature_cache(cfg, model_of(cfg))
    assert (tmp_path / "cache" / "mine.txt").read_text() == "keep"


def test_bad_cache_settings_are_one_line_errors(tmp_path):
    with pytest.raises(RecvosError, match="multiple of 32"):
        cache_cfg(tmp_path, "data.feature_cache.margin=20")
    with pytest.raises(RecvosError, match="freeze_backbone_steps >= train.steps"):
        cache_cfg(tmp_path, "optim.freeze_backbone_steps=0")
    with pytest.raises(RecvosError, match=r"feature_cache.frames >= the clip length"):
        cache_cfg(tmp_path, "data.feature_cache.frames=2")
    s2s = cache_cfg(tmp_path, "model.name=s2s", "model.options={}")
    with pytest.raises(RecvosError, match="backbone sees only the frame"):
        prepare_feature_cache(s2s, build_model("s2s"))
