"""Mask I/O: object-id maps from palette / L / binary PNGs, palette PNG writing, one-hot conversions.

An object-id map is an integer array [H, W]: 0 is background, 1..K are objects (any positive ids allowed).
Accepted inputs, decided by the PNG's mode:

- ``P`` (palette, DAVIS / YouTube-VOS): the palette indices are the ids.
- ``L`` / ``I;16`` / ``I``: the pixel values are the ids, except a mask whose only values are {0, 255},
  which is binary (DAVIS-2016): 255 -> id 1. A few small ids (< 64) next to 255 are ids with a void
  region (255 is kept; datasets ignore it).
- ``1``: binary, white -> id 1.
- Ambiguous input raises :class:`~recvos.errors.RecvosError` unless ``convert=True``: RGB/RGBA colour masks
  (convert: one id per colour; colours of the DAVIS palette keep their palette index, other colours get
  the next free ids in sorted colour order) and grey masks with intermediate levels next to 255, which look
  anti-aliased or resized (convert: threshold at 128 -> binary).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from recvos.errors import RecvosError
from recvos.fileio import atomic_write

log = logging.getLogger(__name__)

__all__ = [
    "DAVIS_PALETTE",
    "VOID_ID",
    "first_appearance",
    "ids_to_onehot",
    "object_ids",
    "onehot_to_ids",
    "present_ids",
    "read_ids",
    "read_mask",
    "resize_ids",
    "write_mask",
]

#: the "void" label of DAVIS / YouTube-VOS masks (object borders, ignored regions): never an object
VOID_ID = 255


def _davis_palette() -> np.ndarray:
    """The DAVIS / PASCAL VOC colour map: index bits spread over the high bits of R, G and B. [256, 3]."""
    pal = np.zeros((256, 3), dtype=np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        pal[i] = (r, g, b)
    return pal


DAVIS_PALETTE: np.ndarray = _davis_palette()
DAVIS_PALETTE.setflags(write=False)

#: Colour masks with more distinct colours than this are logged as probably anti-aliased on conversion.
_MANY_COLOURS = 64

#: An L mask with 255 (void) may also hold at most this many ids, all below _MAX_ID_WITH_VOID.
_MAX_IDS_WITH_VOID = 20
_MAX_ID_WITH_VOID = 64

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_FIX_HINT = (
    "save it as a palette (mode P) or greyscale (mode L) PNG of object ids (0 = background, 1..K = objects)"
)


def _open(path: Path) -> Image.Image:
    if not path.is_file():
        raise RecvosError(f"{path}: mask file not found; check the annotation folder path")
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise RecvosError(f"{path}: cannot read mask ({e}); re-export it as a PNG") from None
    return img


def _from_grey(a: np.ndarray, path: Path, convert: bool) -> np.ndarray:
    """Ids from greyscale values: binary 0/255 -> 0/1; anti-aliased grey -> error or threshold."""
    if a.size == 0:
        return a.astype(np.int64)
    if a.dtype.kind == "i" and a.min() < 0:
        raise RecvosError(f"{path}: mask has negative values; {_FIX_HINT}")
    if int(a.max()) != 255:  # the common case, decided without a histogram
        return a.astype(np.int64)
    other = (a != 0) & (a != 255)
    if not other.any():  # binary 0/255 (DAVIS-2016)
        return (a == 255).astype(np.int64)
    if a.dtype != np.uint8:  # 16-bit ids: 255 is an id like any other
        return a.astype(np.int64)
    grey = np.flatnonzero(np.bincount(a[other], minlength=256))
    # a few small ids next to 255 are an id map with a void region (DAVIS style); grey levels spread
    # over the range next to 255 are a binary mask that was anti-aliased or resized: ambiguous
    if grey.size > _MAX_IDS_WITH_VOID or grey[-1] >= _MAX_ID_WITH_VOID:
        if convert:
            return (a >= 128).astype(np.int64)
        raise RecvosError(
            f"{path}: mask has {grey.size} grey level(s) between 0 and 255 next to 255, which looks like an "
            f"anti-aliased or resized binary mask; {_FIX_HINT}, or pass convert=True (--convert-masks) to "
            "threshold it at 128"
        )
    return a.astype(np.int64)


def _from_colour(img: Image.Image, path: Path, convert: bool) -> np.ndarray:
    """Ids from an RGB/RGBA colour mask (only with convert=True)."""
    if not convert:
        raise RecvosError(
            f"{path}: mask is an {img.mode} colour image without a palette, so object ids are ambiguous; "
            f"{_FIX_HINT}, or pass convert=True (--convert-masks) to map each colour to an id"
        )
    rgba = np.asarray(img.convert("RGBA"))
    rgb = rgba[..., :3].astype(np.int64)
    code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    code[rgba[..., 3] == 0] = 0  # transparent = background
    colours, inverse = np.unique(code.ravel(), return_inverse=True)
    if colours.size > _MANY_COLOURS:
        log.warning("%s: %d distinct colours; the mask is probably anti-aliased", path, colours.size)
    pal = DAVIS_PALETTE.astype(np.int64)
    pal_code = {int((r << 16) | (g << 8) | b): i for i, (r, g, b) in enumerate(pal)}
    ids = np.zeros(colours.size, dtype=np.int64)
    used = set()
    for k, c in enumerate(colours.tolist()):
        if c in pal_code:
            ids[k] = pal_code[c]
            used.add(pal_code[c])
    nxt = 1
    for k, c in enumerate(colours.tolist()):
        if c not in pal_code:
            while nxt in used:
                nxt += 1
            ids[k] = nxt
            used.add(nxt)
    return ids[inverse].reshape(code.shape)


def read_mask(path: str | os.PathLike, *, convert: bool = False) -> np.ndarray:
    """Read an object-id map int64 [H, W] from a mask image (see the module docstring for the rules).

    ``convert=True`` opts into converting ambiguous masks (colour masks, anti-aliased grey masks).
    Raises RecvosError naming the file when it is missing, unreadable or ambiguous.
    """
    path = Path(path)
    img = _open(path)
    mode = img.mode
    if mode == "P":
        return np.asarray(img).astype(np.int64)
    if mode == "1":
        return np.asarray(img).astype(np.int64)
    if mode in ("L", "I;16", "I;16B", "I;16L", "I"):
        return _from_grey(np.asarray(img), path, convert)
    if mode in ("LA", "PA"):
        band = np.asarray(img.getchannel(0))
        return band.astype(np.int64) if mode == "PA" else _from_grey(band, path, convert)
    if mode in ("RGB", "RGBA", "RGBX", "CMYK", "YCbCr"):
        return _from_colour(img, path, convert)
    raise RecvosError(f"{path}: unsupported mask image mode {mode!r}; {_FIX_HINT}")


def read_ids(path: str | os.PathLike, *, convert: bool = False) -> np.ndarray:
    """The id map of :func:`read_mask`, as uint8 [H, W] where the ids fit (int64 otherwise), read faster.

    Meant for evaluation, which reads every mask of a dataset. Fast paths skip conversions: palette PNGs
    (indices = ids, decoded by PIL) and 8-bit greyscale PNGs holding only 0/255 (DAVIS-2016) or only 0
    (decoded by OpenCV, ~40% faster than PIL). Everything else, and every error, goes through
    :func:`read_mask`.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(26)
    except OSError:
        head = b""
    if len(head) == 26 and head[:8] == _PNG_SIGNATURE and head[12:16] == b"IHDR" and head[24] == 8:
        color_type = head[25]
        if color_type == 0:  # 8-bit greyscale
            a = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if a is not None and a.ndim == 2 and a.dtype == np.uint8:
                nz = np.count_nonzero(a)
                if nz == 0:
                    return a
                on = a == 255
                if np.count_nonzero(on) == nz:
                    return on.view(np.uint8)
        elif color_type == 3:  # palette
            try:
                with Image.open(path) as img:
                    if img.mode == "P":
                        return np.asarray(img)
            except (OSError, ValueError, SyntaxError):
                pass  # read_mask reports it
    m = read_mask(path, convert=convert)
    if m.size and 0 <= m.min() and m.max() < 256:
        return m.astype(np.uint8)
    return m


