"""Training from cached backbone features: spend the CPU on training, not on recomputation.

With the backbone frozen (the one-shot default trains that way), every training step recomputes features
that never change, and on a CPU the backbone's forward pass is about half of a step. A feature cache pays for
it once: a pool of ``data.feature_cache.clips`` clips is rendered by the configured data pipeline (the same
sources, mix and augmentation as image training: each pool clip is one augmented view), ``frames`` frames
each, at ``data.size`` plus ``margin`` pixels; the frozen backbone's features ``[f4, f8, f16, f32]`` of every
frame are stored in fp16, memory-mapped, with the clip's object slots. Training then draws, per clip, a pool
clip, a window of ``data.num_frames`` frames and a crop of ``data.size`` at an offset that is a multiple of
32 (the coarsest stride), so the features of every level are cut exactly where the masks are. Features of a
crop taken from a larger frame differ from those of the cropped frame only near the crop's border (padding);
with ``margin=0`` they are the same.

Folder::

    <dir>/manifest.json      format, the key it was built for, shapes
    <dir>/f4.npy ... f32.npy fp16 [N, T, C, h, w]
    <dir>/slots.npy          uint8 [N, T, H, W]: 0 background, k = the object in slot k - 1
    <dir>/annotated.npy      bool [N, T]
    <dir>/names.json         the source clip of each pool clip

The key is what the features depend on: the backbone (name and a digest of its weights), the sizes, and the
data config that rendered the pool. A cache built for another key is refused with a one-line error, or rebuilt
with ``data.feature_cache.rebuild=true``. A cache is built in a sibling folder (``.<name>.partial``) and renamed
when complete, so an interrupted build never looks like a cache. The build is resumable: every
``PROGRESS_EVERY`` clips the arrays are flushed and ``progress.json`` records how many clips are done, so a run
killed while building (a session that ends, Ctrl-C) continues from there the next time, when the key is the
same (pool clips are a pure function of their index, so the result is the cache an uninterrupted build would
have written); a partial build for another key is discarded. A full disk is reported in one line and the
partial build is removed, so nothing is left behind.
"""

from __future__ import annotations

import copy
import errno
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from recvos.data.clips import MAX_ATTEMPTS, ClipKey
from recvos.errors import RecvosError
from recvos.models.backbones.base import STRIDES, feature_sizes
from recvos.models.base import RecurrentVOS
from recvos.models.state_dicts import tensor_digest
from recvos.training.config import Config, config_to_dict

log = logging.getLogger(__name__)

__all__ = [
    "FORMAT",
    "LEVELS",
    "CachedClipDataset",
    "cache_key",
    "open_cached_dataset",
    "prepare_feature_cache",
]

FORMAT = "recvos-feature-cache/1"
LEVELS = ("f4", "f8", "f16", "f32")
#: frames per backbone batch while building
BUILD_BATCH = 8
#: clips between the saved progress points of a build (what an interrupted build resumes from)
PROGRESS_EVERY = 50


def cache_key(cfg: Config, model: RecurrentVOS) -> dict[str, Any]:
    """What the cached features depend on (compared with the manifest of an existing cache)."""
    whole = config_to_dict(cfg)
    d = whole["data"]
    fc = d.pop("feature_cache")
    for k in ("num_workers", "clips_per_epoch", "num_frames", "num_frames_max"):
        d.pop(k)  # how the pool is consumed, not what it holds
    return {
        "backbone": model.backbone.name,
        "backbone_sha256": tensor_digest(model.backbone.state_dict()),
        "size": list(cfg.data.size),
        "margin": fc["margin"],
        "clips": fc["clips"],
        "frames": fc["frames"],
        "data": d,
        "augment": whole["augment"],
        "seed": cfg.train.seed,
    }


