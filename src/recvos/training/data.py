"""The training run's data, built from its config: the clip dataset and the held-out videos."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from recvos.data.clips import ArrayVideo, ClipDataset
from recvos.data.datasets import open_dataset
from recvos.data.pseudo import StillImage, stills_from_video
from recvos.data.synthetic import synthetic_clip
from recvos.data.transforms import ClipTransform
from recvos.errors import RecvosError
from recvos.training.config import Config

__all__ = ["open_videos", "train_dataset", "extra_stills", "val_videos"]


def open_videos(
    kind: str | None,
    root: str | None,
    split: str | None,
    what: str,
    sequences: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> list[Any]:
    """The sequences of a dataset (``what`` is the config section, for messages), filtered by name."""
    if kind is None:
        return []
    if root is None:
        raise RecvosError(f"{what}.kind={kind} needs {what}.root (the dataset folder)")
    dataset = open_dataset(kind, root, split)
    names = list(dataset.names)
    unknown = sorted(set(sequences) - set(names)) + sorted(set(exclude) - set(names))
    if unknown:
        raise RecvosError(
            f"{what}.sequences/{what}.exclude name {unknown} not in {kind} split {split!r} at {root}; "
            "fix the names or the split"
        )
    keep = [n for n in names if (not sequences or n in sequences) and n not in exclude]
    if not keep:
        raise RecvosError(f"{what}: no sequences left after {what}.sequences/{what}.exclude; fix those lists")
    return [dataset[n] for n in keep]


def train_dataset(cfg: Config, videos: Sequence[Any] | None = None) -> ClipDataset:
    """The clip dataset of ``cfg.data`` (``videos`` replaces the configured dataset, for tests)."""
    d, a = cfg.data, cfg.augment
    if videos is None:
        videos = open_videos(d.kind, d.root, d.split, "data", d.sequences, d.exclude)
    transform = ClipTransform(
        d.size,
        enabled=a.enabled,
        scale=a.scale,
        hflip=a.hflip,
        rotate=a.rotate,
        shear=a.shear,
        translate=a.translate,
        brightness=a.brightness,
        contrast=a.contrast,
        saturation=a.saturation,
        hue=a.hue,
        jitter_translate=a.jitter_translate,
        jitter_rotate=a.jitter_rotate,
        jitter_scale=a.jitter_scale,
    )
    return ClipDataset(
        videos,
        size=d.size,
        num_frames=d.num_frames,
        num_frames_max=d.num_frames_max,
        max_stride=d.max_stride,
        max_objects=d.max_objects,
        frames=d.frames,
        transform=transform,
        mix=d.mix,
        synthetic=d.synthetic,
        composite=d.composite,
        pseudo=d.pseudo,
        stills=extra_stills(d.pseudo.roots) if d.mix.pseudo > 0 else None,
        length=d.clips_per_epoch,
        seed=cfg.train.seed,
        source_name=str(d.root or "synthetic clips"),
    )


def extra_stills(roots: Sequence[str]) -> list[StillImage]:
    """Every annotated frame (with an object) of the datasets at ``roots`` (``kind=folder``), for pseudo-videos."""
    stills = []
    for root in roots:
        for video in open_dataset("folder", root):
            stills += stills_from_video(video, every=1)
    return stills


def val_videos(cfg: Config, videos: Sequence[Any] | None = None) -> list[Any]:
    """At most ``val.max_sequences`` held-out videos: ``videos`` (tests), the configured dataset, or
    ``val.synthetic`` synthetic videos (seeds disjoint from training) when no dataset is given."""
    v = cfg.val
    if videos is None:
        videos = open_videos(v.kind, v.root, v.split, "val", v.sequences, v.exclude)
        if not videos and v.synthetic > 0:
            s = cfg.data.synthetic
            for k in range(v.synthetic):
                seed = int(np.random.SeedSequence([cfg.train.seed, 15485863, k]).generate_state(1)[0])
                clip = synthetic_clip(
                    seed, num_frames=v.max_frames, size=tuple(s.size), num_objects=s.num_objects
                )
                videos.append(ArrayVideo(f"val{k:03d}", np.asarray(clip.frames), np.asarray(clip.masks)))
    return list(videos)[: v.max_sequences]
