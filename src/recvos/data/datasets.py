"""Datasets: an index of video sequences (frames, masks, objects) behind one interface.

Layouts read:

- DAVIS-2016: ``JPEGImages/<res>/<seq>``, ``Annotations/<res>/<seq>`` (0/255 masks -> id 1),
  ``ImageSets/2016/<split>.txt`` (or the original ``ImageSets/<res>/<split>.txt`` path lists).
- DAVIS-2017: same folders, palette masks, ``ImageSets/<year>/<split>.txt``.
- YouTube-VOS: ``<split>/JPEGImages/<vid>``, ``<split>/Annotations/<vid>``, ``<split>/meta.json``;
  annotations only every 5th frame (and in ``valid`` only where an object first appears).
- Generic folder: ``JPEGImages/<seq>`` + ``Annotations/<seq>`` (optional ``ImageSets/**/<split>.txt``).

Resolution folders (``480p``, ``Full-Resolution``, ``240p``, ...) are detected: "480p" if present, else the
only one there (frames and masks separately, so 240p frames with 480p masks work); a flat
``JPEGImages/<seq>`` layout works too. Sequences are built lazily on first access (reading a sequence's
masks to find its objects happens then, once).

Id 255 is *void* (DAVIS convention) and never an object.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from recvos.data.frames import IMAGE_SUFFIXES, FolderFrames, list_images, natural_key, read_frame
from recvos.data.masks import VOID_ID, first_appearance, read_mask, resize_ids
from recvos.errors import RecvosError

log = logging.getLogger(__name__)

__all__ = [
    "DATASET_KINDS",
    "DAVIS2016",
    "DAVIS2017",
    "FolderDataset",
    "VOSDataset",
    "VideoSequence",
    "YouTubeVOS",
    "open_dataset",
    "resolution_folder",
]

DATASET_KINDS = ("davis2016", "davis2017", "youtube-vos", "folder")
YTVOS_SPLITS = ("train", "valid", "test", "train_all_frames", "valid_all_frames", "test_all_frames")
#: Masks whose size differs from the sequence's mask size by at most this many pixels are resized (nearest).
_SIZE_TOLERANCE = 2
#: names of resolution folders (``480p``, ``1080p``, ``Full-Resolution``)
_RESOLUTION_RE = re.compile(r"^(\d+p|full-resolution)$", re.IGNORECASE)


def _image_size(path: Path) -> tuple[int, int]:
    """(H, W) of an image from its header."""
    try:
        with Image.open(path) as img:
            w, h = img.size
    except FileNotFoundError:
        raise RecvosError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise RecvosError(f"{path}: cannot read image ({e}); replace or re-export the file") from None
    return int(h), int(w)


@dataclass
class VideoSequence:
    """One video: frame paths, per-frame mask paths (None = not annotated), objects and where they start.

    ``first_frame`` maps each object id to the index of the first frame where it is annotated.
    ``binarize`` (DAVIS-2016) merges every non-void id into object 1.
    """

    name: str
    frame_paths: list[Path]
    mask_paths: list[Path | None]
    object_ids: list[int]
    first_frame: dict[int, int]
    convert_masks: bool = False
    binarize: bool = False
    _frame_size: tuple[int, int] | None = field(default=None, init=False, repr=False, compare=False)
    _mask_size: tuple[int, int] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.mask_paths) != len(self.frame_paths):
            raise ValueError(
                f"{self.name}: {len(self.mask_paths)} mask paths for {len(self.frame_paths)} frames"
            )

    def __len__(self) -> int:
        return len(self.frame_paths)

    @property
    def num_frames(self) -> int:
        return len(self.frame_paths)

    @property
    def frame_names(self) -> list[str]:
        """Frame file stems, e.g. "00000" (names for output masks)."""
        return [p.stem for p in self.frame_paths]

    @property
    def annotated_indices(self) -> list[int]:
        """Indices of the frames that have a mask."""
        return [i for i, p in enumerate(self.mask_paths) if p is not None]

    @property
    def frame_size(self) -> tuple[int, int]:
        """(H, W) of the frames (from the first frame's header)."""
        if self._frame_size is None:
            if not self.frame_paths:
                raise RecvosError(f"{self.name}: sequence has no frames")
            self._frame_size = _image_size(self.frame_paths[0])
        return self._frame_size

    @property
    def mask_size(self) -> tuple[int, int]:
        """(H, W) of the masks (from the first annotated mask; the frame size if none is annotated)."""
        if self._mask_size is None:
            ann = self.annotated_indices
            self._mask_size = _image_size(self.mask_paths[ann[0]]) if ann else self.frame_size  # type: ignore[arg-type]
        return self._mask_size

    def load_frame(self, i: int) -> np.ndarray:
        """Frame i, uint8 RGB [H, W, 3] (H, W = frame_size)."""
        return read_frame(self.frame_paths[i], self.frame_size, f"frame 0 of {self.name}")

    def load_mask(self, i: int) -> np.ndarray | None:
        """Mask of frame i as an id map int64 [H, W] (H, W = mask_size), or None if frame i is not annotated.

        A mask off by at most a couple of pixels is resized (nearest) with a warning; a bigger mismatch, or
        masks whose aspect ratio differs from the frames', raises RecvosError.
        """
        p = self.mask_paths[i]
        if p is None:
            return None
        m = read_mask(p, convert=self.convert_masks)
        if self.binarize:
            m = ((m != 0) & (m != VOID_ID)).astype(np.int64)
        want = self.mask_size
        if m.shape != want:
            dh, dw = abs(m.shape[0] - want[0]), abs(m.shape[1] - want[1])
            if dh > _SIZE_TOLERANCE or dw > _SIZE_TOLERANCE:
                raise RecvosError(
                    f"{p}: mask is {m.shape[0]}x{m.shape[1]} but the other masks of {self.name} are "
                    f"{want[0]}x{want[1]}; re-export it at the size of its frame"
                )
            log.warning("%s: mask is %dx%d, resizing to %dx%d", p, *m.shape, *want)
            m = resize_ids(m, want).astype(np.int64)
        fh, fw = self.frame_size
        if abs(want[0] / fh - want[1] / fw) > 0.02 * max(want[0] / fh, want[1] / fw):
            raise RecvosError(
                f"{p}: mask is {want[0]}x{want[1]} but its frame is {fh}x{fw} (a different aspect ratio); "
                "masks must match their frames"
            )
        return m

    def frame_source(self) -> FolderFrames:
        """The frames as a lazy :class:`~recvos.data.frames.FolderFrames` source."""
        return FolderFrames(self.frame_paths[0].parent, files=self.frame_paths)


def _scan_objects(mask_paths: Sequence[Path | None], convert: bool) -> tuple[list[int], dict[int, int]]:
    """Object ids over all annotated frames and the index where each first appears (void excluded)."""
    first = first_appearance(read_mask(p, convert=convert) if p is not None else None for p in mask_paths)
    return list(first), first


def _pair_masks(name: str, frames: list[Path], mask_dir: Path | None) -> list[Path | None]:
    """Mask path per frame (matched by file stem), None where the frame has no mask."""
    if mask_dir is None or not mask_dir.is_dir():
        return [None] * len(frames)
    masks = {p.stem: p for p in list_images(mask_dir, (".png",))}
    stems = {p.stem for p in frames}
    orphans = sorted(set(masks) - stems, key=natural_key)
    if orphans:
        log.warning("%s: %d mask(s) without a frame ignored (e.g. %s)", name, len(orphans), masks[orphans[0]])
    return [masks.get(p.stem) for p in frames]


def resolution_folder(base: Path, only: bool = False) -> Path | None:
    """The resolution subfolder of ``base`` to read: "480p" if present, else the first in natural order.

    None when ``base`` has no resolution folder (``480p``, ``1080p``, ``Full-Resolution``, ...), or, with
    ``only``, when it also has other subfolders (then it is a folder of sequences, not of resolutions).
    """
    subdirs = [d.name for d in base.iterdir() if d.is_dir()]
    res = sorted((n for n in subdirs if _RESOLUTION_RE.match(n)), key=natural_key)
    if not res or (only and len(res) != len(subdirs)):
        return None
    if "480p" in res:
        return base / "480p"
    if len(res) > 1:
        log.info("%s: several resolution folders %s; using %s", base, res, res[0])
    return base / res[0]


def _detect_res(base: Path, wanted: str | None, what: str) -> Path:
    """``base/<res>`` for a resolution folder (given, or see :func:`resolution_folder`), else ``base`` (flat)."""
    if wanted is not None:
        d = base / wanted if wanted else base
        if not d.is_dir():
            raise RecvosError(f"{d}: {what} folder not found; check the resolution folder name")
        return d
    if not base.is_dir():
        raise RecvosError(f"{base}: {what} folder not found; check the dataset root")
    return resolution_folder(base) or base


def _read_list(path: Path) -> list[str]:
    """Sequence names from an ImageSets file: one name per line, or DAVIS-2016 style path pairs."""
    names: list[str] = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        tok = line.split()[0]
        if "/" in tok:  # "/JPEGImages/480p/bear/00000.jpg /Annotations/480p/bear/00000.png"
            tok = Path(tok).parent.name
        if tok not in names:
            names.append(tok)
    return names


class VOSDataset(Sequence[VideoSequence]):
    """A list of sequences, indexed by position or by name; sequences are built on first access."""

    kind = "dataset"

    def __init__(self, root: str | os.PathLike, names: list[str], split: str | None = None) -> None:
        self.root = Path(root)
        self.split = split
        self.names: list[str] = list(names)
        self._index = {n: i for i, n in enumerate(self.names)}
        self._cache: dict[str, VideoSequence] = {}

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, key: int | str) -> VideoSequence:  # type: ignore[override]
        if isinstance(key, slice):
            return [self[n] for n in self.names[key]]  # type: ignore[return-value]
        if isinstance(key, str):
            if key not in self._index:
                raise KeyError(f"{key!r} is not a sequence of {self}")
            name = key
        else:
            name = self.names[key]
        if name not in self._cache:
            self._cache[name] = self._build(name)
        return self._cache[name]

    def __contains__(self, key: object) -> bool:
        return key in self._index if isinstance(key, str) else super().__contains__(key)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r}, split={self.split!r}, {len(self)} sequences)"

    def _build(self, name: str) -> VideoSequence:
        raise NotImplementedError


