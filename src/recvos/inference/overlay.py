"""Overlay videos: frames with the masks blended in the DAVIS palette and each object's id at its centroid.

:func:`blend` draws one frame; :class:`OverlayWriter` streams frames into an H.264 mp4 with PyAV, one frame
at a time (nothing is kept), written to a temporary file and renamed into place when closed.
"""

from __future__ import annotations

import logging
import os
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from recvos.data.masks import DAVIS_PALETTE, resize_ids
from recvos.errors import RecvosError

log = logging.getLogger(__name__)


def _boundaries(ids: np.ndarray) -> np.ndarray:
    """bool [H, W]: pixels whose right or lower neighbour has a different id (object outlines)."""
    edge = np.zeros(ids.shape, dtype=bool)
    edge[:, :-1] |= ids[:, :-1] != ids[:, 1:]
    edge[:-1, :] |= ids[:-1, :] != ids[1:, :]
    return edge


def blend(frame: np.ndarray, ids: np.ndarray, alpha: float = 0.5, draw_ids: bool = True) -> np.ndarray:
    """Colour the objects of ``ids`` (int [H, W]) over ``frame`` (uint8 RGB [H, W, 3]) -> uint8 RGB [H, W, 3].

    Objects take the DAVIS palette colour of their id, blended with ``alpha`` and outlined; with ``draw_ids``
    each object's id is written at its centroid. ``ids`` is resized (nearest) if its size differs.
    """
    H, W = frame.shape[:2]
    ids = np.asarray(ids).astype(np.int64, copy=False)
    if ids.shape != (H, W):
        ids = resize_ids(ids, (H, W))
    colours = DAVIS_PALETTE[ids % 256].astype(np.float32)
    fg = (ids > 0)[..., None]
    out = np.where(fg, frame.astype(np.float32) * (1 - alpha) + colours * alpha, frame.astype(np.float32))
    edge = _boundaries(ids)
    out[edge] = colours[edge]
    out = np.clip(out, 0, 255).astype(np.uint8)
    if draw_ids:
        scale = max(0.4, min(H, W) / 600)
        thick = max(1, round(scale * 2))
        for obj in np.unique(ids):
            if obj <= 0:
                continue
            ys, xs = np.nonzero(ids == obj)
            text = str(int(obj))
            (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
            org = (int(xs.mean() - tw / 2), int(ys.mean() + th / 2))
            cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick + 2, cv2.LINE_AA)
            cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return out


class OverlayWriter:
    """Stream overlay frames into an H.264 mp4 (yuv420p; odd sizes are padded by one pixel).

    ``with OverlayWriter("out.mp4", fps=24) as w: w.write(frame, ids)``. The file appears at ``path`` when
    the writer is closed, also after an error mid-video (then it holds the frames written so far).
    """

    def __init__(
        self, path: str | os.PathLike, fps: float | None = None, alpha: float = 0.5, crf: int = 20
    ) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() not in (".mp4", ".mov", ".mkv"):
            raise RecvosError(
                f"{self.path}: overlay videos are written as .mp4, .mov or .mkv; change the name"
            )
        if not self.path.parent.is_dir():
            raise RecvosError(f"{self.path}: folder {self.path.parent} does not exist; create it first")
        self.fps = Fraction(fps if fps and fps > 0 else 25).limit_denominator(1001)
        self.alpha = alpha
        self.crf = crf
        self._tmp = self.path.with_name(f".{self.path.stem}.tmp{self.path.suffix}")
        self._container = None
        self._stream = None
        self.num_frames = 0

    def _open(self, height: int, width: int) -> None:
        self._container = av.open(str(self._tmp), mode="w")
        stream = self._container.add_stream("libx264", rate=self.fps)
        stream.width, stream.height = width + width % 2, height + height % 2
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(self.crf), "preset": "veryfast"}
        self._stream = stream

    def write(self, frame: np.ndarray, ids: np.ndarray) -> None:
        """Add one frame: uint8 RGB [H, W, 3] with its id map int [H, W] (any size; resized to the frame)."""
        H, W = frame.shape[:2]
        if self._container is None:
            self._open(H, W)
        img = blend(frame, ids, self.alpha)
        if H % 2 or W % 2:
            img = np.pad(img, ((0, H % 2), (0, W % 2), (0, 0)), mode="edge")
        if img.shape[:2] != (self._stream.height, self._stream.width):
            raise RecvosError(
                f"{self.path}: frame {self.num_frames} is {W}x{H} but the overlay started at "
                f"{self._stream.width}x{self._stream.height}; all frames must have one size"
            )
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            self._container.mux(packet)
        self.num_frames += 1

    def close(self) -> None:
        """Flush the encoder and move the file into place (no file if no frame was written)."""
        if self._container is None:
            return
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
        finally:
            self._container.close()
            self._container = None
        os.replace(self._tmp, self.path)
        log.info("wrote overlay %s (%d frames)", self.path, self.num_frames)

    def __enter__(self) -> OverlayWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
