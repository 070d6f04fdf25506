"""Clip sampling for training: a torch Dataset of short clips from real videos, composites and synthetic videos.

Clip format (one item; the default collate stacks them into a batch with a leading B axis):

- ``"frames"``: float [T, 3, H, W] RGB in [0, 1] at the training size.
- ``"masks"``: float [T, O, H, W] {0, 1}; O = ``max_objects`` (slots without an object are all zero).
- ``"valid"``: bool [T, O] — frame t is annotated and object o has already appeared in the clip (the loss
  looks only there). An object that first appears mid-clip is not valid before that frame.
- ``"present"``: bool [O] — slot o holds a real object.
- ``"annotated"``: bool [T] — frame t has a ground-truth mask (YouTube-VOS annotates every 5th frame).
- ``"name"``: str — "<source>:<video>[+<donor>...]@<first frame>".
- ``"clip_id"``: int — the sampler key the clip was drawn from.

Every random choice of a clip (source, video, frames, objects, composite, augmentation) comes from
``numpy.random.default_rng([seed, clip_id, attempt])``, so a clip is a pure function of its key: data
order and content do not depend on workers or on resuming. :class:`ClipSampler` (a DistributedSampler)
yields :class:`ClipKey` items; their ``clip_id`` encodes the epoch, and T is drawn once per batch so a
batch always stacks (S2S trains on T in 5-11).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from recvos.data.composite import paste_objects
from recvos.data.masks import first_appearance, object_ids, present_ids, resize_ids
from recvos.data.pseudo import StillImage, pseudo_clip, stills_from_video
from recvos.data.synthetic import synthetic_clip
from recvos.data.transforms import ClipTransform
from recvos.errors import RecvosError

log = logging.getLogger(__name__)

#: draws of a clip before giving up on finding one with a visible object
MAX_ATTEMPTS = 12


@dataclass
class SourceMix:
    """Relative frequencies of the clip sources (normalised; a source with no data must have 0)."""

    real: float = 1.0
    composite: float = 0.0
    synthetic: float = 0.0
    #: pseudo-videos made from still annotated frames (:mod:`recvos.data.pseudo`)
    pseudo: float = 0.0


@dataclass
class SyntheticOptions:
    #: number of distinct synthetic videos (seeds 0..pool-1, offset by the dataset seed)
    pool: int = 64
    num_frames: int = 16
    size: list[int] = field(default_factory=lambda: [96, 128])
    num_objects: int = 2


@dataclass
class CompositeOptions:
    #: objects pasted onto a base video (uniform in [min_pasted, max_pasted])
    min_pasted: int = 1
    max_pasted: int = 2
    #: size of a pasted object relative to its donor video, and the max offset as a fraction of the frame
    scale: list[float] = field(default_factory=lambda: [0.4, 0.9])
    max_offset: float = 0.35


@dataclass
class PseudoOptions:
    #: stills: every k-th annotated frame of each training video, plus the annotated frames of these
    #: extra datasets (folders of JPEGImages/ + Annotations/, read as ``kind=folder``)
    every: int = 5
    roots: list[str] = field(default_factory=list)
    #: objects pasted per clip (1..max_pasted), their size relative to the frame, and the chance of an
    #: unlabelled copy of an object (a distractor of the same kind)
    max_pasted: int = 2
    scale: list[float] = field(default_factory=lambda: [0.3, 0.8])
    distractor: float = 0.3


class ClipKey(NamedTuple):
    """What the sampler asks the dataset for: a clip id, its length T and the frame mode."""

    clip_id: int
    num_frames: int
    frames: str = "all"  # "all" or "annotated"


class Video(Protocol):
    """What clip sampling needs from a video (``recvos.data.datasets.VideoSequence`` and :class:`ArrayVideo`)."""

    name: str
    frame_paths: Sequence[Any]

    def load_frame(self, i: int) -> np.ndarray: ...

    def load_mask(self, i: int) -> np.ndarray | None: ...

    @property
    def annotated_indices(self) -> list[int]: ...


@dataclass
class ArrayVideo:
    """An in-memory video (synthetic clips): frames uint8 [T, H, W, 3], masks int [T, H, W] (all annotated)."""

    name: str
    frames: np.ndarray
    masks: np.ndarray

    @property
    def frame_paths(self) -> list[int]:
        return list(range(len(self.frames)))

    def load_frame(self, i: int) -> np.ndarray:
        return self.frames[i]

    def load_mask(self, i: int) -> np.ndarray | None:
        return self.masks[i]

    @property
    def annotated_indices(self) -> list[int]:
        return list(range(len(self.frames)))

    @property
    def object_ids(self) -> list[int]:
        return present_ids(self.masks)

    @property
    def first_frame(self) -> dict[int, int]:
        """Each object id -> the index of the first frame where it is visible."""
        return first_appearance(self.masks)

    @property
    def mask_size(self) -> tuple[int, int]:
        return (int(self.masks.shape[1]), int(self.masks.shape[2]))


def _num_frames(video: Video) -> int:
    return len(video.frame_paths)


def _object_ids(video: Video) -> list[int]:
    return list(getattr(video, "object_ids", []) or [])


def sample_window(
    num_frames: int, annotated: Sequence[int], T: int, max_stride: int, mode: str, rng: np.random.Generator
) -> np.ndarray | None:
    """Frame indices [T] of a clip, starting on an annotated frame, or None if the video is too short.

    mode "all": frames ``start + k * stride`` (stride uniform in [1, max_stride], lowered to fit);
    mode "annotated": T annotated frames taken with a stride over the annotated indices.
    """
    ann = np.asarray(sorted(annotated), dtype=np.int64)
    if ann.size == 0:
        return None
    if mode == "annotated":
        if ann.size < T:
            return None
        stride = int(rng.integers(1, max_stride + 1))
        stride = max(1, min(stride, (ann.size - 1) // max(T - 1, 1)))
        start = int(rng.integers(0, ann.size - (T - 1) * stride))
        return ann[start + stride * np.arange(T)]
    if num_frames < T:
        return None
    stride = int(rng.integers(1, max_stride + 1))
    stride = max(1, min(stride, (num_frames - 1) // max(T - 1, 1)))
    starts = ann[ann + (T - 1) * stride < num_frames]
    if starts.size == 0:
        return None
    start = int(rng.choice(starts))
    return start + stride * np.arange(T)


def load_window(video: Video, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames uint8 [T, H, W, 3], id maps int64 [T, H, W] on the frame grid (0 where not annotated), annotated [T]."""
    frames = np.stack([np.asarray(video.load_frame(int(i))) for i in indices])
    H, W = frames.shape[1:3]
    ids = np.zeros((len(indices), H, W), dtype=np.int64)
    annotated = np.zeros(len(indices), dtype=bool)
    for t, i in enumerate(indices):
        m = video.load_mask(int(i))
        if m is None:
            continue
        ids[t] = resize_ids(m, (H, W))
        annotated[t] = True
    return frames, ids, annotated


