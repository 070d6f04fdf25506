"""Synthetic multi-object videos with exact ground truth: the default data of tests and smoke runs.

Each clip is drawn from a seed alone (numpy + cv2, deterministic): textured shapes (ellipses, rectangles,
polygons, each with its own pattern and colours) over a textured background that pans slowly. Objects
move with their own velocity, scale and rotate over time, occlude each other in a fixed z-order (the masks
show only what is visible) and bounce inside a box larger than the frame, so they can leave the frame and
come back. Every object is well visible in frame 0, so clips suit semi-supervised training.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from recvos.data.masks import write_mask
from recvos.errors import RecvosError
from recvos.fileio import atomic_path, atomic_write

log = logging.getLogger(__name__)

__all__ = [
    "SyntheticClip",
    "synthetic_clip",
    "video_seed",
    "write_synthetic_dataset",
    "write_synthetic_video",
]

#: An object must show at least this fraction of its area in frame 0 (resampled otherwise).
_MIN_VISIBLE_FIRST = 0.5
_MAX_TRIES = 30


@dataclass
class SyntheticClip:
    """frames uint8 RGB [T, H, W, 3]; masks int64 [T, H, W] (0 background, 1..num_objects objects).

    ``amodal`` (only when asked for) is bool [T, O, H, W]: each object's full silhouette, occluded or not.
    """

    frames: np.ndarray
    masks: np.ndarray
    num_objects: int
    amodal: np.ndarray | None = None

    @property
    def object_ids(self) -> list[int]:
        return list(range(1, self.num_objects + 1))

    def __len__(self) -> int:
        return int(self.frames.shape[0])


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random colour pattern uint8 [h, w, 3]: stripes, checks, smooth blobs or a gradient, plus noise."""
    c1 = rng.uniform(0, 255, 3)
    c2 = rng.uniform(0, 255, 3)
    kind = int(rng.integers(4))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == 0:  # stripes
        theta = rng.uniform(0, np.pi)
        period = rng.uniform(4, 16)
        u = xx * np.cos(theta) + yy * np.sin(theta)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * u / period + rng.uniform(0, 2 * np.pi))
    elif kind == 1:  # checks
        p = rng.uniform(4, 14)
        t = ((np.floor(xx / p) + np.floor(yy / p)) % 2).astype(np.float32)
    elif kind == 2:  # smooth blobs
        low = rng.uniform(0, 1, (max(2, h // 8), max(2, w // 8))).astype(np.float32)
        t = np.clip(cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC), 0, 1)
    else:  # gradient
        theta = rng.uniform(0, 2 * np.pi)
        u = xx * np.cos(theta) + yy * np.sin(theta)
        t = (u - u.min()) / max(float(u.max() - u.min()), 1.0)
    img = c1[None, None] * (1 - t[..., None]) + c2[None, None] * t[..., None]
    img += rng.normal(0, 6, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _shape_mask(rng: np.random.Generator, patch: int, r: float) -> np.ndarray:
    """A filled ellipse, rectangle or polygon of radius about r centred in a patch; uint8 [patch, patch]."""
    m = np.zeros((patch, patch), np.uint8)
    c = patch / 2.0
    kind = int(rng.integers(3))
    aspect = rng.uniform(0.5, 1.0)
    if kind == 0:
        cv2.ellipse(m, (round(c), round(c)), (max(2, round(r)), max(2, round(r * aspect))), 0, 0, 360, 1, -1)
    elif kind == 1:
        a, b = r * 0.85, r * 0.85 * aspect
        pts = np.array([[c - a, c - b], [c + a, c - b], [c + a, c + b], [c - a, c + b]])
        cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 1)
    else:
        k = int(rng.integers(3, 9))
        ang = rng.uniform(0, 2 * np.pi) + 2 * np.pi * (np.arange(k) + rng.uniform(-0.3, 0.3, k)) / k
        rad = r * rng.uniform(0.55, 1.0, k)
        pts = np.stack([c + rad * np.cos(ang), c + rad * np.sin(ang)], 1)
        cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 1)
    if m.sum() < 0.25 * np.pi * r * r:  # too thin: fall back to a disc
        cv2.circle(m, (round(c), round(c)), max(2, round(r * 0.7)), 1, -1)
    return m


class _Object:
    """One moving shape: a texture and mask in a local patch, and its motion over time."""

    def __init__(self, rng: np.random.Generator, H: int, W: int) -> None:
        side = min(H, W)
        self.r = rng.uniform(0.12, 0.24) * side
        self.scale0 = 1.0
        self.scale_rate = rng.uniform(-0.04, 0.04)  # relative change per frame (exponential)
        self.patch = int(np.ceil(2 * self.r * 1.9)) + 4
        self.mask = _shape_mask(rng, self.patch, self.r)
        self.tex = _texture(rng, self.patch, self.patch)
        self.angle0 = rng.uniform(0, 360)
        self.spin = rng.uniform(-12, 12)  # degrees per frame
        speed = rng.uniform(0.015, 0.08) * max(H, W)
        d = rng.uniform(0, 2 * np.pi)
        self.vel = np.array([np.cos(d), np.sin(d)]) * speed
        # bounce box beyond the frame: a large margin lets the object leave completely and come back
        self.margin = rng.uniform(0.0, 2.5) * self.r
        self.H, self.W = H, W
        self.place(rng)

    def place(self, rng: np.random.Generator) -> None:
        self.pos0 = np.array([rng.uniform(0.15, 0.85) * self.W, rng.uniform(0.15, 0.85) * self.H])

    def state(self, t: int) -> tuple[np.ndarray, float, float]:
        """(centre x, y), angle (degrees), scale at frame t."""
        lo = np.array([-self.margin, -self.margin])
        hi = np.array([self.W + self.margin, self.H + self.margin])
        span = hi - lo
        raw = self.pos0 + self.vel * t - lo
        folded = np.mod(raw, 2 * span)
        pos = lo + np.where(folded > span, 2 * span - folded, folded)  # reflect at the box walls
        scale = float(np.clip(self.scale0 * np.exp(self.scale_rate * t), 0.6, 1.8))
        return pos, self.angle0 + self.spin * t, scale

    def render(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Texture uint8 [H, W, 3] and coverage bool [H, W] of the object at frame t."""
        pos, angle, scale = self.state(t)
        c = self.patch / 2.0
        M = cv2.getRotationMatrix2D((c, c), angle, scale)
        M[:, 2] += pos - c
        size = (self.W, self.H)
        m = cv2.warpAffine(self.mask, M, size, flags=cv2.INTER_NEAREST, borderValue=0).astype(bool)
        tex = cv2.warpAffine(self.tex, M, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        return tex, m


def synthetic_clip(
    seed: int,
    num_frames: int = 8,
    size: tuple[int, int] = (96, 128),
    num_objects: int = 2,
    *,
    amodal: bool = False,
) -> SyntheticClip:
    """A seeded synthetic clip: frames uint8 [T, H, W, 3], masks int64 [T, H, W] with ids 1..num_objects.

    The same arguments always give the same clip. Every object is visible in frame 0; later it may be
    occluded, leave the frame or come back. ``amodal=True`` also returns the unoccluded silhouettes.
    """
    T, (H, W), n_obj = int(num_frames), (int(size[0]), int(size[1])), int(num_objects)
    if T < 1 or H < 8 or W < 8 or n_obj < 0:
        raise ValueError(
            f"synthetic_clip needs num_frames >= 1, size >= 8x8, num_objects >= 0; got {T}, {size}, {n_obj}"
        )
    rng = np.random.default_rng(seed)
    pan_v = rng.uniform(-1.5, 1.5, 2)
    pan_v *= min(1.0, 0.25 * min(H, W) / max(float(np.abs(pan_v).max()) * T, 1e-6))  # bounded total pan
    pad = int(np.ceil(np.abs(pan_v).max() * T)) + 2
    bg = _texture(rng, H + 2 * pad, W + 2 * pad)
    blur = cv2.GaussianBlur(_texture(rng, H + 2 * pad, W + 2 * pad), (0, 0), 1.5)
    bg = cv2.addWeighted(bg, 0.6, blur, 0.4, 0)
    objects = [_Object(rng, H, W) for _ in range(n_obj)]  # list order = z-order (last on top)

    for _ in range(_MAX_TRIES):  # every object well visible in frame 0
        covered = [ob.render(0)[1] for ob in objects]
        ok = True
        for k, m in enumerate(covered):
            vis = m.copy()
            for above in covered[k + 1 :]:
                vis &= ~above
            # against the whole silhouette, so objects cut by the frame border count as hidden too
            area = float(objects[k].mask.sum()) * objects[k].state(0)[2] ** 2
            if vis.sum() < _MIN_VISIBLE_FIRST * area:
                ok = False
                objects[k].place(rng)
        if ok:
            break
    else:
        log.debug("synthetic_clip(seed=%s): objects overlap in frame 0 after %d tries", seed, _MAX_TRIES)

    frames = np.empty((T, H, W, 3), np.uint8)
    masks = np.zeros((T, H, W), np.int64)
    full = np.zeros((T, n_obj, H, W), bool) if amodal else None
    for t in range(T):
        ox, oy = np.round(pad + pan_v * t).astype(int)
        frame = bg[oy : oy + H, ox : ox + W].copy()
        ids = masks[t]
        for k, ob in enumerate(objects):
            tex, m = ob.render(t)
            frame[m] = tex[m]
            ids[m] = k + 1
            if full is not None:
                full[t, k] = m
        frames[t] = frame
    return SyntheticClip(frames, masks, n_obj, full)


def video_seed(seed: int, k: int) -> int:
    """The :func:`synthetic_clip` seed of video ``k`` of :func:`write_synthetic_dataset` with ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(k)]).generate_state(1)[0])


