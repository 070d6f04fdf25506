"""What the segmenter accepts from a user, checked and brought to the sizes it works at: frames, prompt
masks (id maps, ``{obj_id: mask}`` dicts, PNG paths), and the processing size policy."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np
import torch

from recvos.data.masks import read_mask, resize_ids
from recvos.errors import RecvosError

log = logging.getLogger(__name__)

__all__ = [
    "MAX_OBJECT_ID",
    "MIN_SIZE",
    "MaskInput",
    "check_max_size",
    "processing_size",
    "check_frame",
    "frame_to_tensor",
    "resize_binary",
    "prompt_masks",
]

MaskInput = np.ndarray | Mapping[int, np.ndarray] | str | os.PathLike

#: smallest processing size: below it the prompt masks and the coarse feature maps (stride 32) vanish
MIN_SIZE = 16
#: largest object id: output masks are palette PNGs (ids 0..255)
MAX_OBJECT_ID = 255


def check_max_size(
    max_size: int | None,
    option: str = "max_size (--max-size)",
    zero: str = "the full resolution",
    example: str = "--max-size 240",
) -> None:
    """RecvosError naming ``option`` unless ``max_size`` is None/0 (what ``zero`` says it means) or at least
    :data:`MIN_SIZE`; the message ends with ``example``."""
    if max_size is None or max_size == 0:
        return
    if not isinstance(max_size, (int, np.integer)) or max_size < MIN_SIZE:
        raise RecvosError(
            f"{option} {max_size}: the processing size must be at least {MIN_SIZE} pixels, "
            f"or 0 for {zero}; e.g. {example}"
        )


def processing_size(frame_size: tuple[int, int], max_size: int | None) -> tuple[int, int]:
    """(h, w) with the shorter side at most ``max_size``, aspect kept, never upscaled."""
    check_max_size(max_size)
    H, W = frame_size
    if not max_size or min(H, W) <= max_size:
        return H, W
    s = max_size / min(H, W)
    return max(1, round(H * s)), max(1, round(W * s))


def zoomed_size(frame_size: tuple[int, int], shorter: int) -> tuple[int, int]:
    """(h, w) with the shorter side exactly ``shorter`` (up or down), aspect kept."""
    H, W = frame_size
    s = shorter / min(H, W)
    return max(1, round(H * s)), max(1, round(W * s))


def check_frame(frame: Any, idx: int, size: tuple[int, int] | None = None) -> np.ndarray:
    """A frame as uint8 RGB [H, W, 3] (of ``size`` if given), or RecvosError."""
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise RecvosError(
            f"frame {idx}: expected uint8 RGB [H, W, 3], got {frame.dtype} {tuple(frame.shape)}; "
            "convert frames with np.asarray(image.convert('RGB'))"
        )
    if size is not None and frame.shape[:2] != tuple(size):
        raise RecvosError(
            f"frame {idx} is {frame.shape[1]}x{frame.shape[0]} but the video started at {size[1]}x{size[0]}; "
            "all frames of a video must have one size"
        )
    return frame


def frame_to_tensor(frame: np.ndarray, size: tuple[int, int], device: torch.device) -> torch.Tensor:
    """uint8 RGB [H, W, 3] -> float [1, 3, h, w] in [0, 1] on ``device``, resized to ``size`` (h, w): area
    averaging when shrinking, bilinear when enlarging."""
    h, w = size
    if frame.shape[:2] != (h, w):
        shrink = h <= frame.shape[0] and w <= frame.shape[1]
        frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    if not frame.flags.writeable or not frame.flags.c_contiguous:
        frame = np.array(frame)  # torch wants a writable, contiguous buffer
    return torch.from_numpy(frame).to(device).permute(2, 0, 1).unsqueeze(0).float().div_(255)


def resize_binary(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """bool [H, W] -> bool ``size``: area average >= 0.5 when shrinking (nearest when that empties it)."""
    if mask.shape == tuple(size):
        return mask.astype(bool, copy=False)
    h, w = size
    if h <= mask.shape[0] and w <= mask.shape[1]:
        out = cv2.resize(mask.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA) >= 0.5
        if out.any() or not mask.any():
            return out
    return resize_ids(mask.astype(np.uint8), size) > 0


def _aspect_close(a: tuple[int, int], b: tuple[int, int], tol: float = 0.02) -> bool:
    ra, rb = a[1] / a[0], b[1] / b[0]
    return abs(ra - rb) <= tol * rb


def _fit_size(m: np.ndarray, frame_size: tuple[int, int], out: tuple[int, int], where: str) -> np.ndarray:
    """An id map / binary mask at the output size: exact, frame size, or close aspect (with a warning)."""
    shape = tuple(m.shape)
    if shape == out:
        return m.astype(np.int32, copy=False)
    if shape != frame_size:
        if not _aspect_close(shape, out):
            raise RecvosError(
                f"{where}: mask is {shape[1]}x{shape[0]} but the frames are {frame_size[1]}x{frame_size[0]} "
                f"(output {out[1]}x{out[0]}); give a mask of the frame size"
            )
        log.warning("%s: mask is %dx%d, resizing to %dx%d", where, shape[1], shape[0], out[1], out[0])
    return resize_ids(m, out)


def _check_id(obj: int, where: str) -> None:
    if obj > MAX_OBJECT_ID:
        raise RecvosError(
            f"{where}: object id {obj} is above {MAX_OBJECT_ID}; output masks are palette PNGs with ids "
            f"1..{MAX_OBJECT_ID}: renumber the objects"
        )


def prompt_masks(
    mask: MaskInput,
    frame_idx: int,
    frame_size: tuple[int, int],
    output_size: tuple[int, int],
    where: str | None = None,
) -> dict[int, np.ndarray]:
    """A prompt (int id map [H, W], ``{obj_id: bool [H, W]}`` or a mask PNG path) -> ``{obj_id: bool mask at
    the output size}``, or RecvosError naming the mask (``where``, default the path or the frame) and the fix.
    Object ids must be 1..255 (the outputs are palette PNGs)."""
    where = where or f"mask for frame {frame_idx}"
    if isinstance(mask, (str, os.PathLike)):
        where = str(mask)
        mask = read_mask(mask)
    if (
        isinstance(mask, np.ndarray)
        and mask.ndim == 2
        and mask.size
        and np.issubdtype(mask.dtype, np.integer)
    ):
        _check_id(int(mask.max()), where)
    if isinstance(mask, Mapping):
        objs = {}
        for obj, m in mask.items():
            obj = int(obj)
            if obj <= 0:
                raise RecvosError(f"{where}: object id {obj} must be a positive integer (0 is background)")
            _check_id(obj, where)
            m = np.asarray(m)
            if m.ndim != 2:
                raise RecvosError(f"{where}: object {obj} mask must be 2-D [H, W], got {tuple(m.shape)}")
            m = _fit_size(m.astype(np.uint8), frame_size, output_size, where) > 0
            if not m.any():
                raise RecvosError(f"{where}: object {obj} mask is empty; give at least one foreground pixel")
            objs[obj] = m
        if not objs:
            raise RecvosError(f"{where}: the mask has no objects; give at least one")
        return objs
    ids = np.asarray(mask)
    if ids.ndim != 2:
        raise RecvosError(f"{where}: an id map must be 2-D [H, W], got shape {tuple(ids.shape)}")
    if ids.dtype == bool:
        ids = ids.astype(np.int32)
    if not np.issubdtype(ids.dtype, np.integer):
        raise RecvosError(f"{where}: an id map must hold integers, got {ids.dtype}")
    if ids.min(initial=0) < 0:
        raise RecvosError(f"{where}: negative object ids; ids are 0 (background) or positive")
    ids = _fit_size(ids, frame_size, output_size, where)
    obj_ids = [int(o) for o in np.unique(ids) if o > 0]
    if not obj_ids:
        raise RecvosError(
            f"{where}: the mask has no objects (every pixel is background 0); give object ids > 0"
        )
    return {o: ids == o for o in obj_ids}