class _ImageFolders(VOSDataset):
    """Shared reader for ``JPEGImages/[<res>/]<seq>`` + ``Annotations/[<res>/]<seq>`` layouts."""

    binarize = False

    def __init__(
        self,
        root: str | os.PathLike,
        names: list[str],
        split: str | None,
        frames_dir: Path,
        masks_dir: Path | None,
        convert_masks: bool = False,
    ) -> None:
        super().__init__(root, names, split)
        self.frames_dir = frames_dir
        self.masks_dir = masks_dir
        self.convert_masks = convert_masks
        for n in self.names:
            if not (frames_dir / n).is_dir():
                raise RecvosError(
                    f"{frames_dir / n}: frame folder of sequence {n!r} not found; check the dataset root"
                )

    def _frames(self, name: str) -> list[Path]:
        d = self.frames_dir / name
        frames = list_images(d, IMAGE_SUFFIXES)
        if not frames:
            raise RecvosError(f"{d}: no frames (.jpg/.png) in the folder of sequence {name!r}")
        return frames

    def _build(self, name: str) -> VideoSequence:
        frames = self._frames(name)
        masks = _pair_masks(name, frames, self.masks_dir / name if self.masks_dir else None)
        if self.binarize:
            ann = [i for i, p in enumerate(masks) if p is not None]
            ids, first = ([1], {1: ann[0]}) if ann else ([], {})
        else:
            ids, first = _scan_objects(masks, self.convert_masks)
        return VideoSequence(
            name, frames, masks, ids, first, convert_masks=self.convert_masks, binarize=self.binarize
        )


