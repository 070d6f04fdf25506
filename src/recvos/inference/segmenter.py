"""The streaming segmenter: prompt objects with masks on any frame, then propagate through a video lazily.

Modelled on SAM 2's video predictor, but streaming: frames are decoded one at a time, the model's recurrent
state is the only memory carried from frame to frame, and nothing per frame is kept::

    seg = load_model("path/to/model.pt")
    state = seg.init_state("video.mp4")              # a video file, frame folder, FrameSource or iterable
    seg.add_mask(state, frame_idx=0, mask=ids)       # int id map [H, W] or {obj_id: bool [H, W]} or a PNG path
    for frame_idx, obj_ids, masks in seg.propagate(state):
        ...                                          # masks: int id map [H, W] at the original resolution

User object ids are arbitrary positive ints mapped to internal slots; objects added at frame k appear from
frame k on; a mask given on a frame overrides the prediction for its objects there. Without any mask,
``propagate(state, zero_shot=True)`` uses the model's ``max_objects`` slots and reports the slots whose
objectness and area pass thresholds, with id = slot number (stable over time).

Frames are processed at ``max_size`` (the shorter side, default 240: about 240x427 for 480p input, never
upscaled) and the logits are upsampled bilinearly to the output size (the frames', or ``output_size``).
"""

from __future__ import annotations

import copy
import itertools
import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from recvos.data.frames import FrameSource, open_frames
from recvos.errors import RecvosError
from recvos.models.base import RecurrentState, RecurrentVOS

log = logging.getLogger(__name__)

FrameInput = str | os.PathLike | FrameSource | Iterable[np.ndarray]
MaskInput = np.ndarray | Mapping[int, np.ndarray] | str | os.PathLike


# ----------------------------------------------------------------------------------------------- helpers
def processing_size(frame_size: tuple[int, int], max_size: int | None) -> tuple[int, int]:
    """(h, w) with the shorter side at most ``max_size``, aspect kept, never upscaled."""
    H, W = frame_size
    if not max_size or min(H, W) <= max_size:
        return H, W
    s = max_size / min(H, W)
    return max(1, round(H * s)), max(1, round(W * s))


