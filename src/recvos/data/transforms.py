"""Joint clip transforms: one random draw per clip (consistent across frames) plus a small per-frame jitter.

Frames and masks go through the same affine warp (frames bilinear, masks nearest), built as one 3x3 matrix
per frame: zoom so the frame covers the training size, random crop, flip, rotation, shear, translation; then
a small per-frame affine (the model sees motion even on still clips). Colour jitter (brightness, contrast,
saturation, hue) is drawn once per clip. Masks may come at a different size than the frames (the shared
DAVIS-2016 copy has 240p frames and 480p masks); the warp maps them onto the frame grid directly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np


def translation(tx: float, ty: float) -> np.ndarray:
    """The 3x3 homogeneous matrix of a translation by (tx, ty) pixels."""
    return np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]], dtype=np.float64)


def scaling(sx: float, sy: float) -> np.ndarray:
    """The 3x3 homogeneous matrix of a scaling by (sx, sy) about the origin."""
    return np.array([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], dtype=np.float64)


def _rotate(deg: float) -> np.ndarray:
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=np.float64)


def _shear(deg: float) -> np.ndarray:
    return np.array([[1, math.tan(math.radians(deg)), 0], [0, 1, 0], [0, 0, 1]], dtype=np.float64)


def _grid_map(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> np.ndarray:
    """Pixel-centre-aligned scaling from one grid to another (e.g. 480p mask grid -> 240p frame grid)."""
    sy, sx = dst_hw[0] / src_hw[0], dst_hw[1] / src_hw[1]
    return translation(0.5 * sx - 0.5, 0.5 * sy - 0.5) @ scaling(sx, sy)


def warp_clip(
    frames: np.ndarray,
    ids: np.ndarray | None,
    matrices: Sequence[np.ndarray],
    size: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray | None]:
    """Warp every frame t with ``matrices[t]`` (3x3, frame pixel coords -> output pixel coords).

    frames uint8 [T, H, W, 3]; ids int [T, Hm, Wm] object-id maps (any size; mapped onto the frame grid) or
    None -> (uint8 [T, h, w, 3], int64 [T, h, w]) with ``size = (h, w)``. Outside the source is 0.
    """
    h, w = size
    T, H, W = frames.shape[:3]
    out_f = np.empty((T, h, w, 3), dtype=np.uint8)
    out_m = None
    if ids is not None:
        out_m = np.empty((T, h, w), dtype=np.int64)
        to_frame = _grid_map(ids.shape[1:3], (H, W))
        if ids.max(initial=0) >= 65536 or ids.min(initial=0) < 0:
            raise ValueError("object ids must lie in [0, 65535]")
        ids16 = ids.astype(np.uint16)
    for t in range(T):
        m = matrices[t]
        out_f[t] = cv2.warpAffine(
            frames[t], m[:2], (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
        )
        if out_m is not None:
            mm = (m @ to_frame)[:2]
            out_m[t] = cv2.warpAffine(
                ids16[t], mm, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0
            )
    return out_f, out_m


def resize_clip(
    frames: np.ndarray, ids: np.ndarray | None, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray | None]:
    """Deterministic resize (stretch) of frames [T,H,W,3] and id maps [T,Hm,Wm] to ``size`` (validation)."""
    T, H, W = frames.shape[:3]
    m = _grid_map((H, W), size)
    return warp_clip(frames, ids, [m] * T, size)


class ClipTransform:
    """Random joint augmentation of a clip to the training ``size`` (H, W), drawn from a numpy Generator.

    Without augmentation (``enabled=False``) it resizes deterministically. Angles are in degrees, shifts are
    fractions of the output size, colour strengths as in torchvision's ColorJitter (hue: fraction of the circle).
    """

    def __init__(
        self,
        size: Sequence[int],
        *,
        enabled: bool = True,
        scale: Sequence[float] = (0.9, 1.3),
        hflip: float = 0.5,
        rotate: float = 10.0,
        shear: float = 5.0,
        translate: float = 0.1,
        brightness: float = 0.2,
        contrast: float = 0.2,
        saturation: float = 0.2,
        hue: float = 0.02,
        jitter_translate: float = 0.02,
        jitter_rotate: float = 2.0,
        jitter_scale: float = 0.03,
    ) -> None:
        self.size = (int(size[0]), int(size[1]))
        self.enabled = enabled
        self.scale = (float(scale[0]), float(scale[1]))
        self.hflip, self.rotate, self.shear, self.translate = hflip, rotate, shear, translate
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue
        self.jitter_translate, self.jitter_rotate, self.jitter_scale = (
            jitter_translate,
            jitter_rotate,
            jitter_scale,
        )

    def matrices(
        self, src_hw: tuple[int, int], num_frames: int, rng: np.random.Generator
    ) -> list[np.ndarray]:
        """One 3x3 matrix per frame: the clip draw composed with a per-frame jitter."""
        H, W = src_hw
        h, w = self.size
        if not self.enabled:
            return [_grid_map((H, W), (h, w))] * num_frames
        cover = max(h / H, w / W)
        s = cover * rng.uniform(*self.scale)
        # random crop: the scaled frame can slide by its excess over the output, plus an extra translation
        ex_x = max(0.0, (s * W - w) / 2)
        ex_y = max(0.0, (s * H - h) / 2)
        off_x = rng.uniform(-ex_x, ex_x) + rng.uniform(-1, 1) * self.translate * w
        off_y = rng.uniform(-ex_y, ex_y) + rng.uniform(-1, 1) * self.translate * h
        flip = -1.0 if rng.random() < self.hflip else 1.0
        rot = rng.uniform(-1, 1) * self.rotate
        sh = rng.uniform(-1, 1) * self.shear
        out_c = ((w - 1) / 2, (h - 1) / 2)
        base = (
            translation(out_c[0] + off_x, out_c[1] + off_y)
            @ _rotate(rot)
            @ _shear(sh)
            @ scaling(s * flip, s)
            @ translation(-(W - 1) / 2, -(H - 1) / 2)
        )
        mats = []
        for _ in range(num_frames):
            jt = rng.uniform(-1, 1, size=2) * self.jitter_translate * np.array([w, h])
            jr = rng.uniform(-1, 1) * self.jitter_rotate
            js = 1.0 + rng.uniform(-1, 1) * self.jitter_scale
            jit = (
                translation(out_c[0] + jt[0], out_c[1] + jt[1])
                @ _rotate(jr)
                @ scaling(js, js)
                @ translation(-out_c[0], -out_c[1])
            )
            mats.append(jit @ base)
        return mats

    def colour(self, frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Brightness, contrast, saturation, hue with one draw for the clip: uint8 [T,H,W,3] -> same."""
        if not self.enabled:
            return frames
        b = rng.uniform(1 - self.brightness, 1 + self.brightness)
        c = rng.uniform(1 - self.contrast, 1 + self.contrast)
        sat = rng.uniform(1 - self.saturation, 1 + self.saturation)
        hue = rng.uniform(-self.hue, self.hue)
        x = frames.astype(np.float32) * b
        gray = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # [T, H, W]
        mean = gray.mean(axis=(1, 2), keepdims=True)[..., None]
        x = (x - mean) * c + mean
        gray = (x @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]
        x = (x - gray) * sat + gray
        out = np.clip(x, 0, 255).astype(np.uint8)
        if abs(hue) * 180 >= 0.5:
            shift = int(round(hue * 180))
            for t in range(out.shape[0]):
                hsv = cv2.cvtColor(out[t], cv2.COLOR_RGB2HSV)
                hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + shift) % 180).astype(np.uint8)
                out[t] = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        return out

    def __call__(
        self, frames: np.ndarray, ids: np.ndarray | None, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """frames uint8 [T,H,W,3], ids int [T,Hm,Wm] or None -> (uint8 [T,h,w,3], int64 [T,h,w] or None)."""
        mats = self.matrices(frames.shape[1:3], frames.shape[0], rng)
        f, m = warp_clip(frames, ids, mats, self.size)
        return self.colour(f, rng), m
