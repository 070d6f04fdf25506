"""Pseudo-videos from still annotated images: the static-image pre-training stage of STM/XMem, for the
masks we hold (every annotated frame of the training videos, multi-object first frames of other sets).

A pseudo clip moves a background image with a slow camera (zoom, pan, small rotation) and pastes 1..N
objects cut out of other images (or of the same one) along their own trajectories (drift, growth, turn),
in a random depth order, so objects occlude each other and enter or leave partly. The background image's
own objects move with the camera and stay objects. With probability ``distractor`` a second copy of an
object is pasted elsewhere *without* a label: a distractor of the same kind, which the model must not
follow. Ids are renumbered 1..K; objects that end up (almost) invisible on every frame are dropped.
Every random choice comes from the caller's generator, so a clip is a pure function of its seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from recvos.data.masks import VOID_ID, object_ids, resize_ids
from recvos.data.transforms import scaling, translation, warp_clip

__all__ = ["StillImage", "pseudo_clip", "stills_from_video"]

#: an object must cover this fraction of the frame on some frame to be kept as a labelled object
MIN_AREA = 0.002


@dataclass
class StillImage:
    """An annotated image: uint8 RGB [H, W, 3] and its id map at the same size (0 background)."""

    frame: np.ndarray
    ids: np.ndarray
    name: str = ""


def stills_from_video(video, every: int = 5) -> list[StillImage]:
    """Every ``every``-th annotated frame of a video (``recvos.data.datasets.VideoSequence``/ArrayVideo), with
    its mask brought to the frame's size and void set to background."""
    out = []
    for i in video.annotated_indices[::every]:
        frame = np.asarray(video.load_frame(i))
        ids = resize_ids(np.asarray(video.load_mask(i)), frame.shape[:2])
        ids[ids == VOID_ID] = 0
        if object_ids(ids):
            out.append(StillImage(frame, ids.astype(np.uint8), f"{video.name}:{i}"))
    return out


def _rotation(deg: float) -> np.ndarray:
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=np.float64)


def _track(
    rng: np.random.Generator, T: int, centre: np.ndarray, scale: float, speed: float, size: tuple[int, int]
) -> list[np.ndarray]:
    """T matrices (source centred at the origin -> output pixels) of a smooth random trajectory."""
    h, w = size
    velocity = rng.normal(0, speed, 2) * np.array([w, h])
    growth = rng.normal(0, 0.02)
    turn = rng.normal(0, 1.5)
    flip = -1.0 if rng.random() < 0.5 else 1.0
    out = []
    for t in range(T):
        c = centre + velocity * t
        s = scale * (1 + growth) ** t
        out.append(translation(c[0], c[1]) @ _rotation(turn * t) @ scaling(s * flip, s))
    return out


def pseudo_clip(
    stills: Sequence[StillImage],
    rng: np.random.Generator,
    num_frames: int,
    *,
    max_pasted: int = 2,
    scale: tuple[float, float] = (0.3, 0.8),
    distractor: float = 0.3,
) -> tuple[np.ndarray, np.ndarray]:
    """One pseudo clip: frames uint8 [T, H, W, 3] and ids int64 [T, H, W] (objects 1..K), at the size of the
    background image drawn from ``stills``."""
    T = num_frames
    bg = stills[int(rng.integers(len(stills)))]
    H, W = bg.frame.shape[:2]
    centre = np.array([(W - 1) / 2, (H - 1) / 2])
    # the camera: zoomed in a little so that panning never shows the border
    cam = _track(rng, T, centre, rng.uniform(1.05, 1.2), 0.004, (H, W))
    cam = [m @ translation(-(W - 1) / 2, -(H - 1) / 2) for m in cam]
    frames, ids = warp_clip(
        np.repeat(bg.frame[None], T, 0), np.repeat(bg.ids[None].astype(np.int64), T, 0), cam, (H, W)
    )
    next_id = int(ids.max(initial=0)) + 1
    for _ in range(int(rng.integers(1, max_pasted + 1))):
        donor = stills[int(rng.integers(len(stills)))]
        objs = object_ids(donor.ids)
        if not objs:
            continue
        obj = objs[int(rng.integers(len(objs)))]
        ys, xs = np.nonzero(donor.ids == obj)
        h, w = donor.frame.shape[:2]
        extent = max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)
        s = rng.uniform(*scale) * min(H, W) / extent  # object size relative to the frame
        copies = 2 if rng.random() < distractor else 1
        for copy in range(copies):
            start = rng.uniform(0.15, 0.85, 2) * np.array([W, H])
            track = _track(rng, T, start, s * rng.uniform(0.85, 1.15), 0.01, (H, W))
            to_centre = translation(-(xs.min() + xs.max()) / 2, -(ys.min() + ys.max()) / 2)
            mats = [m @ to_centre for m in track]
            pf, pm = warp_clip(
                np.repeat(donor.frame[None], T, 0),
                np.repeat((donor.ids == obj)[None].astype(np.int64), T, 0),
                mats,
                (H, W),
            )
            sel = pm > 0
            frames[sel] = pf[sel]
            ids[sel] = next_id if copy == 0 else 0  # the second copy is an unlabelled distractor
        next_id += 1
    # renumber 1..K, dropping objects (almost) invisible on every frame
    keep = [o for o in object_ids(ids) if (ids == o).mean(axis=(1, 2)).max() >= MIN_AREA]
    out = np.zeros_like(ids)
    for k, o in enumerate(keep, start=1):
        out[ids == o] = k
    return frames, out
