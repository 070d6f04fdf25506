"""Frame sources: one interface over a folder of images and a video file, iterated lazily.

Every source yields frames one at a time as uint8 RGB numpy arrays [H, W, 3]; no source ever holds all
frames in memory. ``num_frames`` may be None when a video container does not say how long it is.
"""

from __future__ import annotations

import abc
import logging
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

import numpy as np
from PIL import Image, UnidentifiedImageError

from recvos.errors import RecvosError

log = logging.getLogger(__name__)

__all__ = [
    "IMAGE_SUFFIXES",
    "VIDEO_SUFFIXES",
    "FolderFrames",
    "FrameSource",
    "SlicedFrames",
    "VideoFrames",
    "list_images",
    "natural_key",
    "open_frames",
    "read_frame",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".webm", ".mkv", ".m4v", ".mpg", ".mpeg")


def natural_key(name: str) -> tuple:
    """Sort key that orders embedded numbers numerically ("2.jpg" before "10.jpg")."""
    parts = re.split(r"(\d+)", name)
    return tuple((0, int(p), p) if p.isdigit() else (1, p.lower(), p) for p in parts)


def list_images(folder: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> list[Path]:
    """Image files directly in ``folder`` (hidden files skipped), sorted naturally."""
    files = [
        p
        for p in folder.iterdir()
        if p.suffix.lower() in suffixes and not p.name.startswith(".") and p.is_file()
    ]
    return sorted(files, key=lambda p: natural_key(p.name))


def read_frame(
    path: str | os.PathLike,
    expected_size: tuple[int, int] | None = None,
    reference: str = "the first frame",
    what: str = "frame",
) -> np.ndarray:
    """Read one image file as uint8 RGB [H, W, 3]; RecvosError naming the file if it cannot be decoded or,
    with ``expected_size`` (H, W), if its size differs from that of ``reference`` (a frame of the same video).
    """
    frame = _decode_frame(Path(path))
    if expected_size is not None and frame.shape[:2] != tuple(expected_size):
        raise RecvosError(
            f"{path}: {what} is {frame.shape[0]}x{frame.shape[1]} but {reference} is "
            f"{expected_size[0]}x{expected_size[1]}; all frames of a sequence must have one size"
        )
    return frame


def _decode_frame(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                a = np.asarray(img).astype(np.float64)
                a = (a * (255.0 / max(float(a.max()), 1.0))).astype(np.uint8)
                return np.repeat(a[..., None], 3, axis=2)
            if img.mode != "RGB":
                img = img.convert("RGB")
            return np.asarray(img)
    except FileNotFoundError:
        raise RecvosError(f"{path}: frame file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise RecvosError(f"{path}: cannot decode image ({e}); replace or re-export the file") from None


class FrameSource(abc.ABC):
    """A sequence of frames read lazily: uint8 RGB [H, W, 3] each. Use as a context manager."""

    path: Path

    @property
    @abc.abstractmethod
    def num_frames(self) -> int | None:
        """Number of frames, or None when unknown."""

    # subclasses set these two in __init__
    _size: tuple[int, int]
    _fps: float | None

    @property
    def size(self) -> tuple[int, int]:
        """Frame size (H, W)."""
        return self._size

    @property
    def fps(self) -> float | None:
        """Frames per second, or None when unknown (image folders)."""
        return self._fps

    @property
    @abc.abstractmethod
    def frame_names(self) -> list[str]:
        """One name per frame, used for output files: image stems, or "00000", "00001", ... for videos."""

    @abc.abstractmethod
    def __iter__(self) -> Iterator[np.ndarray]:
        """Frames uint8 RGB [H, W, 3], one at a time, from the first."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release any open file handles."""

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, num_frames={self.num_frames}, size={self.size})"


class FolderFrames(FrameSource):
    """A folder of JPEG/PNG frames, sorted naturally; the frame size is that of the first frame.

    ``files`` gives the frame files explicitly (in order) instead of listing the folder.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float | None = None,
        files: Sequence[str | os.PathLike] | None = None,
    ) -> None:
        self.path = Path(path)
        if files is None:
            if not self.path.exists():
                raise RecvosError(f"{self.path}: frame folder not found; check the path")
            if not self.path.is_dir():
                raise RecvosError(f"{self.path}: not a folder of frames")
            self.frame_paths: list[Path] = list_images(self.path)
        else:
            self.frame_paths = [Path(f) for f in files]
        if not self.frame_paths:
            raise RecvosError(
                f"{self.path}: no frames found (expected {', '.join(IMAGE_SUFFIXES)} files); check the folder"
            )
        first = self.frame_paths[0]
        try:
            with Image.open(first) as img:
                w, h = img.size
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise RecvosError(f"{first}: cannot read image ({e}); replace or re-export the file") from None
        self._size = (int(h), int(w))
        self._fps = fps

    @property
    def num_frames(self) -> int:
        return len(self.frame_paths)

    @property
    def frame_names(self) -> list[str]:
        return [p.stem for p in self.frame_paths]

    def __len__(self) -> int:
        return len(self.frame_paths)

    def load(self, i: int) -> np.ndarray:
        """Frame i, uint8 RGB [H, W, 3]; RecvosError if unreadable or of a different size than frame 0."""
        return read_frame(self.frame_paths[i], self._size, what=f"frame {i}")

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self.frame_paths)):
            yield self.load(i)


def _av():
    import av  # imported lazily: PyAV is heavy and only videos need it

    return av


def _rotation_turns(rotation: float | None) -> int:
    """Quarter turns for ``np.rot90`` that undo a display-matrix rotation (degrees counter-clockwise, as
    FFmpeg reports it; phone videos recorded upright carry -90 or 90)."""
    if not rotation:
        return 0
    turns = round(float(rotation) / 90)
    if abs(turns * 90 - float(rotation)) > 1:
        log.warning("rotation of %.1f degrees is not a multiple of 90; ignored", rotation)
        return 0
    return turns % 4


class VideoFrames(FrameSource):
    """A video file decoded with PyAV, streamed one frame at a time (the first video stream).

    A rotation in the video's metadata (the display matrix phones write for portrait videos) is applied,
    so frames, ``size`` and the masks come out the way a player shows the video; ``rotation`` is the
    quarter turns applied (``np.rot90``'s ``k``).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise RecvosError(f"{self.path}: video file not found; check the path")
        av = _av()
        try:
            container = av.open(str(self.path))
        except (av.FFmpegError, OSError, ValueError) as e:
            raise RecvosError(f"{self.path}: cannot open video ({e}); is it a complete video file?") from None
        try:
            if not container.streams.video:
                raise RecvosError(f"{self.path}: file has no video stream")
            stream = container.streams.video[0]
            cc = stream.codec_context
            self._size = (int(cc.height), int(cc.width))
            if self._size[0] <= 0 or self._size[1] <= 0:
                raise RecvosError(f"{self.path}: video stream has no frame size; re-encode the file")
            self._num_frames: int | None = int(stream.frames) if stream.frames and stream.frames > 0 else None
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            self._fps: float | None = float(rate) if rate else None
            self.rotation = self._probe_rotation(container)
            if self.rotation % 2:
                self._size = (self._size[1], self._size[0])
        finally:
            container.close()
        self._open: set = set()

    @staticmethod
    def _probe_rotation(container) -> int:
        """Quarter turns of the display matrix, read from the first decoded frame (0 if it cannot be read)."""
        try:
            for frame in container.decode(video=0):
                return _rotation_turns(getattr(frame, "rotation", 0))
        except Exception:  # noqa: BLE001 - decoding errors are reported when the frames are read
            return 0
        return 0

    @property
    def num_frames(self) -> int | None:
        return self._num_frames

    @property
    def frame_names(self) -> list[str]:
        n = self._num_frames
        if n is None:
            n = self._count_packets()
        return [f"{i:05d}" for i in range(n)]

    def _count_packets(self) -> int:
        """Frame count by demuxing (no decoding), for containers that do not store it."""
        av = _av()
        try:
            with av.open(str(self.path)) as c:
                s = c.streams.video[0]
                return sum(1 for pkt in c.demux(s) if pkt.size > 0)
        except av.FFmpegError as e:
            raise RecvosError(
                f"{self.path}: cannot read video ({e}); re-encode or replace the file"
            ) from None

    def __iter__(self) -> Iterator[np.ndarray]:
        av = _av()
        i = 0
        try:
            container = av.open(str(self.path))
        except (av.FFmpegError, OSError) as e:
            raise RecvosError(f"{self.path}: cannot open video ({e})") from None
        self._open.add(container)
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            try:
                for frame in container.decode(stream):
                    arr = frame.to_ndarray(format="rgb24")
                    if self.rotation:
                        arr = np.ascontiguousarray(np.rot90(arr, self.rotation))
                    i += 1
                    yield arr
            except av.FFmpegError as e:
                raise RecvosError(
                    f"{self.path}: video is corrupt or truncated: decoding failed at frame {i} ({e}); "
                    "re-encode or replace the file"
                ) from None
            if self._num_frames is not None and i < self._num_frames:
                raise RecvosError(
                    f"{self.path}: video is truncated: it ended at frame {i} of the {self._num_frames} its "
                    "header announces; re-encode or replace the file"
                )
        finally:
            self._open.discard(container)
            container.close()

    def close(self) -> None:
        for c in list(self._open):
            c.close()
        self._open.clear()


class SlicedFrames(FrameSource):
    """Frames ``start, start + stride, ...`` before ``end`` of another source (``recvos segment
    --start/--end/--stride``); frame names are those of the source, so outputs keep the original numbering.
    Skipped frames of a video are still decoded (videos cannot seek exactly), but never segmented."""

    def __init__(self, base: FrameSource, start: int = 0, end: int | None = None, stride: int = 1) -> None:
        if start < 0:
            raise RecvosError(f"--start {start}: must be 0 or more")
        if stride < 1:
            raise RecvosError(f"--stride {stride}: must be 1 or more")
        if end is not None and end <= start:
            raise RecvosError(f"--end {end}: must be greater than --start {start}")
        self.base = base
        self.path = base.path
        names = base.frame_names
        if start >= len(names):
            raise RecvosError(
                f"{base.path}: --start {start} is beyond the video ({len(names)} frames, 0..{len(names) - 1})"
            )
        stop = len(names) if end is None else min(end, len(names))
        self.indices = list(range(start, stop, stride))
        self._names = [names[i] for i in self.indices]
        self._size = base.size
        self._fps = base.fps / stride if base.fps else None

    @property
    def num_frames(self) -> int:
        return len(self.indices)

    @property
    def frame_names(self) -> list[str]:
        return list(self._names)

    def __iter__(self) -> Iterator[np.ndarray]:
        if isinstance(self.base, FolderFrames):  # random access: read only the selected files
            for i in self.indices:
                yield self.base.load(i)
            return
        wanted = iter(self.indices)
        nxt = next(wanted, None)
        frames = iter(self.base)
        try:
            for i, frame in enumerate(frames):
                if nxt is None:
                    break
                if i == nxt:
                    yield frame
                    nxt = next(wanted, None)
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()

    def close(self) -> None:
        self.base.close()


def open_frames(path: str | os.PathLike | FrameSource) -> FrameSource:
    """A frame source for ``path``: a folder of images -> FolderFrames, a video file -> VideoFrames."""
    if isinstance(path, FrameSource):
        return path
    p = Path(path)
    if p.is_dir():
        return FolderFrames(p)
    if not p.exists():
        raise RecvosError(f"{p}: no such folder or video file; pass a folder of frames or a video file")
    if p.suffix.lower() in IMAGE_SUFFIXES:
        raise RecvosError(f"{p}: is a single image; pass the folder that holds the frames or a video file")
    if p.suffix.lower() not in VIDEO_SUFFIXES:
        log.info("%s: unknown video suffix, trying to decode it anyway", p)
    return VideoFrames(p)