def resize_ids(ids: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an id map int [H, W] to ``size`` (h, w) -> int32 [h, w]."""
    if ids.shape == tuple(size):
        return ids.astype(np.int32, copy=False)
    h, w = size
    if ids.min(initial=0) >= 0 and ids.max(initial=0) < 65536:
        return cv2.resize(ids.astype(np.uint16), (w, h), interpolation=cv2.INTER_NEAREST).astype(np.int32)
    ys = np.minimum((np.arange(h) + 0.5) * ids.shape[0] / h, ids.shape[0] - 1).astype(int)
    xs = np.minimum((np.arange(w) + 0.5) * ids.shape[1] / w, ids.shape[1] - 1).astype(int)
    return ids[ys[:, None], xs[None, :]].astype(np.int32)


def resize_binary(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """bool [H, W] -> bool ``size``: area average >= 0.5 when shrinking (nearest when that empties it)."""
    if mask.shape == tuple(size):
        return mask.astype(bool, copy=False)
    h, w = size
    if h <= mask.shape[0] and w <= mask.shape[1]:
        out = cv2.resize(mask.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA) >= 0.5
        if out.any() or not mask.any():
            return out
    return cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)


def _aspect_close(a: tuple[int, int], b: tuple[int, int], tol: float = 0.02) -> bool:
    ra, rb = a[1] / a[0], b[1] / b[0]
    return abs(ra - rb) <= tol * rb


# --- generic per-object operations on a model's recurrent state (see Segmenter._object_axes) ---
def _probe_axis(a: Any, b: Any, where: str) -> Any:
    """Object axis of each tensor, from states built with 1 (``a``) and 2 (``b``) objects; None = shared."""
    if isinstance(a, torch.Tensor):
        diff = [i for i, (x, y) in enumerate(zip(a.shape, b.shape, strict=True)) if x != y]
        if not diff:
            return None
        if len(diff) == 1 and b.shape[diff[0]] == 2 * a.shape[diff[0]]:
            return diff[0]
        raise RuntimeError(f"cannot find the object axis of state field {where}: {tuple(a.shape)} vs {tuple(b.shape)}")
    if isinstance(a, (list, tuple)):
        return type(a)(_probe_axis(x, y, f"{where}[{i}]") for i, (x, y) in enumerate(zip(a, b, strict=True)))
    return None


def _cat_tree(a: Any, b: Any, axes: Any) -> Any:
    if isinstance(a, torch.Tensor):
        return a if axes is None else torch.cat([a, b.to(a.dtype)], dim=axes)
    if isinstance(a, (list, tuple)):
        return type(a)(_cat_tree(x, y, ax) for x, y, ax in zip(a, b, axes, strict=True))
    return a


def _select_tree(a: Any, index: torch.Tensor, axes: Any) -> Any:
    if isinstance(a, torch.Tensor):
        return a if axes is None else a.index_select(axes, index.to(a.device))
    if isinstance(a, (list, tuple)):
        return type(a)(_select_tree(x, index, ax) for x, ax in zip(a, axes, strict=True))
    return a


# ------------------------------------------------------------------------------------------------ state
@dataclass
class FinetuneResult:
    """What :meth:`Segmenter.finetune` did: seconds, steps, IoU on held-out warps before/after, kept or not."""

    seconds: float
    steps: int
    iou_before: float
    iou_after: float
    kept: bool


@dataclass
class InferenceState:
    """Everything about one video except its frames: prompts, object ids, sizes and progress.

    ``prompts[frame_idx][obj_id]`` is a bool [H_out, W_out] mask. ``current_frame`` is the frame (uint8 RGB
    [H, W, 3], original size) of the index last yielded by ``propagate`` — the only frame ever held.
    """

    source: Any
    frame_size: tuple[int, int]
    output_size: tuple[int, int]
    proc_size: tuple[int, int]
    num_frames: int | None
    fps: float | None
    prompts: dict[int, dict[int, np.ndarray]] = field(default_factory=dict)
    removed: set[int] = field(default_factory=set)
    next_frame: int = 0
    running: bool = False
    current_frame: np.ndarray | None = None
    finetune_result: FinetuneResult | None = None
    _names: list[str] | None = None
    _peeked: np.ndarray | None = None
    _iterator: Iterator[np.ndarray] | None = None
    _owned: bool = False

    @property
    def object_ids(self) -> list[int]:
        """Prompted object ids, in order of first appearance (then id)."""
        first: dict[int, int] = {}
        for t in sorted(self.prompts):
            for o in sorted(self.prompts[t]):
                first.setdefault(o, t)
        return sorted(first, key=lambda o: (first[o], o))

    def frame_name(self, idx: int) -> str:
        """File stem of frame ``idx`` (folder sources) or ``f"{idx:05d}"``."""
        if self._names is not None and idx < len(self._names):
            return self._names[idx]
        return f"{idx:05d}"

    def close(self) -> None:
        """Close the frame source if init_state opened it."""
        if self._owned and hasattr(self.source, "close"):
            self.source.close()


# -------------------------------------------------------------------------------------------- segmenter
class Segmenter:
    """Streams a :class:`~recvos.models.base.RecurrentVOS` model over videos (see the module docstring).

    ``max_size``: processing size (shorter side); ``mask_threshold``: probability for a pixel to belong to an
    object; ``objectness_threshold`` and ``min_area`` (fraction of the frame) select zero-shot instances.
    ``optimize``: propagate with a copy of the model passed through ``optimize_for_inference`` (BatchNorm
    folded, channels-last; same outputs up to rounding); ``self.model`` itself stays trainable and savable.
    """

    def __init__(
        self,
        model: RecurrentVOS,
        device: str | torch.device = "cpu",
        *,
        max_size: int | None = 240,
        mask_threshold: float = 0.5,
        objectness_threshold: float = 0.5,
        min_area: float = 0.001,
        optimize: bool = True,
    ) -> None:
        self.device = torch.device(device)
        self.optimize = optimize
        self._fast: RecurrentVOS | None = None  # the optimised copy, rebuilt when the weights change
        self.model = model.to(self.device).eval()
        self.max_size = max_size
        self.mask_threshold = mask_threshold
        self.objectness_threshold = objectness_threshold
        self.min_area = min_area
        self._pristine: dict[str, torch.Tensor] | None = None  # weights before online fine-tuning
        self._finetuned_for: int | None = None  # id() of the state the fine-tuning belongs to
        self._axes: dict[str, Any] | None = None

    def _runner(self) -> RecurrentVOS:
        """The model used for propagation: ``self.model`` or its optimised copy."""
        if not self.optimize or not hasattr(self.model, "optimize_for_inference"):
            return self.model
        if self._fast is None:
            self._fast = copy.deepcopy(self.model).eval().optimize_for_inference()
        return self._fast

    def refresh(self) -> None:
        """Call after changing ``self.model``'s weights by hand: the optimised copy is rebuilt on next use."""
        self._fast = None
        self._axes = None

    # ---------------------------------------------------------------------------------------- set-up
    def init_state(
        self,
        source: FrameInput,
        *,
        output_size: tuple[int, int] | None = None,
        max_size: int | None = None,
    ) -> InferenceState:
        """Open a video for segmentation without decoding it (an iterable's first frame is read, to size it).

        source: a video file or frame folder (path), a FrameSource, or an iterable of uint8 RGB [H, W, 3]
        frames (lists and other re-iterable collections can be propagated more than once). output_size
        (H, W): size of the returned masks (default: the frames'). Fine-tuned weights of a previous video
        are restored first.
        """
        self.restore_weights()
        owned = False
        names = None
        peeked = None
        iterator = None
        if isinstance(source, (str, os.PathLike)):
            source = open_frames(source)
            owned = True
        if isinstance(source, FrameSource):
            frame_size = tuple(source.size)
            num_frames, fps, names = source.num_frames, source.fps, list(source.frame_names)
        else:
            num_frames = len(source) if hasattr(source, "__len__") else None
            fps = None
            iterator = iter(source)
            if iterator is not source:  # re-iterable: read its first frame now and again later
                iterator = None
                first = next(iter(source), None)
            else:
                first = peeked = next(iterator, None)
            if first is None:
                raise RecvosError("init_state: the frame iterable is empty; give at least one frame")
            frame_size = self._check_frame(first, 0).shape[:2]
        frame_size = (int(frame_size[0]), int(frame_size[1]))
        proc = processing_size(frame_size, self.max_size if max_size is None else max_size)
        out = tuple(int(x) for x in output_size) if output_size is not None else frame_size
        return InferenceState(
            source=source,
            frame_size=frame_size,
            output_size=out,
            proc_size=proc,
            num_frames=num_frames,
            fps=fps,
            _names=names,
            _peeked=peeked,
            _iterator=iterator,
            _owned=owned,
        )

    @staticmethod
    def _check_frame(frame: Any, idx: int, size: tuple[int, int] | None = None) -> np.ndarray:
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

    # --------------------------------------------------------------------------------------- prompts
    def add_mask(self, state: InferenceState, frame_idx: int, mask: MaskInput) -> list[int]:
        """Give masks for frame ``frame_idx``: an int id map [H, W] (0 = background), ``{obj_id: bool [H, W]}``,
        or the path of a mask PNG. Allowed for any frame propagation has not reached yet.

        The mask is resized to the output size (a different aspect ratio is an error; a small size mismatch
        is resized with a warning). Returns the object ids it holds.
        """
        where = f"mask for frame {frame_idx}"
        if isinstance(mask, (str, os.PathLike)):
            from recvos.data.masks import read_mask

            where = str(mask)
            mask = read_mask(mask)
        frame_idx = int(frame_idx)
        if frame_idx < 0:
            raise RecvosError(f"{where}: frame index {frame_idx} is negative")
        if state.num_frames is not None and frame_idx >= state.num_frames:
            raise RecvosError(
                f"{where}: frame index {frame_idx} is beyond the video ({state.num_frames} frames, 0..{state.num_frames - 1})"
            )
        if state.running and frame_idx < state.next_frame:
            raise RecvosError(
                f"{where}: propagation already passed frame {frame_idx} (now at {state.next_frame}); "
                "add masks before propagation reaches their frame"
            )
        if isinstance(mask, Mapping):
            objs = {}
            for obj, m in mask.items():
                obj = int(obj)
                if obj <= 0:
                    raise RecvosError(f"{where}: object id {obj} must be a positive integer (0 is background)")
                m = np.asarray(m)
                if m.ndim != 2:
                    raise RecvosError(f"{where}: object {obj} mask must be 2-D [H, W], got {tuple(m.shape)}")
                m = self._fit_size(m.astype(np.uint8), state, where) > 0
                if not m.any():
                    raise RecvosError(f"{where}: object {obj} mask is empty; give at least one foreground pixel")
                objs[obj] = m
        else:
            ids = np.asarray(mask)
            if ids.ndim != 2:
                raise RecvosError(f"{where}: an id map must be 2-D [H, W], got shape {tuple(ids.shape)}")
            if ids.dtype == bool:
                ids = ids.astype(np.int32)
            if not np.issubdtype(ids.dtype, np.integer):
                raise RecvosError(f"{where}: an id map must hold integers, got {ids.dtype}")
            if ids.min(initial=0) < 0:
                raise RecvosError(f"{where}: negative object ids; ids are 0 (background) or positive")
            ids = self._fit_size(ids, state, where)
            obj_ids = [int(o) for o in np.unique(ids) if o > 0]
            if not obj_ids:
                raise RecvosError(f"{where}: the mask has no objects (every pixel is background 0); give object ids > 0")
            objs = {o: ids == o for o in obj_ids}
        if not objs:
            raise RecvosError(f"{where}: the mask has no objects; give at least one")
        state.prompts.setdefault(frame_idx, {}).update(objs)
        state.removed.difference_update(objs)
        return sorted(objs)

    @staticmethod
    def _fit_size(m: np.ndarray, state: InferenceState, where: str) -> np.ndarray:
        """Bring an id map / binary mask to the output size: exact, frame size, or close aspect (warning)."""
        shape = tuple(m.shape)
        out = state.output_size
        if shape == out:
            return m.astype(np.int32, copy=False)
        if shape != state.frame_size:
            if not _aspect_close(shape, out):
                raise RecvosError(
                    f"{where}: mask is {shape[1]}x{shape[0]} but the frames are {state.frame_size[1]}x"
                    f"{state.frame_size[0]} (output {out[1]}x{out[0]}); give a mask of the frame size"
                )
            log.warning("%s: mask is %dx%d, resizing to %dx%d", where, shape[1], shape[0], out[1], out[0])
        return resize_ids(m, out)

    def remove_object(self, state: InferenceState, obj_id: int) -> None:
        """Forget an object: its prompts go and, mid-propagation, its slot from the next frame on."""
        obj_id = int(obj_id)
        known = set(state.object_ids)
        if obj_id not in known and not state.running:
            raise RecvosError(f"remove_object: no object {obj_id}; known ids: {sorted(known)}")
        for prompt in state.prompts.values():
            prompt.pop(obj_id, None)
        state.prompts = {t: p for t, p in state.prompts.items() if p}
        state.removed.add(obj_id)

    # ----------------------------------------------------------------------------------- propagation
    def _frames(self, state: InferenceState) -> Iterator[np.ndarray]:
        if isinstance(state.source, FrameSource) or state._iterator is None:
            return iter(state.source)
        if state._peeked is None:
            raise RecvosError(
                "the frames were given as an iterator and were consumed by an earlier propagate; "
                "pass a path, FrameSource or list to propagate twice"
            )
        first, state._peeked = state._peeked, None
        return itertools.chain([first], state._iterator)

    def _to_input(self, frame: np.ndarray, proc: tuple[int, int]) -> torch.Tensor:
        """uint8 RGB [H, W, 3] -> float [1, 3, h, w] in [0, 1] on the device, resized to the processing size."""
        h, w = proc
        if frame.shape[:2] != (h, w):
            frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
        if not frame.flags.writeable or not frame.flags.c_contiguous:
            frame = np.array(frame)  # torch wants a writable, contiguous buffer
        x = torch.from_numpy(frame).to(self.device)
        return x.permute(2, 0, 1).unsqueeze(0).float().div_(255)

    def _object_axes(self, x: torch.Tensor) -> dict[str, Any]:
        """Per-field object axis of the model's state, found by building states with 1 and 2 objects."""
        if self._axes is None:
            model = self._runner()
            h, w = x.shape[-2:]
            m = torch.zeros(1, 2, h, w, device=x.device)
            m[:, 0, : max(1, h // 2)] = 1
            m[:, 1, max(1, h // 2) :] = 1
            s1 = model.init_state(x, m[:, :1])
            s2 = model.init_state(x, m)
            self._axes = {
                f.name: _probe_axis(getattr(s1, f.name), getattr(s2, f.name), f.name)
                for f in fields(s1)
                if f.name != "num_objects"
            }
        return self._axes

    def _extend_state(self, st: RecurrentState, x: torch.Tensor, masks: torch.Tensor) -> RecurrentState:
        """Add objects to a running state: their slots start as ``init_state(frame, masks)`` would."""
        model = self._runner()
        if hasattr(model, "extend_state"):
            return model.extend_state(st, x, masks)
        fresh = model.init_state(x, masks)
        axes = self._object_axes(x)
        kw = {name: _cat_tree(getattr(st, name), getattr(fresh, name), ax) for name, ax in axes.items()}
        return type(st)(num_objects=st.num_objects + fresh.num_objects, **kw)

    def _select_objects(self, st: RecurrentState, keep: list[int], x: torch.Tensor) -> RecurrentState:
        """Keep only the slots ``keep`` (indices) of a running state."""
        index = torch.tensor(keep, dtype=torch.long)
        if hasattr(self._runner(), "select_objects"):
            return self._runner().select_objects(st, index)
        axes = self._object_axes(x)
        kw = {name: _select_tree(getattr(st, name), index, ax) for name, ax in axes.items()}
        return type(st)(num_objects=len(keep), **kw)

    def propagate(
        self, state: InferenceState, zero_shot: bool = False, return_probs: bool = False
    ) -> Iterator[tuple[int, list[int], np.ndarray]]:
        """Segment the video frame by frame, lazily: yields ``(frame_idx, obj_ids, masks)``.

        masks: int32 id map [H, W] at the output size, or with ``return_probs`` float32 probabilities
        [len(obj_ids), H, W] (in the order of ``obj_ids``). One-shot: ``obj_ids`` are the objects prompted
        on this frame or earlier. Zero-shot: the slots (id = slot number, 1-based) whose objectness exceeds
        ``objectness_threshold`` and whose area exceeds ``min_area``. Fine-tuned weights are restored when
        the generator finishes or is closed.
        """
        if zero_shot and state.prompts:
            raise RecvosError("zero-shot propagation takes no masks; remove them or use zero_shot=False")
        if not zero_shot and not state.prompts:
            raise RecvosError("no masks given: call add_mask(state, frame_idx, mask) first, or propagate(zero_shot=True)")
        if state.running:
            raise RecvosError("this state is already being propagated; finish or close that generator first")
        state.running, state.next_frame = True, 0
        frames = self._frames(state)
        try:
            with torch.inference_mode():
                yield from self._run(state, frames, zero_shot, return_probs)
        finally:
            state.running = False
            state.current_frame = None
            close = getattr(frames, "close", None)
            if close is not None:
                close()
            if self._finetuned_for == id(state):
                self.restore_weights()

    def _run(
        self, state: InferenceState, frames: Iterator[np.ndarray], zero_shot: bool, return_probs: bool
    ) -> Iterator[tuple[int, list[int], np.ndarray]]:
        model = self._runner()
        H, W = state.output_size
        h, w = state.proc_size
        mst: RecurrentState | None = None  # the model's recurrent state
        slots: list[int] = []  # user id of each slot
        prev: torch.Tensor | None = None  # [1, O, h, w] previous probabilities
        t = -1
        for t, frame in enumerate(frames):
            state.next_frame = t
            frame = self._check_frame(frame, t, state.frame_size)
            state.current_frame = frame
            x = self._to_input(frame, (h, w))
            if mst is not None and state.removed & set(slots) and not zero_shot:
                keep = [i for i, o in enumerate(slots) if o not in state.removed]
                mst = self._select_objects(mst, keep, x)
                prev = prev[:, keep]
                slots = [slots[i] for i in keep]
            prompt = state.prompts.get(t, {})
            new = [o for o in sorted(prompt) if o not in slots]
            if new:
                m = torch.from_numpy(np.stack([resize_binary(prompt[o], (h, w)) for o in new])).to(x)[None]
                if mst is None or not slots:
                    mst, prev = model.init_state(x, m), m
                else:
                    mst, prev = self._extend_state(mst, x, m), torch.cat([prev, m], 1)
                slots = slots + new
            elif mst is None and zero_shot:
                mst = model.init_state(x, None)
                slots = list(range(1, mst.num_objects + 1))
                prev = x.new_zeros(1, mst.num_objects, h, w)
            if mst is None or not slots:  # nothing to track yet (objects appear later)
                state.next_frame = t + 1
                yield t, [], (np.zeros((0, H, W), np.float32) if return_probs else np.zeros((H, W), np.int32))
                continue
            out = model.step(x, mst, prev if model.uses_prev_masks else None)
            mst = out.state
            logits = out.logits[0]  # [O, h, w]
            probs_small = torch.sigmoid(logits)
            if prompt:  # given masks win on their frame, also for the next step's previous masks
                given = {slots.index(o): torch.from_numpy(resize_binary(pm, (h, w))).to(x.device) for o, pm in prompt.items()}
                probs_small = self._override(probs_small, given)
            prev = probs_small[None]
            keep = torch.ones(len(slots), dtype=torch.bool, device=x.device)
            if zero_shot:
                area = (probs_small > self.mask_threshold).flatten(1).float().mean(1)
                keep = (out.objectness[0] > self.objectness_threshold) & (area > self.min_area)
                for i, o in enumerate(slots):
                    if o in state.removed:
                        keep[i] = False
            probs = torch.sigmoid(F.interpolate(logits[None], size=(H, W), mode="bilinear", align_corners=False)[0])
            if prompt:
                given = {slots.index(o): torch.from_numpy(pm).to(x.device) for o, pm in prompt.items()}
                probs = self._override(probs, given)
            sel = keep.nonzero()[:, 0].tolist()
            obj_ids = [slots[i] for i in sel]
            state.next_frame = t + 1
            if return_probs:
                yield t, obj_ids, probs[sel].float().cpu().numpy()
            else:
                yield t, obj_ids, self._compose(probs[sel], obj_ids)
        seen = t + 1
        late = sorted(i for i in state.prompts if i >= seen)
        if late:
            raise RecvosError(
                f"masks were given for frame(s) {late[:5]} but the video has only {seen} frames (0..{seen - 1}); "
                "check the mask file names / frame indices"
            )

    @staticmethod
    def _override(probs: torch.Tensor, given: dict[int, torch.Tensor]) -> torch.Tensor:
        """probs [O, h, w]; given {slot: bool [h, w]} -> the given slots set to their masks, others cleared there."""
        probs = probs.clone()
        union = torch.zeros_like(probs[0], dtype=torch.bool)
        for m in given.values():
            union |= m
        probs[:, union] = 0
        for i, m in given.items():
            probs[i] = m.to(probs.dtype)
        return probs

    def _compose(self, probs: torch.Tensor, obj_ids: list[int]) -> np.ndarray:
        """probs [O, H, W] -> int32 id map [H, W]: the most probable object where it exceeds the threshold."""
        if not obj_ids:
            return np.zeros(probs.shape[-2:], np.int32)
        best, arg = probs.max(0)
        lut = torch.tensor(obj_ids, dtype=torch.int32, device=probs.device)
        ids = torch.where(best > self.mask_threshold, lut[arg], torch.zeros_like(arg, dtype=torch.int32))
        return ids.cpu().numpy()

    # ------------------------------------------------------------------------------ online learning
    def finetune(self, state: InferenceState, steps: int = 50, **options: Any) -> float:
        """Online learning (S2S "OL"): fine-tune on warped pairs of the annotated frame(s); returns seconds.

        See :func:`recvos.inference.online.finetune` for the options. The weights are restored when the next
        ``propagate`` of this state ends, by :meth:`restore_weights`, or by the next ``init_state``.
        """
        from recvos.inference.online import finetune

        t0 = time.perf_counter()
        samples = self._annotated_frames(state)
        if self._pristine is None:
            self._pristine = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self._finetuned_for = id(state)
        self._fast = None
        try:
            result = finetune(self.model, samples, state.proc_size, steps=steps, **options)
        except BaseException:
            self.restore_weights()
            raise
        result.seconds = time.perf_counter() - t0
        state.finetune_result = result
        log.info(
            "online learning: %d steps in %.1f s, IoU on held-out warps %.3f -> %.3f (%s)",
            result.steps, result.seconds, result.iou_before, result.iou_after, "kept" if result.kept else "reverted",
        )
        return result.seconds

    def _annotated_frames(self, state: InferenceState) -> list[tuple[np.ndarray, np.ndarray]]:
        """(frame uint8 [H, W, 3], ids int [H_out, W_out] over 1..K for the frame's objects) per prompted frame."""
        if not state.prompts:
            raise RecvosError("finetune needs masks: call add_mask(state, frame_idx, mask) first")
        if state.running:
            raise RecvosError("finetune cannot run while the state is being propagated")
        wanted = sorted(state.prompts)
        frames: dict[int, np.ndarray] = {}
        if state._iterator is not None:  # a one-shot iterator: only the peeked first frame is available
            if state._peeked is not None and 0 in state.prompts:
                frames[0] = state._peeked
            if len(frames) < len(wanted):
                log.warning("finetune: frames were given as an iterator; using the annotated frames read so far only")
        else:
            it = iter(state.source)
            try:
                for t, frame in enumerate(it):
                    if t in state.prompts:
                        frames[t] = self._check_frame(frame, t, state.frame_size)
                    if t >= wanted[-1]:
                        break
            finally:
                if hasattr(it, "close"):
                    it.close()
        if not frames:
            raise RecvosError("finetune: no annotated frame could be read; add a mask on frame 0")
        samples = []
        for t, frame in sorted(frames.items()):
            ids = np.zeros(state.output_size, np.int32)
            for k, o in enumerate(sorted(state.prompts[t]), start=1):
                ids[state.prompts[t][o]] = k
            samples.append((frame, ids))
        return samples

    def restore_weights(self) -> None:
        """Undo online fine-tuning (no-op if the weights are original)."""
        if self._pristine is not None:
            self.model.load_state_dict(self._pristine)
            self._pristine = None
            self._fast = None
            log.debug("restored the weights from before online learning")
        self._finetuned_for = None


# ------------------------------------------------------------------------------------------- load_model
def load_model(
    name_or_path: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    *,
    kind: str = "one-shot",
    threads: int | None = None,
    max_size: int | None = 240,
    **options: Any,
) -> Segmenter:
    """A :class:`Segmenter` for the shipped default (``None``; ``kind`` "one-shot" or "zero-shot"), a
    checkpoint path, or a model name from the factory (random weights, with a warning).

    ``options`` go to :class:`Segmenter` (``objectness_threshold``, ``min_area``, ``mask_threshold``) or,
    for a model name, to ``build_model``. ``threads`` sets torch's CPU threads (default: torch's choice).
    """
    from recvos.models.factory import build_model, load_checkpoint, model_names

    seg_keys = {"objectness_threshold", "min_area", "mask_threshold"}
    seg_kw = {k: options.pop(k) for k in list(options) if k in seg_keys}
    device = _resolve_device(device)
    if threads:
        torch.set_num_threads(int(threads))
    if name_or_path is None:
        from recvos.inference.default import default_checkpoint_path

        model = load_checkpoint(default_checkpoint_path(kind), map_location="cpu")
    else:
        text = os.fspath(name_or_path)
        path = Path(text)
        names = model_names()
        if path.is_file():
            if options:
                raise RecvosError(f"{path}: build options {sorted(options)} only apply to model names, not checkpoints")
            model = load_checkpoint(path, map_location="cpu")
        elif text in names:
            log.warning("model %s has random weights (no checkpoint given): its masks are meaningless", text)
            model = build_model(text, **options)
        elif path.suffix in (".pt", ".pth", ".ckpt") or os.sep in text:
            raise RecvosError(f"{path}: checkpoint not found; give an existing file or a model name ({', '.join(names)})")
        else:
            raise RecvosError(f"unknown model {text!r}: give a checkpoint path or one of {', '.join(names)}")
    return Segmenter(model, device, max_size=max_size, **seg_kw)


def _resolve_device(device: str | torch.device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RecvosError("device 'cuda' requested but CUDA is not available; use --device cpu")
    return device
