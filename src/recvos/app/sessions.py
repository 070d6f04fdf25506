"""Per-browser-session state of the web app: the video, the prompts, the results, the propagation job.

Nothing here knows HTTP. A :class:`SessionStore` holds one :class:`Session` per browser tab, each with its
own temporary folder; a session ends when the page says so, when its heartbeats stop
(``heartbeat_timeout``) or after ``idle_timeout`` without a user action, and then its job is cancelled and
its folder removed. Propagation runs in a thread per session and one at a time across sessions (the CPU is
shared; a second session's job waits as "queued"); a second propagate in one session is refused.

Propagation uses only the segmenter's public API. Correcting a frame k and propagating again restarts the
model at k from the current masks of k with the corrections applied (frames before k are kept): the
recurrent model needs no earlier frame, and a correction is then a fresh reference (objects absent from
frame k come back only where they are prompted again).
"""

from __future__ import annotations

import io
import logging
import secrets
import shutil
import tempfile
import threading
import time
import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from recvos.errors import RecvosError

log = logging.getLogger(__name__)

__all__ = ["AppConfig", "Busy", "Models", "Session", "SessionStore", "TooLarge"]

#: object ids must fit a palette PNG
MAX_OBJECT_ID = 255


class Busy(RecvosError):
    """The request conflicts with a running propagation (HTTP 409)."""


class TooLarge(RecvosError):
    """An upload over the size limit (HTTP 413)."""


@dataclass
class AppConfig:
    """Settings of one app server (the CLI's options).

    model / zero_shot_model: checkpoint path or model name (None: the shipped defaults). Limits: upload
    size in MB, frames, and pixels per frame; a video over one is refused before anything is processed.
    ``allow_paths``: open videos by a path on the server (None: only when bound to a loopback address).
    """

    model: str | None = None
    zero_shot_model: str | None = None
    device: str = "cpu"
    threads: int | None = None
    max_size: int = 240
    method: str | None = None
    max_upload_mb: float = 500.0
    max_frames: int = 3000
    max_pixels: int = 1920 * 1080
    heartbeat_timeout: float = 30.0
    idle_timeout: float = 3600.0
    reap_interval: float = 5.0
    workdir: str | None = None
    allow_paths: bool | None = None
    jpeg_quality: int = 90