def _davis_names(root: Path, year: str, split: str) -> list[str]:
    sets = root / "ImageSets"
    if not sets.is_dir():
        raise RecvosError(f"{sets}: ImageSets folder not found; is {root} a DAVIS root?")
    d = sets / year
    if not d.is_dir():
        years = sorted(p.name for p in sets.iterdir() if p.is_dir())
        raise RecvosError(f"{d}: not found; ImageSets has {', '.join(years) or 'no folders'}")
    f = d / f"{split}.txt"
    if not f.is_file():
        splits = sorted(p.stem for p in d.glob("*.txt"))
        raise RecvosError(f"unknown split {split!r} for {d} (no {f.name}); valid splits: {', '.join(splits)}")
    names = _read_list(f)
    if not names:
        raise RecvosError(f"{f}: lists no sequences")
    return names


class DAVIS2017(_ImageFolders):
    """DAVIS-2017 (or any DAVIS-style tree): ``ImageSets/<year>/<split>.txt``, palette masks, many objects.

    Objects are the ids present in any annotated frame; ``first_frame`` records where each appears.
    """

    kind = "davis2017"

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "val",
        year: str = "2017",
        *,
        frames_res: str | None = None,
        masks_res: str | None = None,
        convert_masks: bool = False,
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise RecvosError(f"{root}: dataset root not found")
        names = _davis_names(root, str(year), split)
        frames_dir = _detect_res(root / "JPEGImages", frames_res, "JPEGImages")
        masks_dir = _detect_res(root / "Annotations", masks_res, "Annotations")
        super().__init__(root, names, split, frames_dir, masks_dir, convert_masks)
        self.year = str(year)