def clip_to_tensors(
    frames: np.ndarray, ids: np.ndarray, annotated: np.ndarray, object_ids: Sequence[int], max_objects: int
) -> dict[str, Any]:
    """Build the clip dict (see the module docstring) from uint8 frames, id maps and the chosen object ids."""
    T, H, W = ids.shape
    n_slots = max_objects
    masks = np.zeros((T, n_slots, H, W), dtype=np.float32)
    valid = np.zeros((T, n_slots), dtype=bool)
    present = np.zeros(n_slots, dtype=bool)
    for o, oid in enumerate(list(object_ids)[:n_slots]):
        m = ids == oid
        masks[:, o] = m
        present[o] = True
        visible = annotated & m.reshape(T, -1).any(1)
        if visible.any():
            valid[int(np.argmax(visible)) :, o] = True
    valid &= annotated[:, None]
    return {
        "frames": torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255.0),
        "masks": torch.from_numpy(masks),
        "valid": torch.from_numpy(valid),
        "present": torch.from_numpy(present),
        "annotated": torch.from_numpy(annotated.copy()),
    }


class ClipDataset(Dataset):
    """Random training clips from a mixture of sources, indexed by :class:`ClipKey` (or a plain int).

    videos: real sequences (a ``VOSDataset`` or list of ``VideoSequence``), may be None/empty when only
    synthetic clips are used. mix: relative weights of "real", "composite" (objects from other videos pasted
    onto a real video, see :mod:`recvos.data.composite`) and "synthetic" clips. ``length`` is the number of
    clips per sampler epoch.
    """

    def __init__(
        self,
        videos: Sequence[Video] | None,
        *,
        size: Sequence[int] = (240, 427),
        num_frames: int = 5,
        num_frames_max: int | None = None,
        max_stride: int = 1,
        max_objects: int = 1,
        frames: str = "all",
        transform: ClipTransform | None = None,
        mix: SourceMix | None = None,
        synthetic: SyntheticOptions | None = None,
        composite: CompositeOptions | None = None,
        pseudo: PseudoOptions | None = None,
        stills: Sequence[StillImage] | None = None,
        length: int = 2000,
        seed: int = 0,
        source_name: str = "dataset",
    ) -> None:
        self.size = (int(size[0]), int(size[1]))
        self.num_frames = num_frames
        self.num_frames_max = num_frames_max or num_frames
        self.max_stride = max_stride
        self.max_objects = max_objects
        self.frames_mode = frames
        self.transform = transform or ClipTransform(self.size, enabled=False)
        self.length = length
        self.seed = seed
        self.synthetic_opts = synthetic or SyntheticOptions()
        self.composite_opts = composite or CompositeOptions()
        self.pseudo_opts = pseudo or PseudoOptions()
        self._extra_stills = list(stills or [])
        self._stills: list[StillImage] | None = None
        mix = mix or SourceMix()
        self.videos = list(videos) if videos is not None else []
        if self.videos and self.num_frames_max < 1:
            raise RecvosError("data.num_frames must be >= 1")
        self._synthetic_cache: dict[int, ArrayVideo] = {}
        self._cands: dict[tuple[int, str], list[int]] = {}
        if mix.real > 0 or mix.composite > 0 or (mix.pseudo > 0 and self.videos):
            if not self.videos:
                raise RecvosError(
                    f"{source_name}: no training videos, but data.mix.real/composite > 0; set data.kind and data.root, "
                    "or data.mix.real=0 data.mix.composite=0 data.mix.synthetic=1"
                )
            self.usable = self._usable_videos(source_name)
        else:
            self.usable = []
        if mix.synthetic > 0 and self.synthetic_opts.num_frames < self.num_frames_max:
            raise RecvosError(
                f"data.synthetic.num_frames={self.synthetic_opts.num_frames} is shorter than the clip length "
                f"{self.num_frames_max}; raise data.synthetic.num_frames or lower data.num_frames"
            )
        if mix.pseudo > 0 and not self.videos and not self._extra_stills:
            raise RecvosError(
                f"{source_name}: data.mix.pseudo > 0 needs training videos or data.pseudo.roots with annotated frames"
            )
        weights = {k: float(getattr(mix, k)) for k in ("real", "composite", "synthetic", "pseudo")}
        names = [k for k, w in weights.items() if w > 0]
        total = sum(weights[k] for k in names)
        self.sources = names
        self.source_p = np.array([weights[k] / total for k in names])

    # -- sources -----------------------------------------------------------------------------------------
    def _usable_videos(self, source_name: str) -> list[int]:
        """Indices of videos long enough for the longest clip and with annotated objects; RecvosError if none."""
        T = self.num_frames_max
        usable, longest, with_objects = [], 0, 0
        for i, v in enumerate(self.videos):
            n_ann = len(v.annotated_indices)
            n = n_ann if self.frames_mode == "annotated" else _num_frames(v)
            has_objects = isinstance(v, ArrayVideo) or bool(_object_ids(v))
            if n_ann == 0 or not has_objects:
                continue
            with_objects += 1
            longest = max(longest, n)
            if n >= T:
                usable.append(i)
        if not usable:
            if with_objects == 0:
                raise RecvosError(
                    f"{source_name}: no sequence has annotated objects (all masks empty or missing); check its Annotations/ folder"
                )
            what = "annotated frames" if self.frames_mode == "annotated" else "frames"
            raise RecvosError(
                f"{source_name}: no sequence has {T} {what} (the longest has {longest}); lower data.num_frames"
                f"{'/data.num_frames_max' if self.num_frames_max != self.num_frames else ''}"
            )
        if len(usable) < len(self.videos):
            log.info(
                "%s: %d of %d sequences usable for clips of %d frames",
                source_name,
                len(usable),
                len(self.videos),
                T,
            )
        return usable

    def synthetic_video(self, k: int) -> ArrayVideo:
        """Synthetic video k of the pool (generated once per process, seeded by (seed, k))."""
        if k not in self._synthetic_cache:
            o = self.synthetic_opts
            seed = int(np.random.SeedSequence([self.seed, 7919, k]).generate_state(1)[0])
            clip = synthetic_clip(
                seed,
                num_frames=int(o.num_frames),
                size=tuple(o.size),
                num_objects=int(o.num_objects),
            )
            self._synthetic_cache[k] = ArrayVideo(
                f"synthetic{k:04d}", np.asarray(clip.frames), np.asarray(clip.masks)
            )
        return self._synthetic_cache[k]

    def _candidates(self, T: int, mode: str) -> list[int]:
        """Usable videos with at least T frames (mode "all") or T annotated frames (mode "annotated")."""
        key = (T, mode)
        if key not in self._cands:
            n = (lambda v: len(v.annotated_indices)) if mode == "annotated" else _num_frames
            self._cands[key] = [i for i in self.usable if n(self.videos[i]) >= T]
            if not self._cands[key]:
                what = "annotated frames" if mode == "annotated" else "frames"
                raise RecvosError(
                    f"no training sequence has {T} {what}; lower data.num_frames/data.num_frames_max"
                )
        return self._cands[key]

    def _pick_video(
        self, rng: np.random.Generator, T: int, mode: str, exclude: int | None = None
    ) -> tuple[Video, np.ndarray, int]:
        """A real video with a window of T frames: (video, frame indices, video index)."""
        cands = self._candidates(T, mode)
        for _ in range(MAX_ATTEMPTS):
            vi = int(cands[int(rng.integers(len(cands)))])
            if vi == exclude and len(cands) > 1:
                continue
            v = self.videos[vi]
            idx = sample_window(_num_frames(v), v.annotated_indices, T, self.max_stride, mode, rng)
            if idx is not None:
                return v, idx, vi
        raise RecvosError(
            f"no training sequence has a window of {T} frames starting on an annotated frame; lower data.num_frames"
        )

    def stills(self) -> list[StillImage]:
        """The still annotated frames pseudo-videos are made from (read once per process)."""
        if self._stills is None:
            every = max(1, int(self.pseudo_opts.every))
            self._stills = [s for i in self.usable for s in stills_from_video(self.videos[i], every)]
            self._stills += self._extra_stills
            if not self._stills:
                raise RecvosError(
                    "data.mix.pseudo > 0 but no annotated frame with an object was found for it"
                )
        return self._stills

    def _pick_synthetic(self, rng: np.random.Generator, T: int) -> tuple[ArrayVideo, np.ndarray]:
        v = self.synthetic_video(int(rng.integers(int(self.synthetic_opts.pool))))
        idx = sample_window(_num_frames(v), v.annotated_indices, T, self.max_stride, "all", rng)
        assert idx is not None  # checked in __init__
        return v, idx

    def _draw(self, key: ClipKey, attempt: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, str, list[int]]:
        """One random clip: frames [T,h,w,3], ids [T,h,w], annotated [T], name, chosen object ids."""
        rng = np.random.default_rng([self.seed, key.clip_id, attempt])
        source = self.sources[int(rng.choice(len(self.sources), p=self.source_p))]
        T = key.num_frames
        if source == "synthetic":
            v, idx = self._pick_synthetic(rng, T)
            frames, ids, annotated = load_window(v, idx)
            name = f"synthetic:{v.name}@{int(idx[0])}"
        elif source == "pseudo":
            o = self.pseudo_opts
            frames, ids = pseudo_clip(
                self.stills(),
                rng,
                T,
                max_pasted=int(o.max_pasted),
                scale=tuple(o.scale),
                distractor=float(o.distractor),
            )
            annotated = np.ones(T, dtype=bool)
            name = "pseudo"
        else:
            v, idx, vi = self._pick_video(rng, T, key.frames)
            frames, ids, annotated = load_window(v, idx)
            name = f"{source}:{v.name}@{int(idx[0])}"
            if source == "composite":
                o = self.composite_opts
                n = int(rng.integers(int(o.min_pasted), int(o.max_pasted) + 1))
                donors = []
                for _ in range(n):
                    dv, didx, _ = self._pick_video(rng, T, key.frames, exclude=vi)
                    donors.append(load_window(dv, didx))
                    name += f"+{dv.name}"
                frames, ids, annotated = paste_objects(
                    frames,
                    ids,
                    annotated,
                    donors,
                    rng,
                    scale=tuple(o.scale),
                    max_offset=float(o.max_offset),
                )
        # objects visible somewhere in the clip's annotated frames; keep a random subset of at most O
        visible = object_ids(ids[annotated])
        if len(visible) > self.max_objects:
            visible = sorted(int(i) for i in rng.choice(visible, self.max_objects, replace=False))
        frames, ids = self.transform(frames, ids, rng)
        return frames, ids, annotated, name, visible

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key: ClipKey | int) -> dict[str, Any]:
        if not isinstance(key, ClipKey):
            key = ClipKey(int(key), self.num_frames, self.frames_mode)
        for attempt in range(MAX_ATTEMPTS):
            frames, ids, annotated, name, objects = self._draw(key, attempt)
            if objects and any((ids[annotated] == o).any() for o in objects):
                item = clip_to_tensors(frames, ids, annotated, objects, self.max_objects)
                item["name"] = name
                item["clip_id"] = key.clip_id
                return item
        raise RecvosError(
            f"clip {key.clip_id}: {MAX_ATTEMPTS} draws gave no visible object (masks empty, or augmentation crops "
            "them away); check the Annotations of the training set or reduce augment.scale/translate"
        )