def _differs(old: dict, new: dict) -> list[str]:
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def prepare_feature_cache(cfg: Config, model: RecurrentVOS, videos: Any = None) -> Path:
    """The cache folder of ``cfg.data.feature_cache``, built first if it does not exist (or is stale and
    ``rebuild`` is set). Call on one process (rank 0) while the others wait."""
    fc = cfg.data.feature_cache
    if not getattr(model, "accepts_features", False):
        raise RecvosError(
            f"data.feature_cache needs a model whose backbone sees only the frame (rvos-s/t/st); "
            f"{model.name} does not: set data.feature_cache.dir=null"
        )
    path = Path(fc.dir)
    key = cache_key(cfg, model)
    manifest = path / "manifest.json"
    if path.exists():
        if manifest.is_file():
            try:
                info = json.loads(manifest.read_text())
            except (OSError, ValueError):
                info = {}
            changed = _differs(info.get("key", {}), key) if info.get("format") == FORMAT else ["format"]
            if not changed:
                return path
            what = ", ".join(changed)
            if not fc.rebuild:
                raise RecvosError(
                    f"feature cache {path} was built for another {what}; delete it, set data.feature_cache.dir "
                    "to another folder, or data.feature_cache.rebuild=true"
                )
            log.info("feature cache %s: %s changed, rebuilding", path, what)
        elif any(path.iterdir()):
            raise RecvosError(
                f"data.feature_cache.dir {path} exists and is not a recvos feature cache (no manifest.json); "
                "give an empty or new folder"
            )
    _build(cfg, model, path, key, videos)
    return path


def _remove_stale_builds(path: Path) -> None:
    """Folders of the previous (PID-named, not resumable) build layout."""
    for d in path.parent.glob(f".{path.name}.building-*"):
        shutil.rmtree(d, ignore_errors=True)


def _lock(partial: Path, path: Path) -> Any:
    """An exclusive lock on the partial build of the cache ``path`` (a second process building it is refused)."""
    handle = open(partial / "build.lock", "w")  # noqa: SIM115 - held for the build, closed by the caller
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock
        return handle
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise RecvosError(
            f"feature cache {path} is being built by another process; wait for it, or set "
            "data.feature_cache.dir to another folder"
        ) from None
    return handle


def _used_bytes(folder: Path) -> int:
    """Bytes the files of ``folder`` occupy on disk (memory maps are sparse until written)."""
    return sum(f.stat().st_blocks * 512 for f in folder.iterdir() if f.is_file()) if folder.is_dir() else 0


def _resume_point(partial: Path, key: dict, shapes: dict) -> dict | None:
    """The saved progress of a partial build of the same key and shapes, or None."""
    try:
        progress = json.loads((partial / "progress.json").read_text())
    except (OSError, ValueError):
        return None
    if progress.get("format") != FORMAT or progress.get("key") != key or progress.get("shapes") != shapes:
        return None
    return progress


def _pool_dataset(cfg: Config, videos: Any):
    """The image clip dataset that renders the pool: the training config at the pool size and length."""
    from recvos.training.data import train_dataset

    fc = cfg.data.feature_cache
    pool = copy.deepcopy(cfg)
    pool.data.size = [cfg.data.size[0] + fc.margin, cfg.data.size[1] + fc.margin]
    pool.data.num_frames, pool.data.num_frames_max = fc.frames, None
    return train_dataset(pool, videos)