class Models:
    """The one-shot and zero-shot segmenters, loaded on first use and shared by all sessions."""

    def __init__(self, config: AppConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._segs: dict[str, Any] = {}

    def get(self, kind: str) -> Any:
        from recvos.inference.segmenter import load_model

        with self._lock:
            if kind not in self._segs:
                name = self.config.zero_shot_model if kind == "zero-shot" else self.config.model
                self._segs[kind] = load_model(
                    name,
                    self.config.device,
                    kind=kind,
                    threads=self.config.threads,
                    max_size=self.config.max_size,
                )
            return self._segs[kind]


def online_steps() -> int:
    """The recommended number of online-learning steps (imported late: it brings torch)."""
    from recvos.inference.online import ONLINE_STEPS

    return ONLINE_STEPS


@dataclass
class Prompt:
    """One object's prompts on one frame and the mask they give."""

    box: list[float] | None = None
    points: list[list[float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    base: np.ndarray | None = None  # the object's propagated mask on this frame when the correction began
    mask: np.ndarray | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "box": self.box,
            "points": self.points,
            "labels": self.labels,
            "area": int(self.mask.sum()) if self.mask is not None else 0,
        }


@dataclass
class Job:
    """A propagation: progress, state (queued, running, done, cancelled, error) and its message."""

    kind: str
    start: int
    total: int
    online_steps: int = 0
    flip: bool = False
    cancel: threading.Event = field(default_factory=threading.Event)
    state: str = "queued"
    done: int = 0
    message: str = ""
    thread: threading.Thread | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "state": self.state,
            "start": self.start,
            "done": self.done,
            "total": self.total,
            "online_steps": self.online_steps,
            "flip": self.flip,
            "message": self.message,
        }


class _FramesFrom:
    """Frames ``start..`` of a video or folder, re-iterable (for ``Segmenter.init_state``)."""

    def __init__(self, path: Path, start: int, total: int) -> None:
        self.path, self.start, self.total = path, start, total

    def __len__(self) -> int:
        return self.total - self.start

    def __iter__(self) -> Iterator[np.ndarray]:
        from recvos.data.frames import open_frames

        with open_frames(self.path) as src:
            for t, frame in enumerate(src):
                if t >= self.start:
                    yield frame


class Session:
    """One browser tab's work: a video in ``dir``, prompts per frame and object, result masks, a job."""

    def __init__(
        self, sid: str, root: Path, config: AppConfig, models: Models, gate: threading.Semaphore
    ) -> None:
        self.id = sid
        self.dir = root
        self.config = config
        self.models = models
        self._gate = gate
        self.lock = threading.RLock()
        self.last_seen = self.last_action = time.monotonic()
        self.video: Path | None = None
        self.name = ""
        self.num_frames = 0
        self.size = (0, 0)
        self.fps: float | None = None
        self.frame_names: list[str] = []
        self.objects: set[int] = set()
        self.prompts: dict[int, dict[int, Prompt]] = {}
        self.results: set[int] = set()  # frames with a result mask in dir/results
        self.dirty_from: int | None = None  # earliest frame whose prompts changed since the last propagation
        self.version = 0  # bumped when results change (the overlay video is rebuilt)
        self.job: Job | None = None
        self.closed = False
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    # ------------------------------------------------------------------------------------------- helpers
    def touch(self, action: bool = False) -> None:
        self.last_seen = time.monotonic()
        if action:
            self.last_action = self.last_seen

    @property
    def running(self) -> bool:
        return self.job is not None and self.job.state in ("queued", "running")

    def _need_video(self) -> None:
        if self.video is None:
            raise RecvosError("no video open: upload a video or open a path first")

    def _need_idle(self, what: str) -> None:
        if self.running:
            raise Busy(f"{what}: a propagation is running in this session; wait for it or press Cancel")

    def _frame_index(self, t: int) -> int:
        self._need_video()
        if not 0 <= int(t) < self.num_frames:
            raise RecvosError(f"frame {t} is outside the video (0..{self.num_frames - 1})")
        return int(t)

    # ----------------------------------------------------------------------------------------- the video
    def open_video(self, path: Path, name: str, owned: bool) -> dict[str, Any]:
        """Check ``path`` against the limits, decode its frames to JPEGs for display, make it the video.

        On any error the previous video, prompts and results stay as they were (``path`` is deleted if owned).
        """
        from PIL import Image

        from recvos.data.frames import open_frames

        self._need_idle("open a video")
        cfg = self.config
        staging = Path(tempfile.mkdtemp(prefix="frames.", dir=self.dir))
        try:
            with open_frames(path) as src:
                H, W = src.size
                if H * W > cfg.max_pixels:
                    raise RecvosError(
                        f"{name}: frames are {W}x{H}, over the limit of {cfg.max_pixels} pixels (--max-pixels); resize the video"
                    )
                n = src.num_frames
                if n is not None and n > cfg.max_frames:
                    raise RecvosError(
                        f"{name}: the video has {n} frames, over the limit of {cfg.max_frames} (--max-frames); trim it"
                    )
                count = 0
                for frame in src:
                    if count >= cfg.max_frames:
                        raise RecvosError(
                            f"{name}: the video has more than {cfg.max_frames} frames (--max-frames); trim it"
                        )
                    if self.closed:
                        raise RecvosError("session closed while the video was being read")
                    Image.fromarray(frame).save(staging / f"{count:05d}.jpg", quality=cfg.jpeg_quality)
                    count += 1
                if count == 0:
                    raise RecvosError(f"{name}: the video has no frames")
                fps, names = src.fps, list(src.frame_names)[:count]
        except BaseException as e:
            shutil.rmtree(staging, ignore_errors=True)
            if owned:
                path.unlink(missing_ok=True)
            if isinstance(e, RecvosError) and owned:  # name the user's file, not our temporary copy
                raise type(e)(str(e).replace(str(path), name)) from None
            raise
        with self.lock:
            self._need_idle("open a video")
            old_video = self.video
            for sub in ("frames", "results", "overlay.mp4"):
                p = self.dir / sub
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            staging.rename(self.dir / "frames")
            (self.dir / "results").mkdir()
            if old_video is not None and old_video.parent == self.dir and old_video != path:
                old_video.unlink(missing_ok=True)
            self.video, self.name, self.num_frames, self.size, self.fps = path, name, count, (H, W), fps
            self.frame_names = names if len(names) == count else [f"{t:05d}" for t in range(count)]
            self.objects, self.prompts, self.results, self.dirty_from, self.job = set(), {}, set(), None, None
            self._cache.clear()
            self.version += 1
        log.info("session %s: opened %s (%d frames, %dx%d)", self.id[:6], name, count, W, H)
        return self.info()

    def info(self) -> dict[str, Any]:
        """What the page needs to know about the video."""
        if self.video is None:
            return {}
        return {
            "name": self.name,
            "num_frames": self.num_frames,
            "height": self.size[0],
            "width": self.size[1],
            "fps": self.fps,
        }

    def frame(self, t: int) -> np.ndarray:
        """Frame ``t`` exactly as the segmenter decodes it (uint8 RGB [H, W, 3]); a few are cached."""
        from recvos.data.frames import FolderFrames, open_frames

        t = self._frame_index(t)
        with self.lock:
            if t in self._cache:
                self._cache.move_to_end(t)
                return self._cache[t]
        with open_frames(self.video) as src:
            if isinstance(src, FolderFrames):
                frame = src.load(t)
            else:
                frame = next(f for i, f in enumerate(src) if i == t)
        with self.lock:
            self._cache[t] = frame
            while len(self._cache) > 4:
                self._cache.popitem(last=False)
        return frame

    def display_frame(self, t: int) -> Path:
        """The JPEG of frame ``t`` shown in the page."""
        return self.dir / "frames" / f"{self._frame_index(t):05d}.jpg"

    def ids_at(self, t: int, with_prompts: bool = True) -> np.ndarray:
        """The id map int32 [H, W] of frame ``t``: its result, with this frame's prompt masks on top."""
        from recvos.data.masks import read_mask

        t = self._frame_index(t)
        ids = np.zeros(self.size, np.int32)
        if t in self.results:
            ids = read_mask(self.dir / "results" / f"{t:05d}.png").astype(np.int32)
        if with_prompts:
            for obj, p in sorted(self.prompts.get(t, {}).items()):
                ids[ids == obj] = 0
                if p.mask is not None:
                    ids[p.mask] = obj
        return ids

    def view(self, t: int) -> bytes:
        """JPEG bytes of frame ``t`` with its objects drawn over it."""
        from recvos.inference.overlay import blend

        frame = cv2.imread(str(self.display_frame(t)), cv2.IMREAD_COLOR)[..., ::-1]
        with self.lock:
            ids = self.ids_at(t)
        ok, buf = cv2.imencode(
            ".jpg", blend(np.ascontiguousarray(frame), ids)[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90]
        )
        return buf.tobytes()

    # --------------------------------------------------------------------------------------- prompts
    def add_prompt(
        self,
        t: int,
        obj: int,
        *,
        box: list[float] | None = None,
        point: list[float] | None = None,
        label: int = 1,
    ) -> dict[str, Any]:
        """Add a box (replaces the object's box on this frame) or a click to object ``obj`` on frame ``t``."""
        from recvos.prompts import mask_from_prompts, validate_prompts

        self.touch(action=True)
        t = self._frame_index(t)
        obj = int(obj)
        if not 1 <= obj <= MAX_OBJECT_ID:
            raise RecvosError(f"object id {obj}: ids are 1..{MAX_OBJECT_ID}")
        if box is None and point is None:
            raise RecvosError("no prompt given: draw a box or click on the frame")
        with self.lock:
            self._need_idle("add a prompt")
            old = self.prompts.get(t, {}).get(obj)
            base = old.base if old is not None else None
            if old is None and t in self.results:
                m = self.ids_at(t, with_prompts=False) == obj
                base = m if m.any() else None
            new = Prompt(
                box=list(box) if box is not None else (old.box if old else None),
                points=(old.points if old else []) + ([list(point)] if point is not None else []),
                labels=(old.labels if old else []) + ([int(label)] if point is not None else []),
                base=base,
            )
            # validate the new input alone first, so the message names it
            validate_prompts(
                self.size,
                box=box,
                points=[point] if point is not None else None,
                labels=[label] if point is not None else None,
            )
        frame = self.frame(t)
        # a new box starts over; a click refines the last mask (or the propagated one being corrected)
        previous = (
            None if box is not None else (old.mask if old is not None and old.mask is not None else base)
        )
        new.mask = mask_from_prompts(
            frame,
            box=new.box,
            points=new.points or None,
            labels=new.labels or None,
            previous=previous,
            method=self.config.method,
        )
        with self.lock:
            self._need_idle("add a prompt")
            self.prompts.setdefault(t, {})[obj] = new
            self.objects.add(obj)
            self.dirty_from = t if self.dirty_from is None else min(self.dirty_from, t)
        area = int(new.mask.sum())
        return {
            "frame": t,
            "obj": obj,
            "area": area,
            "message": "" if area else "the mask is empty: click on the object",
        }

    def clear_prompt(self, t: int, obj: int) -> None:
        """Forget object ``obj``'s prompts on frame ``t``."""
        self.touch(action=True)
        t = self._frame_index(t)
        with self.lock:
            self._need_idle("clear")
            if self.prompts.get(t, {}).pop(int(obj), None) is not None:
                self.dirty_from = t if self.dirty_from is None else min(self.dirty_from, t)
            self.prompts = {k: v for k, v in self.prompts.items() if v}

    def remove_object(self, obj: int) -> None:
        """Remove an object everywhere: its prompts and its pixels in the results."""
        from recvos.data.masks import read_mask, write_mask

        self.touch(action=True)
        obj = int(obj)
        with self.lock:
            self._need_idle("remove an object")
            if obj not in self.objects:
                raise RecvosError(f"no object {obj}; objects: {sorted(self.objects)}")
            for p in self.prompts.values():
                p.pop(obj, None)
            self.prompts = {k: v for k, v in self.prompts.items() if v}
            for t in sorted(self.results):
                path = self.dir / "results" / f"{t:05d}.png"
                ids = read_mask(path)
                if (ids == obj).any():
                    ids[ids == obj] = 0
                    write_mask(path, ids)
            self.objects.discard(obj)
            self.version += 1

    def reset(self) -> None:
        """Forget all objects, prompts and results (the video stays)."""
        self.touch(action=True)
        with self.lock:
            self._need_idle("reset")
            shutil.rmtree(self.dir / "results", ignore_errors=True)
            (self.dir / "results").mkdir(exist_ok=True)
            self.objects, self.prompts, self.results, self.dirty_from = set(), {}, set(), None
            self.version += 1

    def prompt_list(self, t: int) -> list[dict[str, Any]]:
        t = self._frame_index(t)
        with self.lock:
            return [{"obj": o, **p.summary()} for o, p in sorted(self.prompts.get(t, {}).items())]

    # ----------------------------------------------------------------------------------- propagation
    def propagate(self, zero_shot: bool = False, online: bool = False, flip: bool = False) -> dict[str, Any]:
        """Start propagating in a thread; refused while one runs, with no object, or with nothing changed.
        ``online``: fine-tune on the objects' masks first (online learning, the recommended number of steps).
        ``flip``: the Segmenter's test-time flip for this propagation (one-shot, and zero-shot's tracker)."""
        self.touch(action=True)
        with self.lock:
            self._need_video()
            if self.running:
                raise Busy("a propagation is already running in this session; wait for it or press Cancel")
            if zero_shot:
                if online:
                    raise RecvosError(
                        "online learning learns from your objects' masks: untick it for Zero-shot"
                    )
                if self.prompts or self.objects:
                    raise RecvosError(
                        "zero-shot finds the objects itself: press Reset to remove your objects first"
                    )
                start, init, later = 0, {}, {}
            else:
                empty = [
                    (t, o)
                    for t, ps in self.prompts.items()
                    for o, p in ps.items()
                    if p.mask is None or not p.mask.any()
                ]
                if empty:
                    t, o = min(empty)
                    raise RecvosError(
                        f"object {o} has an empty mask on frame {t}: click on the object, or clear it"
                    )
                if not self.prompts and not self.results:
                    raise RecvosError(
                        "no object to propagate: draw a box or click on an object first (or use Zero-shot)"
                    )
                if self.dirty_from is None:
                    raise RecvosError(
                        "nothing changed since the last propagation: correct a frame or add an object first"
                    )
                start = self.dirty_from if self.results else 0
                ids = self.ids_at(start)
                init = {int(o): ids == o for o in np.unique(ids) if o > 0 and int(o) in self.objects}
                later = {
                    t - start: {o: p.mask for o, p in ps.items()}
                    for t, ps in self.prompts.items()
                    if t > start
                }
                if not init and not later:
                    raise RecvosError(
                        f"no object on frame {start} or later: draw a box or click on an object there"
                    )
            job = Job(
                "zero-shot" if zero_shot else "one-shot",
                start,
                self.num_frames,
                online_steps=online_steps() if online else 0,
                flip=flip,
            )
            job.thread = threading.Thread(
                target=self._run, args=(job, init, later), name=f"propagate-{self.id[:6]}", daemon=True
            )
            self.job = job
            job.thread.start()
            return job.summary()

    def cancel(self) -> None:
        """Stop the running propagation after the current frame (frames written so far are kept)."""
        if self.job is not None:
            self.job.cancel.set()

    def _run(self, job: Job, init: dict[int, np.ndarray], later: dict[int, dict[int, np.ndarray]]) -> None:
        from recvos.data.masks import write_mask

        acquired = False
        last = None
        seg = flip_before = None
        try:
            while not (acquired := self._gate.acquire(timeout=0.2)):
                if job.cancel.is_set():
                    job.state, job.message = "cancelled", "cancelled before it started"
                    return
            seg = self.models.get(job.kind)
            flip_before, seg.flip = seg.flip, job.flip  # this job's (the gate makes it the only one running)
            job.state = "running"
            state = seg.init_state(_FramesFrom(self.video, job.start, self.num_frames))
            if init:
                seg.add_mask(state, 0, init)
            for k, masks in sorted(later.items()):
                seg.add_mask(state, k, masks)
            if job.online_steps:

                def step(done: int, steps: int) -> bool:
                    job.message = f"online learning: step {done} / {steps}"
                    return job.cancel.is_set() or self.closed  # Cancel stops it (original weights kept)

                job.message = "online learning: fine-tuning on your masks"
                seg.finetune(state, steps=job.online_steps, progress=step)  # undone when propagate ends
                job.message = ""
            # nothing to propagate if Cancel came during online learning
            stopped = job.cancel.is_set() or self.closed
            gen = None if stopped else seg.propagate(state, zero_shot=job.kind == "zero-shot")
            try:
                for k, obj_ids, ids in gen or ():
                    t = job.start + k
                    write_mask(self.dir / "results" / f"{t:05d}.png", ids)
                    with self.lock:
                        self.results.add(t)
                        self.objects.update(int(o) for o in obj_ids)
                        self.version += 1
                        last = t
                        job.done = k + 1
                    if job.cancel.is_set() or self.closed:  # the frame computed is kept, then stop
                        break
            finally:
                if gen is not None:
                    gen.close()
                state.close()
            with self.lock:
                if job.cancel.is_set() or self.closed:
                    job.state = "cancelled"
                    job.message = "cancelled" + (
                        f" after frame {last}; frames up to it are kept" if last is not None else ""
                    )
                    # continue from the last finished frame next time (its mask is the new reference)
                    if last is not None:
                        self.dirty_from = last
                else:
                    job.state = "done"
                    self.dirty_from = None
        except RecvosError as e:
            job.state, job.message = "error", str(e)
        except Exception as e:  # a bug: log it with the traceback, show one line
            log.exception("session %s: propagation failed", self.id[:6])
            job.state, job.message = "error", f"propagation failed: {type(e).__name__}: {e}"
        finally:
            if seg is not None:
                seg.flip = flip_before
            if acquired:
                self._gate.release()

    # -------------------------------------------------------------------------------------- downloads
    def _need_results(self, what: str) -> None:
        self._need_video()
        self._need_idle(what)
        if not self.results:
            raise RecvosError(f"{what}: nothing segmented yet; propagate first")

    def masks_zip(self) -> bytes:
        """The result masks as DAVIS-palette PNGs named after the frames, zipped (frames never reached: empty)."""
        from recvos.data.masks import write_mask

        self.touch(action=True)
        with self.lock:
            self._need_results("download masks")
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
                empty = None
                for t in range(self.num_frames):
                    path = self.dir / "results" / f"{t:05d}.png"
                    if t not in self.results:
                        if empty is None:
                            empty = self.dir / "empty.png"
                            write_mask(empty, np.zeros(self.size, np.int32))
                        path = empty
                    zf.write(path, f"{self.frame_names[t]}.png")
            return buf.getvalue()

    def overlay_video(self) -> Path:
        """The overlay mp4 of the results (rebuilt when they changed)."""
        from recvos.data.frames import open_frames
        from recvos.data.masks import read_mask
        from recvos.inference.overlay import OverlayWriter

        self.touch(action=True)
        with self.lock:
            self._need_results("download the overlay")
            out = self.dir / f"overlay.v{self.version}.mp4"
            if out.is_file():
                return out
            for old in self.dir.glob("overlay.v*.mp4"):
                old.unlink(missing_ok=True)
            zeros = np.zeros(self.size, np.int32)
            with open_frames(self.video) as src, OverlayWriter(out, fps=self.fps) as writer:
                for t, frame in enumerate(src):
                    if t >= self.num_frames:
                        break
                    ids = read_mask(self.dir / "results" / f"{t:05d}.png") if t in self.results else zeros
                    writer.write(frame, ids)
            return out

    def status(self) -> dict[str, Any]:
        with self.lock:
            return {
                "video": self.info(),
                "objects": sorted(self.objects),
                "results": len(self.results),
                "dirty_from": self.dirty_from,
                "job": self.job.summary() if self.job else None,
                "version": self.version,
            }

    # -------------------------------------------------------------------------------------------- end
    def close(self, wait: float = 30.0) -> None:
        """Cancel the job, wait for it (up to ``wait`` s) and remove the session's folder."""
        self.closed = True
        job = self.job
        if job is not None:
            job.cancel.set()
            if job.thread is not None and job.thread is not threading.current_thread():
                job.thread.join(wait)
        shutil.rmtree(self.dir, ignore_errors=True)
        log.info("session %s closed; removed %s", self.id[:6], self.dir)


class SessionStore:
    """All sessions of one server, their temporary folders and the reaper that ends abandoned ones."""

    def __init__(self, config: AppConfig, models: Models | None = None) -> None:
        self.config = config
        self.models = models or Models(config)
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self._gate = threading.Semaphore(1)
        self.root = Path(tempfile.mkdtemp(prefix="recvos-app-", dir=config.workdir))
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None

    def create(self) -> Session:
        sid = secrets.token_urlsafe(18)
        folder = self.root / sid
        folder.mkdir(mode=0o700)
        s = Session(sid, folder, self.config, self.models, self._gate)
        with self._lock:
            self._sessions[sid] = s
        log.info("session %s opened", sid[:6])
        return s

    def get(self, sid: str) -> Session:
        with self._lock:
            s = self._sessions.get(sid)
        if s is None:
            raise KeyError(sid)
        s.touch()
        return s

    def end(self, sid: str) -> bool:
        with self._lock:
            s = self._sessions.pop(sid, None)
        if s is not None:
            s.close()
        return s is not None

    def __len__(self) -> int:
        return len(self._sessions)

    def reap(self, now: float | None = None) -> list[str]:
        """End the sessions whose heartbeats stopped or that were idle too long; returns their ids."""
        now = time.monotonic() if now is None else now
        cfg = self.config
        with self._lock:
            stale = [
                sid
                for sid, s in self._sessions.items()
                if now - s.last_seen > cfg.heartbeat_timeout
                or (now - s.last_action > cfg.idle_timeout and not s.running)
            ]
        for sid in stale:
            log.info("session %s timed out", sid[:6])
            self.end(sid)
        return stale

    def start_reaper(self) -> None:
        if self._reaper is None:
            self._reaper = threading.Thread(target=self._reap_loop, name="recvos-app-reaper", daemon=True)
            self._reaper.start()

    def _reap_loop(self) -> None:
        while not self._stop.wait(self.config.reap_interval):
            try:
                self.reap()
            except Exception:  # the reaper must survive a failed removal
                log.exception("reaping sessions failed")

    def close(self) -> None:
        """End every session and remove the server's temporary folder."""
        self._stop.set()
        for sid in list(self._sessions):
            self.end(sid)
        shutil.rmtree(self.root, ignore_errors=True)