class ClipSampler(DistributedSampler):
    """Endless, resumable sampler of :class:`ClipKey` for one process of a (possibly distributed) run.

    Each epoch is a DistributedSampler permutation of ``range(len(dataset))`` (seeded by seed + epoch, sharded
    by rank); keys get ``clip_id = epoch * len(dataset) + index``. Batches of ``batch_size`` share one T drawn
    from (seed, micro-batch) — identical on every rank. ``start_batch`` is the micro-batch to resume from
    (the data-sampler position saved in checkpoints). ``annotated_until_step``: clips of annotated frames
    only before that optimizer step (S2S curriculum), ``frames`` after.
    """

    def __init__(
        self,
        dataset: ClipDataset,
        *,
        batch_size: int,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        start_batch: int = 0,
        accumulate: int = 1,
        num_frames: int = 5,
        num_frames_max: int | None = None,
        frames: str = "all",
        annotated_until_step: int | None = None,
    ) -> None:
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self.batch_size = batch_size
        self.start_batch = start_batch
        self.accumulate = accumulate
        self.num_frames_min = num_frames
        self.num_frames_max = num_frames_max or num_frames
        self.frames = frames
        self.annotated_until_step = annotated_until_step
        self.batches_per_epoch = self.num_samples // batch_size
        if self.batches_per_epoch < 1:
            raise RecvosError(
                f"data.clips_per_epoch={len(dataset)} gives less than one batch of {batch_size} per process; raise it"
            )

    def frames_mode(self, micro_batch: int) -> str:
        step = micro_batch // self.accumulate
        if self.annotated_until_step is not None and step < self.annotated_until_step:
            return "annotated"
        return self.frames

    def clip_length(self, micro_batch: int) -> int:
        if self.num_frames_max == self.num_frames_min:
            return self.num_frames_min
        rng = np.random.default_rng([self.seed, 104729, micro_batch])
        return int(rng.integers(self.num_frames_min, self.num_frames_max + 1))

    def __len__(self) -> int:  # one epoch; iteration itself is endless
        return self.batches_per_epoch * self.batch_size

    def __iter__(self) -> Iterator[ClipKey]:
        m = self.start_batch
        n = len(self.dataset)
        while True:
            epoch = m // self.batches_per_epoch
            self.set_epoch(epoch)
            indices = list(super().__iter__())
            for b in range(m % self.batches_per_epoch, self.batches_per_epoch):
                T = self.clip_length(m)
                mode = self.frames_mode(m)
                for i in indices[b * self.batch_size : (b + 1) * self.batch_size]:
                    yield ClipKey(epoch * n + int(i), T, mode)
                m += 1


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed numpy and random from the worker's torch seed."""
    import random

    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)