def write_synthetic_dataset(
    root: str | os.PathLike,
    num_videos: int = 3,
    seed: int = 0,
    num_frames: int = 8,
    size: tuple[int, int] = (96, 128),
    num_objects: int = 2,
) -> Path:
    """Write synthetic clips as a DAVIS-style tree and return ``root``.

    ``root/JPEGImages/<seq>/00000.png`` (lossless frames), ``root/Annotations/<seq>/00000.png`` (palette,
    every frame annotated), ``root/ImageSets/2017/{train,val}.txt`` (the last third of the videos, at least
    one, is val; the rest train). Readable by FolderDataset and DAVIS2017.
    """
    root = Path(root)
    names = [f"synthetic{k:03d}" for k in range(int(num_videos))]
    for k, name in enumerate(names):
        clip = synthetic_clip(video_seed(seed, k), num_frames, size, num_objects)
        fdir = root / "JPEGImages" / name
        mdir = root / "Annotations" / name
        fdir.mkdir(parents=True, exist_ok=True)
        mdir.mkdir(parents=True, exist_ok=True)
        for t in range(len(clip)):
            with atomic_write(fdir / f"{t:05d}.png") as f:
                Image.fromarray(clip.frames[t]).save(f, format="PNG", compress_level=1)
            write_mask(mdir / f"{t:05d}.png", clip.masks[t])
    n_val = max(1, len(names) // 3) if names else 0
    train, val = names[: len(names) - n_val], names[len(names) - n_val :]
    if not train:
        train = list(val)
    sets = root / "ImageSets" / "2017"
    for split, seqs in (("train", train), ("val", val)):
        with atomic_write(sets / f"{split}.txt", "w") as f:
            f.write("".join(f"{n}\n" for n in seqs))
    return root


def write_synthetic_video(
    path: str | os.PathLike,
    num_frames: int = 30,
    size: tuple[int, int] = (96, 128),
    fps: int = 10,
    seed: int = 0,
    *,
    num_objects: int = 2,
    masks_dir: str | os.PathLike | None = None,
) -> Path:
    """Write a synthetic clip as an H.264 mp4 (PyAV, libx264, yuv420p) and return ``path``.

    ``size`` (H, W) must be even (yuv420p). With ``masks_dir``, the ground truth masks are written there
    as palette PNGs named 00000.png, 00001.png, ...
    """
    import av

    path = Path(path)
    H, W = int(size[0]), int(size[1])
    if H % 2 or W % 2:
        raise RecvosError(f"{path}: H.264 (yuv420p) needs an even frame size, got {H}x{W}")
    clip = synthetic_clip(seed, num_frames, (H, W), num_objects)
    with (
        atomic_path(path, suffix=".mp4") as tmp,
        av.open(str(tmp), mode="w", format="mp4", options={"movflags": "faststart"}) as container,
    ):
        stream = container.add_stream("libx264", rate=int(fps))
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        for frame in clip.frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    if masks_dir is not None:
        for t in range(len(clip)):
            write_mask(Path(masks_dir) / f"{t:05d}.png", clip.masks[t])
    return path