def write_mask(path: str | os.PathLike, ids: np.ndarray) -> None:
    """Write an object-id map [H, W] (ids 0..255) as a palette PNG with the DAVIS palette, atomically."""
    path = Path(path)
    a = np.asarray(ids)
    if a.ndim != 2:
        raise RecvosError(f"{path}: a mask must be a 2-D id map [H, W], got shape {tuple(a.shape)}")
    if a.dtype == bool:
        a = a.astype(np.uint8)
    elif a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or not np.array_equal(a, np.round(a)):
            raise RecvosError(
                f"{path}: mask has non-integer values; threshold or argmax the probabilities first"
            )
    elif a.dtype.kind not in "iu":
        raise RecvosError(f"{path}: mask dtype {a.dtype} is not an integer id map")
    if a.size and (a.min() < 0 or a.max() > 255):
        raise RecvosError(
            f"{path}: object ids must be in 0..255 for a palette PNG, got {int(a.min())}..{int(a.max())}; "
            "renumber the objects"
        )
    img = Image.fromarray(a.astype(np.uint8), mode="P")
    img.putpalette(DAVIS_PALETTE.ravel().tolist())
    with atomic_write(path) as f:
        img.save(f, format="PNG")


def resize_ids(ids: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an id map int [H, W] to ``size`` (h, w) -> int32 [h, w]."""
    ids = np.asarray(ids)
    if ids.shape == tuple(size):
        return ids.astype(np.int32, copy=False)
    h, w = size
    if ids.min(initial=0) >= 0 and ids.max(initial=0) < 65536:
        return cv2.resize(ids.astype(np.uint16), (w, h), interpolation=cv2.INTER_NEAREST).astype(np.int32)
    ys = np.minimum((np.arange(h) + 0.5) * ids.shape[0] / h, ids.shape[0] - 1).astype(int)
    xs = np.minimum((np.arange(w) + 0.5) * ids.shape[1] / w, ids.shape[1] - 1).astype(int)
    return ids[ys[:, None], xs[None, :]].astype(np.int32)


def ids_to_onehot(ids: np.ndarray, object_ids: Sequence[int]) -> np.ndarray:
    """One boolean mask per object: ids [H, W] -> bool [O, H, W] (O = len(object_ids))."""
    ids = np.asarray(ids)
    obj = np.asarray(list(object_ids), dtype=np.int64).reshape(-1, *([1] * ids.ndim))
    return ids[None] == obj


def onehot_to_ids(probs: np.ndarray, object_ids: Sequence[int], threshold: float = 0.5) -> np.ndarray:
    """Per-object probabilities [O, H, W] (numpy, or a torch tensor on any device) -> id map int64 [H, W].

    Each pixel takes the id of its most probable object, or 0 (background) where that probability is
    below ``threshold``. A tensor is reduced where it lives (fast, multi-threaded) and only the id map is
    copied back.
    """
    obj = np.asarray(list(object_ids), dtype=np.int64)
    if type(probs).__module__.startswith("torch"):
        if probs.ndim != 3 or probs.shape[0] != obj.size:
            raise ValueError(f"probs must be [O, H, W] with O = {obj.size}, got shape {tuple(probs.shape)}")
        if obj.size == 0:
            return np.zeros(tuple(probs.shape[1:]), dtype=np.int64)
        if obj.size == 1:  # one object: a threshold (15x faster than the reduction at 480p)
            return ((probs[0] >= threshold).long() * int(obj[0])).cpu().numpy()
        best, arg = probs.max(0)
        ids = arg.cpu().numpy()
        return np.where(best.cpu().numpy() >= threshold, obj[ids], 0)
    p = np.asarray(probs)
    if p.ndim != 3 or p.shape[0] != obj.size:
        raise ValueError(f"probs must be [O, H, W] with O = {obj.size}, got shape {tuple(p.shape)}")
    if obj.size == 0:
        return np.zeros(p.shape[1:], dtype=np.int64)
    best = p.argmax(axis=0)
    out = obj[best]
    out[np.take_along_axis(p, best[None], axis=0)[0] < threshold] = 0
    return out


def present_ids(ids: np.ndarray) -> list[int]:
    """Sorted non-zero values of an id map (any shape), void included; fast for the usual few small ids."""
    a = np.asarray(ids)
    if a.size == 0:
        return []
    lo, top = int(a.min()), int(a.max())
    if lo >= 0 and top <= 16:
        return [v for v in range(1, top + 1) if v == top or np.any(a == v)]
    if lo >= 0 and top < 65536 and a.dtype.kind in "biu":
        vals = np.flatnonzero(np.bincount(a.ravel().astype(np.intp, copy=False)))
    else:
        vals = np.unique(a)
    return [int(v) for v in vals if v != 0]


def object_ids(ids: np.ndarray) -> list[int]:
    """Sorted object ids of an id map (any shape): its values other than background (0) and void (255)."""
    return [v for v in present_ids(ids) if v != VOID_ID]


def first_appearance(id_maps: Iterable[np.ndarray | None]) -> dict[int, int]:
    """Object id -> position of the first map holding it, over a sequence of id maps, sorted by id.

    ``None`` entries (frames without a mask) are skipped but counted; void (255) is never an object.
    """
    first: dict[int, int] = {}
    for k, m in enumerate(id_maps):
        if m is None:
            continue
        for v in object_ids(m):
            first.setdefault(v, k)
    return dict(sorted(first.items()))