class DAVIS2016(DAVIS2017):
    """DAVIS-2016: one object per sequence (mask 255, or any non-zero id, -> id 1), ``ImageSets/2016``."""

    kind = "davis2016"
    binarize = True

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "val",
        *,
        frames_res: str | None = None,
        masks_res: str | None = None,
        convert_masks: bool = False,
    ) -> None:
        root = Path(root)
        year = "2016"
        # the original DAVIS-2016 release lists frame/mask path pairs in ImageSets/480p/<split>.txt
        if not (root / "ImageSets" / "2016").is_dir() and (root / "ImageSets" / "480p").is_dir():
            year = "480p"
        super().__init__(
            root, split, year, frames_res=frames_res, masks_res=masks_res, convert_masks=convert_masks
        )


class YouTubeVOS(VOSDataset):
    """YouTube-VOS: ``<split>/JPEGImages/<vid>``, ``<split>/Annotations/<vid>``, ``<split>/meta.json``.

    Objects and the frame where each first appears come from meta.json (from the masks if it is absent).
    ``valid_all_frames`` (or ``train_all_frames``) reads frames from that folder and masks and meta.json
    from ``valid`` (``train``).
    """

    kind = "youtube-vos"

    def __init__(self, root: str | os.PathLike, split: str = "valid", *, convert_masks: bool = False) -> None:
        root = Path(root)
        if not root.is_dir():
            raise RecvosError(f"{root}: dataset root not found")
        if split not in YTVOS_SPLITS:
            present = [s for s in YTVOS_SPLITS if (root / s).is_dir()]
            raise RecvosError(
                f"unknown YouTube-VOS split {split!r}; valid splits: {', '.join(YTVOS_SPLITS)}"
                + (f" ({', '.join(present)} present in {root})" if present else "")
            )
        ann_split = split.removesuffix("_all_frames")
        self.frames_dir = root / split / "JPEGImages"
        self.masks_dir = root / ann_split / "Annotations"
        for d in (self.frames_dir, self.masks_dir):
            if not d.is_dir():
                raise RecvosError(f"{d}: folder not found; check the YouTube-VOS root and split")
        self.convert_masks = convert_masks
        meta_path = root / ann_split / "meta.json"
        self.meta: dict | None = None
        if meta_path.is_file():
            try:
                self.meta = json.loads(meta_path.read_text())["videos"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise RecvosError(f"{meta_path}: not a YouTube-VOS meta.json ({e})") from None
            self.meta_path = meta_path
        else:
            log.info("%s not found; reading objects from the masks", meta_path)
        names = sorted((d.name for d in self.frames_dir.iterdir() if d.is_dir()), key=natural_key)
        if not names:
            raise RecvosError(f"{self.frames_dir}: no video folders")
        super().__init__(root, names, split)

    def _build(self, name: str) -> VideoSequence:
        frames = list_images(self.frames_dir / name, IMAGE_SUFFIXES)
        if not frames:
            raise RecvosError(f"{self.frames_dir / name}: no frames in the folder of video {name!r}")
        masks = _pair_masks(name, frames, self.masks_dir / name)
        info = self.meta.get(name) if self.meta is not None else None
        if info is None or "objects" not in info:
            ids, first = _scan_objects(masks, self.convert_masks)
        else:
            index = {p.stem: i for i, p in enumerate(frames)}
            first = {}
            for key, obj in info["objects"].items():
                obj_frames = [index[f] for f in obj.get("frames", []) if f in index]
                if not obj_frames:
                    log.warning(
                        "%s: object %s of %s has no frame in %s", self.meta_path, key, name, self.frames_dir
                    )
                    continue
                first[int(key)] = min(obj_frames)
            ids = sorted(first)
            first = {k: first[k] for k in ids}
        return VideoSequence(name, frames, masks, ids, first, convert_masks=self.convert_masks)


class FolderDataset(_ImageFolders):
    """A generic tree: ``root/JPEGImages/<seq>/*.jpg|png`` and (optional) ``root/Annotations/<seq>/*.png``.

    With ``split``, the names come from ``root/ImageSets/**/<split>.txt``; otherwise every sequence folder.
    """

    kind = "folder"

    def __init__(
        self,
        root: str | os.PathLike,
        split: str | None = None,
        *,
        frames_res: str | None = None,
        masks_res: str | None = None,
        convert_masks: bool = False,
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise RecvosError(f"{root}: dataset root not found")
        frames_dir = _detect_res(root / "JPEGImages", frames_res, "JPEGImages")
        masks_dir: Path | None = None
        if (root / "Annotations").is_dir() or masks_res is not None:
            masks_dir = _detect_res(root / "Annotations", masks_res, "Annotations")
        else:
            log.info("%s: no Annotations folder; sequences are unannotated", root)
        if split is None:
            names = sorted((d.name for d in frames_dir.iterdir() if d.is_dir()), key=natural_key)
            if not names:
                raise RecvosError(f"{frames_dir}: no sequence folders")
        else:
            lists = (
                sorted((root / "ImageSets").rglob(f"{split}.txt")) if (root / "ImageSets").is_dir() else []
            )
            if not lists:
                found = (
                    sorted({p.stem for p in (root / "ImageSets").rglob("*.txt")})
                    if (root / "ImageSets").is_dir()
                    else []
                )
                raise RecvosError(
                    f"unknown split {split!r}: no ImageSets/**/{split}.txt under {root}; "
                    f"valid splits: {', '.join(found) if found else 'none (omit the split to use every sequence)'}"
                )
            names = _read_list(lists[-1])
        super().__init__(root, names, split, frames_dir, masks_dir, convert_masks)


def open_dataset(kind: str, root: str | os.PathLike, split: str | None = None, **kwargs) -> VOSDataset:
    """A dataset by kind: "davis2016", "davis2017", "youtube-vos" or "folder" (split None = its default)."""
    k = kind.lower().replace("_", "-")
    k = {
        "youtubevos": "youtube-vos",
        "ytvos": "youtube-vos",
        "davis-2016": "davis2016",
        "davis-2017": "davis2017",
    }.get(k, k)
    if k == "davis2016":
        return DAVIS2016(root, split or "val", **kwargs)
    if k == "davis2017":
        return DAVIS2017(root, split or "val", **kwargs)
    if k == "youtube-vos":
        return YouTubeVOS(root, split or "valid", **kwargs)
    if k == "folder":
        return FolderDataset(root, split, **kwargs)
    raise RecvosError(f"unknown dataset kind {kind!r}; choose one of {', '.join(DATASET_KINDS)}")