def _build(cfg: Config, model: RecurrentVOS, path: Path, key: dict, videos: Any) -> None:
    fc, d = cfg.data.feature_cache, cfg.data
    H, W = d.size[0] + fc.margin, d.size[1] + fc.margin
    N, T, slots_n = fc.clips, fc.frames, d.max_objects
    sizes = feature_sizes(H, W)
    channels = model.backbone.channels
    shapes = {lv: [N, T, c, *hw] for lv, c, hw in zip(LEVELS, channels, sizes, strict=True)}
    key = json.loads(json.dumps(key))  # as it reads back from progress.json
    need = sum(2 * int(np.prod(s)) for s in shapes.values()) + N * T * (H * W + 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_builds(path)
    partial = path.parent / f".{path.name}.partial"
    partial.mkdir(exist_ok=True)
    lock = _lock(partial, path)
    try:
        progress = _resume_point(partial, key, shapes)
        if progress is None:  # nothing saved, or saved for another key: start over
            for f in partial.iterdir():
                if f.name != "build.lock":
                    f.unlink()
        free = shutil.disk_usage(path.parent).free + _used_bytes(partial)
        if free < need * 1.02 + (64 << 20):
            shutil.rmtree(partial, ignore_errors=True)
            raise RecvosError(
                f"feature cache {path} needs {need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free on that disk; "
                "free space, lower data.feature_cache.clips/frames, or set data.feature_cache.dir to another disk"
            )
        if progress:
            log.info(
                "feature cache %s: resuming an interrupted build at clip %d / %d", path, progress["done"], N
            )
        else:
            log.info(
                "building feature cache %s: %d clips x %d frames at %dx%d (%.1f GiB)",
                path,
                N,
                T,
                H,
                W,
                need / 2**30,
            )
        _fill(cfg, model, partial, shapes, progress, key, videos)
        info = {"format": FORMAT, "key": key, "shapes": shapes, "objects": slots_n, "size": [H, W]}
        (partial / "manifest.json").write_text(json.dumps(info, indent=1))
        (partial / "progress.json").unlink()
        (partial / "build.lock").unlink()
        if path.exists():
            shutil.rmtree(path)
        partial.rename(path)
    except OSError as e:
        shutil.rmtree(partial, ignore_errors=True)
        why = "the disk is full" if e.errno == errno.ENOSPC else (e.strerror or str(e))
        raise RecvosError(
            f"cannot write the feature cache {path}: {why} (it needs {need / 2**30:.1f} GiB); nothing was kept; "
            "free space or set data.feature_cache.dir to another disk"
        ) from None
    finally:
        lock.close()


def _fill(
    cfg: Config,
    model: RecurrentVOS,
    partial: Path,
    shapes: dict,
    progress: dict | None,
    key: dict,
    videos: Any,
) -> None:
    """Render the pool clips and store their features in ``partial``, from the saved progress point on."""
    fc, d = cfg.data.feature_cache, cfg.data
    N, T, slots_n = fc.clips, fc.frames, d.max_objects
    H, W = d.size[0] + fc.margin, d.size[1] + fc.margin
    mode = "r+" if progress else "w+"
    arrays = {
        lv: np.lib.format.open_memmap(partial / f"{lv}.npy", mode=mode, dtype=np.float16, shape=tuple(s))
        for lv, s in shapes.items()
    }
    slots = np.lib.format.open_memmap(partial / "slots.npy", mode=mode, dtype=np.uint8, shape=(N, T, H, W))
    if progress:
        done, names = progress["done"], progress["names"]
        annotated = np.asarray(progress["annotated"], dtype=bool).reshape(N, T)
    else:
        done, names, annotated = 0, [], np.zeros((N, T), dtype=bool)

    def save_progress(n: int) -> None:
        for a in [*arrays.values(), slots]:
            a.flush()
        state = {"format": FORMAT, "key": key, "shapes": shapes, "done": n, "names": names}
        state["annotated"] = annotated.tolist()
        tmp = partial / "progress.json.tmp"
        tmp.write_text(json.dumps(state))
        os.replace(tmp, partial / "progress.json")

    dataset = _pool_dataset(cfg, videos)
    backbone = model.backbone
    was_training = backbone.training
    backbone.eval()
    device = next(model.parameters()).device
    try:
        for n in range(done, N):
            item = dataset[ClipKey(n, T, d.frames)]
            names.append(item["name"])
            masks = item["masks"]  # [T, slots, H, W] {0, 1}, disjoint
            slot = (masks * torch.arange(1, slots_n + 1, dtype=masks.dtype).view(1, slots_n, 1, 1)).amax(1)
            slots[n] = slot.to(torch.uint8).numpy()
            annotated[n] = item["annotated"].numpy()
            with torch.no_grad():
                for t0 in range(0, T, BUILD_BATCH):
                    feats = backbone(item["frames"][t0 : t0 + BUILD_BATCH].to(device))
                    for lv, f in zip(LEVELS, feats, strict=True):
                        arrays[lv][n, t0 : t0 + BUILD_BATCH] = f.half().cpu().numpy()
            if (n + 1) % PROGRESS_EVERY == 0 or n + 1 == N:
                save_progress(n + 1)
                log.info("feature cache: %d / %d clips", n + 1, N)
        np.save(partial / "annotated.npy", annotated)
        (partial / "names.json").write_text(json.dumps(names))
    finally:
        backbone.train(was_training)


class CachedClipDataset(Dataset):
    """Training clips from a feature cache, indexed by :class:`ClipKey` like
    :class:`~recvos.data.clips.ClipDataset`; an item has ``"features"`` (``[f4, f8, f16, f32]``, fp16
    [T, C, h, w]) instead of ``"frames"``, and the same ``masks``/``valid``/``present``/``annotated``/
    ``name``/``clip_id``. Each clip is a pure function of (seed, clip id)."""

    def __init__(self, path: str | Path, size: list[int], *, length: int, seed: int = 0) -> None:
        self.path = Path(path)
        info = json.loads((self.path / "manifest.json").read_text())
        self.shapes = info["shapes"]
        self.num_objects = int(info["objects"])
        self.pool_size = tuple(info["size"])
        self.size = (int(size[0]), int(size[1]))
        self.N, self.T = self.shapes["f4"][:2]
        self.length = length
        self.seed = seed
        self.names = json.loads((self.path / "names.json").read_text())
        self.annotated = np.load(self.path / "annotated.npy")
        self._arrays: dict[str, np.ndarray] | None = None  # opened lazily (per worker process)

    def arrays(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            self._arrays = {k: np.load(self.path / f"{k}.npy", mmap_mode="r") for k in (*LEVELS, "slots")}
        return self._arrays

    def __len__(self) -> int:
        return self.length

    def _offsets(self, rng: np.random.Generator) -> tuple[int, int]:
        (H, W), (h, w) = self.pool_size, self.size
        s = STRIDES[-1]  # the coarsest stride: every level's crop starts on a whole feature pixel
        return s * int(rng.integers((H - h) // s + 1)), s * int(rng.integers((W - w) // s + 1))

    def __getitem__(self, key: ClipKey | int) -> dict[str, Any]:
        if not isinstance(key, ClipKey):
            key = ClipKey(int(key), min(5, self.T))
        T, nobj = key.num_frames, self.num_objects
        if T > self.T:
            raise RecvosError(
                f"clips of {T} frames asked from a feature cache of {self.T}-frame clips; rebuild it"
            )
        a = self.arrays()
        h, w = self.size
        for attempt in range(MAX_ATTEMPTS):
            rng = np.random.default_rng([self.seed, 982451653, key.clip_id, attempt])
            n = int(rng.integers(self.N))
            t0 = int(rng.integers(self.T - T + 1))
            window = slice(t0, t0 + T)
            annotated = self.annotated[n, window]
            if key.frames == "annotated" and not annotated.all():
                continue
            y, x = self._offsets(rng)
            slots = torch.from_numpy(np.array(a["slots"][n, window, y : y + h, x : x + w]))
            masks = (
                slots.unsqueeze(1) == torch.arange(1, nobj + 1).view(1, nobj, 1, 1)
            ).float()  # [T, O, h, w]
            ann = torch.from_numpy(annotated.copy())
            visible = ann[:, None] & (masks.flatten(2).amax(-1) > 0)  # [T, O]
            present = visible.any(0)
            if not present.any():
                continue
            valid = (visible.cumsum(0) > 0) & ann[:, None]
            features = []
            for lv, (fh, fw), s in zip(LEVELS, feature_sizes(h, w), STRIDES, strict=True):
                f = a[lv][n, window, :, y // s : y // s + fh, x // s : x // s + fw]
                features.append(torch.from_numpy(np.ascontiguousarray(f)))
            return {
                "features": features,
                "masks": masks,
                "valid": valid,
                "present": present,
                "annotated": ann,
                "name": f"cache[{n}]:{self.names[n]}@{t0}+{y},{x}",
                "clip_id": key.clip_id,
            }
        raise RecvosError(
            f"clip {key.clip_id}: {MAX_ATTEMPTS} draws from the feature cache {self.path} gave no visible object; "
            "rebuild it with a smaller data.feature_cache.margin"
        )


def open_cached_dataset(cfg: Config) -> CachedClipDataset:
    """The training dataset of a built cache (``cfg.data.feature_cache.dir``)."""
    return CachedClipDataset(
        cfg.data.feature_cache.dir, cfg.data.size, length=cfg.data.clips_per_epoch, seed=cfg.train.seed
    )
