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
Small objects: when an object given before propagation starts covers less than :data:`SMALL_OBJECT_AREA`
of the frame, the video is processed with its shorter side at ``small_object_size`` instead (default
:data:`SMALL_OBJECT_SIZE`, upscaling if needed): at 240 such an object spans about two cells of the
matching memory's f16 map and is lost within a few frames (BENCHMARKS.md, "Small objects").
The frame loop is the model's :meth:`~recvos.models.base.RecurrentVOS.unroll`, driven by a
:class:`PromptFeed`; training validation and ``recvos predict`` run through this class too.
"""

from __future__ import annotations

import copy
import itertools
import logging
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from recvos.data.frames import FrameSource, open_frames
from recvos.data.masks import onehot_to_ids
from recvos.devices import cpu_has_native_bf16, resolve_device
from recvos.errors import RecvosError
from recvos.inference.flip import unroll_flipped
from recvos.inference.inputs import (
    MaskInput,
    check_frame,
    check_max_size,
    frame_to_tensor,
    processing_size,
    prompt_masks,
    resize_binary,
    zoomed_size,
)
from recvos.inference.online import ONLINE_STEPS, FinetuneResult, finetune
from recvos.models.base import FrameResult, RecurrentVOS
from recvos.models.feed import Feed, FirstFrameFeed, ObjectChange

log = logging.getLogger(__name__)

__all__ = ["Segmenter", "InferenceState", "PromptFeed", "load_model"]

FrameInput = str | os.PathLike | FrameSource | Iterable[np.ndarray]
#: an object given before propagation that covers less than this share of the frame (0.5%: about two cells
#: of the f16 map at 240x427) makes the video be processed at ``small_object_size`` (decided on held-out
#: videos: BENCHMARKS.md, "Small objects")
SMALL_OBJECT_AREA = 0.005
#: the shorter side videos with a small object are processed at (``Segmenter(small_object_size=...)``)
SMALL_OBJECT_SIZE = 360
#: the number format the PyTorch runtime propagates in: "auto" is bf16 on a CPU with native bf16
#: (AVX512-BF16 or AMX on x86, :func:`recvos.devices.cpu_has_native_bf16`) and fp32 elsewhere; BENCHMARKS.md, "ONNX Runtime vs PyTorch"
PRECISIONS = ("auto", "fp32", "bf16")
#: zero-shot with a tracker: the frame (0-based: frames 0..HANDOFF-1 are the zero-shot model's) on which the
#: objects the zero-shot model has discovered are handed to the one-shot tracker. Chosen on the 5 held-out
#: training videos (hand-off after 1, 3, 6, 10 frames: J 0.606, 0.643, 0.656, 0.605; the zero-shot model
#: throughout 0.570), with the held-out run of the one-shot recipe as the tracker; BENCHMARKS.md, "Zero-shot:
#: discover, then track"
HANDOFF = 6
#: the logits of a zero-shot slot the tracker does not follow (sigmoid: 0)
EMPTY_LOGIT = -30.0


def inference_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype of ``precision`` (one of :data:`PRECISIONS`) on ``device``."""
    if precision not in PRECISIONS:
        raise RecvosError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else torch.float32
    return torch.bfloat16 if precision == "bf16" else torch.float32


#: what runs the model: PyTorch, or ONNX Runtime on a graph exported by ``recvos export --onnx``
RUNTIMES = ("torch", "onnxruntime")


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
    frame_names: list[str] | None = None
    #: a one-shot iterator source: its first frame (read to size the video) and the rest
    peeked: np.ndarray | None = None
    iterator: Iterator[np.ndarray] | None = None
    owned: bool = False

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
        if self.frame_names is not None and idx < len(self.frame_names):
            return self.frame_names[idx]
        return f"{idx:05d}"

    def frames(self) -> Iterator[np.ndarray]:
        """A fresh iterator over the video's frames (a one-shot iterator source can be read once)."""
        if self.iterator is None:
            return iter(self.source)
        if self.peeked is None:
            raise RecvosError(
                "the frames were given as an iterator and were consumed by an earlier propagate; "
                "pass a path, FrameSource or list to propagate twice"
            )
        first, self.peeked = self.peeked, None
        return itertools.chain([first], self.iterator)

    def close(self) -> None:
        """Close the frame source if init_state opened it."""
        if self.owned and isinstance(self.source, FrameSource):
            self.source.close()


class PromptFeed:
    """The segmenter's :class:`~recvos.models.feed.Feed`: objects enter on the frame where they are first
    prompted (appended as new slots), removed objects leave before the next frame, and a prompt's masks
    replace the model's output on their frame (also as the next frame's previous masks). Reads the
    prompts lazily, so masks added during propagation for frames not reached yet are honoured."""

    def __init__(self, state: InferenceState, zero_shot: bool, device: torch.device) -> None:
        self.state = state
        self.zero_shot = zero_shot
        self.device = device
        self.slots: list[int] = []  # user object id of each one-shot slot
        self.given: dict[int, torch.Tensor] = {}  # the current frame's prompts: user id -> bool [h, w]

    def objects(self, t: int) -> ObjectChange | None:
        if self.zero_shot:
            return None
        keep = None
        if self.state.removed & set(self.slots):
            keep = [i for i, o in enumerate(self.slots) if o not in self.state.removed]
            self.slots = [self.slots[i] for i in keep]
        size = self.state.proc_size  # resized once here, used again by feedback() for the same frame
        self.given = {
            o: torch.from_numpy(resize_binary(m, size)).to(self.device)
            for o, m in sorted(self.state.prompts.get(t, {}).items())
        }
        new = [o for o in self.given if o not in self.slots]
        masks = None
        if new:
            masks = torch.stack([self.given[o] for o in new]).float()[None]
            self.slots = self.slots + new
        return None if keep is None and masks is None else ObjectChange(keep=keep, masks=masks)

    def feedback(self, t: int, logits: torch.Tensor) -> torch.Tensor:
        probs = torch.sigmoid(logits)
        given = {self.slots.index(o): m for o, m in self.given.items() if o in self.slots}
        return override(probs[0], given)[None] if given else probs


class HandedOverFeed(FirstFrameFeed):
    """The tracker's feed after a zero-shot hand-off: the discovered objects' masks on its first frame, then
    its own probabilities; an object the user removes (``remove_object``) leaves the tracker too.
    ``slots``: the zero-shot slot (0-based) of each tracked object, kept in step with the tracker's slots."""

    def __init__(self, masks: torch.Tensor, slots: list[int], state: InferenceState) -> None:
        super().__init__(masks)
        self.slots, self.state = list(slots), state

    def objects(self, t: int) -> ObjectChange | None:
        if t == 0:
            return super().objects(t)
        keep = [i for i, s in enumerate(self.slots) if s + 1 not in self.state.removed]
        if len(keep) == len(self.slots):
            return None
        self.slots = [self.slots[i] for i in keep]
        return ObjectChange(keep=keep)


def override(probs: torch.Tensor, given: dict[int, torch.Tensor]) -> torch.Tensor:
    """probs [O, h, w]; given {slot: bool [h, w]} -> the given slots set to their masks, others cleared there."""
    probs = probs.clone()
    union = torch.zeros_like(probs[0], dtype=torch.bool)
    for m in given.values():
        union |= m
    probs[:, union] = 0
    for i, m in given.items():
        probs[i] = m.to(probs.dtype)
    return probs


class Segmenter:
    """Streams a :class:`~recvos.models.base.RecurrentVOS` model over videos (see the module docstring).

    ``max_size``: processing size (shorter side); ``mask_threshold``: probability for a pixel to belong to an
    object; ``objectness_threshold`` and ``min_area`` (fraction of the frame) select zero-shot instances.
    ``optimize``: propagate with a copy of the model passed through ``optimize_for_inference`` (BatchNorm
    folded, channels-last; same outputs up to rounding); ``self.model`` itself stays trainable and savable.
    ``precision`` (:data:`PRECISIONS`): "bf16" propagates with a bf16 copy of the model (frames, masks and
    recurrent state in bf16; probabilities and outputs in fp32); "auto" picks it on CPUs with native bf16.
    ``model`` may be an :class:`~recvos.inference.onnx.OnnxModel` (ONNX Runtime): it runs as it is, through
    the same frame loop, prompts and pre/post-processing ("auto" is then fp32; "bf16" is refused).
    ``memory``: the frames each object's matching memory holds, for models with one (the trained value by
    default; the weights do not depend on it, the speed a little: BENCHMARKS.md, "Memory frames at inference").
    ``small_object_size``: the shorter side to process a video at when an object given before propagation
    starts covers less than :data:`SMALL_OBJECT_AREA` of the frame (only ever larger than ``max_size``'s
    size; None or 0: off; not for ONNX Runtime models, whose graph has a fixed size).
    ``tracker``: a one-shot model that takes over zero-shot propagation after ``handoff`` frames: the
    zero-shot model discovers the objects on frames 0..handoff-1, the objects it reports on frame handoff-1
    (same selection as its output) become the tracker's prompts there, and the tracker follows them to the
    end under the same ids. Without one (or with ``handoff`` 0) the zero-shot model runs throughout.
    ``flip``: test-time augmentation, every frame also seen as its mirror image (:mod:`recvos.inference.flip`;
    about 1.7x the time); one-shot propagation and the zero-shot tracker (not zero-shot discovery, whose
    slots need not come in the same order in the mirror image); PyTorch runtime only.
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
        precision: str = "auto",
        tracker: RecurrentVOS | None = None,
        handoff: int = HANDOFF,
        memory: int | None = None,
        small_object_size: int | None = SMALL_OBJECT_SIZE,
        flip: bool = False,
    ) -> None:
        if flip:
            from recvos.inference.onnx import OnnxModel

            if isinstance(model, OnnxModel):
                raise RecvosError(
                    "flip (--flip) runs each frame and its mirror image as a batch of two, which an exported "
                    "ONNX graph does not take; use the PyTorch runtime (--runtime torch)"
                )
        check_max_size(max_size)
        check_small_object_size(small_object_size)
        check_memory(memory, [m for m in (model, tracker) if m is not None])
        check_handoff(int(handoff))
        if tracker is not None:
            if tracker.mode != "one-shot":
                raise RecvosError(
                    f"the tracker ({tracker.name}) is a {tracker.mode} model; it must be a one-shot model "
                    "(--tracker with a one-shot checkpoint, or --tracker none)"
                )
            tracker = tracker.to(device).eval()
        self.tracker, self.handoff = tracker, int(handoff)
        self.memory = memory
        self._fast_tracker: RecurrentVOS | None = None
        self.device = torch.device(device)
        self.optimize = optimize
        if model.inference_only and precision == "bf16":
            raise RecvosError(
                f"precision bf16 needs the PyTorch runtime; {model.name} here is inference-only (ONNX Runtime "
                "or already optimised): use precision fp32 or auto"
            )
        self.dtype = torch.float32 if model.inference_only else inference_dtype(precision, self.device)
        if precision == "auto" and self.device.type == "cpu" and not model.inference_only:
            log.info(
                "precision auto: %s (%s)",
                "bf16" if self.dtype == torch.bfloat16 else "fp32",
                "this CPU has native bf16"
                if self.dtype == torch.bfloat16
                else "this CPU has no native bf16, i.e. AVX512-BF16 or AMX: --precision bf16 would be emulated and slower",
            )
        self.flip = bool(flip)
        self._fast: RecurrentVOS | None = None  # the optimised copy, rebuilt when the weights change
        self.model = model.to(self.device).eval()
        self.max_size = max_size
        self.small_object_size = small_object_size or None
        self.mask_threshold = mask_threshold
        self.objectness_threshold = objectness_threshold
        self.min_area = min_area
        self._pristine: dict[str, torch.Tensor] | None = None  # weights before online fine-tuning
        self._finetuned_for: int | None = None  # id() of the state the fine-tuning belongs to

    def _runner(self) -> RecurrentVOS:
        """The model used for propagation: ``self.model`` or its optimised (and/or bf16) copy."""
        if self._fast is None:
            self._fast = self._prepared(self.model)
        return self._fast

    def _tracker_runner(self) -> RecurrentVOS:
        if self._fast_tracker is None:
            self._fast_tracker = self._prepared(self.tracker)
        return self._fast_tracker

    def _prepared(self, model: RecurrentVOS) -> RecurrentVOS:
        resize = self.memory is not None and getattr(model, "memory", 0) not in (0, self.memory)
        if model.inference_only or not (self.optimize or self.dtype != torch.float32 or resize):
            return model  # e.g. an ONNX Runtime model
        fast = copy.deepcopy(model).eval()
        if resize:
            fast.memory = self.memory  # the state's size: the weights do not depend on it
        if self.optimize:
            fast.optimize_for_inference()
        return fast.to(self.dtype)

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
        names = peeked = iterator = None
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
            frame_size = check_frame(first, 0).shape[:2]
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
            frame_names=names,
            peeked=peeked,
            iterator=iterator,
            owned=owned,
        )

    # --------------------------------------------------------------------------------------- prompts
    def add_mask(self, state: InferenceState, frame_idx: int, mask: MaskInput) -> list[int]:
        """Give masks for frame ``frame_idx``: an int id map [H, W] (0 = background), ``{obj_id: bool [H, W]}``,
        or the path of a mask PNG. Allowed for any frame propagation has not reached yet.

        The mask is resized to the output size (a different aspect ratio is an error; a small size mismatch
        is resized with a warning). Returns the object ids it holds.
        """
        where = str(mask) if isinstance(mask, (str, os.PathLike)) else f"mask for frame {frame_idx}"
        self.model.check_mode(zero_shot=False, what=f"{where}: the model")
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
        objs = prompt_masks(mask, frame_idx, state.frame_size, state.output_size)
        state.prompts.setdefault(frame_idx, {}).update(objs)
        state.removed.difference_update(objs)
        self._zoom_for_small_objects(state, objs)
        return sorted(objs)

    def _zoom_for_small_objects(self, state: InferenceState, objs: dict[int, np.ndarray]) -> None:
        """Before propagation: process at ``small_object_size`` if one of ``objs`` is small (class docs)."""
        size = self.small_object_size
        if not size or state.running or min(state.proc_size) >= size:
            return
        from recvos.inference.onnx import OnnxModel

        if isinstance(self.model, OnnxModel):
            return  # its graph was exported for one size
        areas = {o: float(m.mean()) for o, m in objs.items()}
        small = {o: a for o, a in areas.items() if 0 < a < SMALL_OBJECT_AREA}
        if small:
            before, state.proc_size = state.proc_size, zoomed_size(state.frame_size, size)
            o, a = min(small.items(), key=lambda kv: kv[1])
            log.info(
                "object %d covers %.2f%% of the frame: processing at %dx%d instead of %dx%d (small_object_size)",
                o,
                100 * a,
                state.proc_size[1],
                state.proc_size[0],
                before[1],
                before[0],
            )

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
        self.model.check_mode(zero_shot)
        if zero_shot and state.prompts:
            raise RecvosError("zero-shot propagation takes no masks; remove them or use zero_shot=False")
        if not zero_shot and not state.prompts:
            raise RecvosError(
                "no masks given: call add_mask(state, frame_idx, mask) first, or propagate(zero_shot=True)"
            )
        if state.running:
            raise RecvosError("this state is already being propagated; finish or close that generator first")
        state.running, state.next_frame = True, 0
        frames = state.frames()
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

    def _inputs(self, state: InferenceState, frames: Iterator[np.ndarray]) -> Iterator[torch.Tensor]:
        """The model inputs [1, 3, h, w] of the video's frames; keeps ``state.current_frame``/``next_frame``."""
        for t, frame in enumerate(frames):
            state.next_frame = t
            state.current_frame = check_frame(frame, t, state.frame_size)
            yield frame_to_tensor(state.current_frame, state.proc_size, self.device).to(self.dtype)

    def _run(
        self, state: InferenceState, frames: Iterator[np.ndarray], zero_shot: bool, return_probs: bool
    ) -> Iterator[tuple[int, list[int], np.ndarray]]:
        H, W = state.output_size
        feed = PromptFeed(state, zero_shot, self.device)
        seen = 0
        inputs = self._inputs(state, frames)
        if zero_shot and self.tracker is not None and self.handoff > 0:
            results = self._discover_then_track(state, inputs, feed)
        else:
            results = self._unroll(self._runner(), inputs, feed)
        for r in results:
            seen = r.t + 1
            if r.logits is None:  # nothing to track yet (objects appear later)
                state.next_frame = r.t + 1
                yield (
                    r.t,
                    [],
                    (np.zeros((0, H, W), np.float32) if return_probs else np.zeros((H, W), np.int32)),
                )
                continue
            n = r.logits.shape[1]
            slots = list(range(1, n + 1)) if zero_shot else feed.slots
            probs = torch.sigmoid(
                F.interpolate(r.logits.float(), size=(H, W), mode="bilinear", align_corners=False)[0]
            )
            prompt = state.prompts.get(r.t, {}) if not zero_shot else {}
            if prompt:
                probs = override(
                    probs,
                    {
                        slots.index(o): torch.from_numpy(m).to(probs.device)
                        for o, m in prompt.items()
                        if o in slots
                    },
                )
            if zero_shot:
                sel = self._discovered(r, state)
            else:
                sel = list(range(n))
            obj_ids = [slots[i] for i in sel]
            state.next_frame = r.t + 1
            if return_probs:
                yield r.t, obj_ids, probs[sel].float().cpu().numpy()
            else:
                yield r.t, obj_ids, onehot_to_ids(probs[sel], obj_ids, self.mask_threshold).astype(np.int32)
        late = sorted(i for i in state.prompts if i >= seen)
        if late:
            raise RecvosError(
                f"masks were given for frame(s) {late[:5]} but the video has only {seen} frames (0..{seen - 1}); "
                "check the mask file names / frame indices"
            )

    def _unroll(
        self, model: RecurrentVOS, inputs: Iterable[torch.Tensor], feed: Feed
    ) -> Iterator[FrameResult]:
        """``model.unroll``, with the mirror images too when ``flip`` is on (zero-shot discovery runs plain)."""
        if self.flip and not feed.zero_shot:
            return unroll_flipped(model, inputs, feed)
        return model.unroll(inputs, feed)

    def _discovered(self, r: FrameResult, state: InferenceState) -> list[int]:
        """Zero-shot: the slots (0-based) reported on this frame: objectness and area over their thresholds,
        not removed by the user (slot i is object i + 1)."""
        area = (r.fed[0].float() > self.mask_threshold).flatten(1).float().mean(1)
        keep = (r.objectness[0].float() > self.objectness_threshold) & (area > self.min_area)
        return [i for i in keep.nonzero()[:, 0].tolist() if i + 1 not in state.removed]

    def _handed_over(self, r: FrameResult, state: InferenceState) -> tuple[list[int], torch.Tensor]:
        """The slots reported on frame ``r`` and their masks as the id map shows them (each pixel to the most
        probable object, if at least ``mask_threshold``); a slot left with no pixel is not handed over."""
        sel = self._discovered(r, state)
        if not sel:
            return [], r.fed.new_zeros(0)
        k = torch.arange(1, len(sel) + 1)
        ids = torch.from_numpy(onehot_to_ids(r.fed[0, sel].float(), k.tolist(), self.mask_threshold))
        masks = (ids[None] == k[:, None, None]).to(r.fed.device)
        kept = masks.flatten(1).any(1).tolist()
        return [i for i, k in zip(sel, kept, strict=True) if k], masks[kept]

    def _discover_then_track(
        self, state: InferenceState, inputs: Iterator[torch.Tensor], feed: PromptFeed
    ) -> Iterator[FrameResult]:
        """The zero-shot model on frames 0..handoff-1; then the tracker, prompted on frame handoff-1 with the
        objects reported there (each pixel to the most probable one), to the end. The tracker's results are
        placed in those objects' slots (the others empty), so ids do not change at the hand-off. If nothing
        is reported on frame handoff-1, the zero-shot model goes on."""
        last: list[torch.Tensor] = []

        def tapped() -> Iterator[torch.Tensor]:
            for x in inputs:
                last[:] = [x]
                yield x

        source = tapped()
        discovering = self._runner().unroll(source, feed)
        for r in discovering:
            yield r
            if r.t == self.handoff - 1:
                sel, masks = self._handed_over(r, state)
                if sel:
                    break
        else:
            return
        discovering.close()
        n, start = r.logits.shape[1], r.t
        log.debug("zero-shot: slots %s handed to the tracker on frame %d", [i + 1 for i in sel], start)
        handed = HandedOverFeed(masks[None].to(r.logits.dtype), sel, state)
        for q in self._unroll(self._tracker_runner(), itertools.chain(last, source), handed):
            if q.t == 0:  # the hand-off frame itself, already given
                continue
            if q.logits is None:  # the user removed every tracked object
                yield FrameResult(start + q.t, None, None, None, q.state)
                continue
            index = torch.as_tensor(handed.slots, device=q.logits.device)
            logits = q.logits.new_full((1, n, *q.logits.shape[-2:]), EMPTY_LOGIT).index_copy(
                1, index, q.logits
            )
            fed = q.fed.new_zeros((1, n, *q.fed.shape[-2:])).index_copy(1, index, q.fed)
            objectness = q.logits.new_zeros(1, n).index_fill(1, index, 1.0)
            yield FrameResult(start + q.t, logits, objectness, fed, q.state)

    # ------------------------------------------------------------------------------ online learning
    def finetune(self, state: InferenceState, steps: int = ONLINE_STEPS, **options: Any) -> float:
        """Online learning (S2S "OL"): fine-tune on warped pairs of the annotated frame(s); returns seconds.

        See :func:`recvos.inference.online.finetune` for the options; its steps run in this Segmenter's
        precision (bf16 autocast where it propagates in bf16) unless ``dtype`` is given. The weights are restored when the next
        ``propagate`` of this state ends, by :meth:`restore_weights`, or by the next ``init_state``.
        """
        if self.model.inference_only:
            raise RecvosError(
                f"online learning trains the model, and {self.model.name} here is inference-only "
                "(optimised, or run by ONNX Runtime); use the PyTorch runtime"
            )
        t0 = time.perf_counter()
        samples = self._annotated_frames(state)
        if self._pristine is None:
            self._pristine = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self._finetuned_for = id(state)
        self._fast = None
        try:
            options.setdefault("dtype", self.dtype)
            result = finetune(self.model, samples, state.proc_size, steps=steps, **options)
        except BaseException:
            self.restore_weights()
            raise
        result.seconds = time.perf_counter() - t0
        state.finetune_result = result
        log.info(
            "online learning: %d steps in %.1f s, IoU on held-out warps %.3f -> %.3f (%s)",
            result.steps,
            result.seconds,
            result.iou_before,
            result.iou_after,
            "kept" if result.kept else "reverted",
        )
        return result.seconds

    def read_frames(self, state: InferenceState, wanted: Iterable[int]) -> dict[int, np.ndarray]:
        """The frames ``wanted`` (uint8 RGB [H, W, 3]) read from the video without propagating; a one-shot
        iterator source can only give its first frame (read by ``init_state``)."""
        wanted = sorted(set(int(t) for t in wanted))
        if state.running:
            raise RecvosError("frames cannot be read while the state is being propagated")
        frames: dict[int, np.ndarray] = {}
        if not wanted:
            return frames
        if state.iterator is not None:
            if state.peeked is not None and 0 in wanted:
                frames[0] = state.peeked
            return frames
        it = iter(state.source)
        try:
            for t, frame in enumerate(it):
                if t in wanted:
                    frames[t] = check_frame(frame, t, state.frame_size)
                if t >= wanted[-1]:
                    break
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()
        return frames

    def add_prompt(
        self,
        state: InferenceState,
        frame_idx: int,
        obj_id: int,
        *,
        box: Sequence[float] | None = None,
        points: Sequence[Sequence[float]] | None = None,
        labels: Sequence[int] | None = None,
        scribbles: Sequence[Any] | None = None,
        method: str | None = None,
    ) -> np.ndarray:
        """Give object ``obj_id`` on frame ``frame_idx`` as a box (x0, y0, x1, y1) and/or clicks (x, y) with
        labels (1 object, 0 background) in the frame's pixels, turned into a mask by
        :func:`recvos.prompts.mask_from_prompts` with ``method`` (None: its default; an earlier mask of the object on that frame is refined) and
        added like :meth:`add_mask`. Returns the mask, bool at the frame size."""
        from recvos.prompts import mask_from_prompts

        frame = self.read_frames(state, [frame_idx]).get(int(frame_idx))
        if frame is None:
            raise RecvosError(
                f"add_prompt: frame {frame_idx} cannot be read (beyond the video, or frames given "
                "as a one-shot iterator); pass a path, FrameSource or list"
            )
        before = state.prompts.get(int(frame_idx), {}).get(int(obj_id))
        mask = mask_from_prompts(
            frame,
            box=box,
            points=points,
            labels=labels,
            scribbles=scribbles,
            method=method,
            previous=None if before is None else resize_binary(before, frame.shape[:2]),
        )
        if not mask.any():
            raise RecvosError(
                f"add_prompt: the prompts gave an empty mask for object {obj_id} on frame "
                f"{frame_idx}; draw a larger box or add a positive click on the object"
            )
        self.add_mask(state, frame_idx, {int(obj_id): mask})
        return mask

    def _annotated_frames(self, state: InferenceState) -> list[tuple[np.ndarray, np.ndarray]]:
        """(frame uint8 [H, W, 3], ids int [H_out, W_out] over 1..K for the frame's objects) per prompted frame."""
        if not state.prompts:
            raise RecvosError("finetune needs masks: call add_mask(state, frame_idx, mask) first")
        if state.running:
            raise RecvosError("finetune cannot run while the state is being propagated")
        frames = self.read_frames(state, state.prompts)
        if state.iterator is not None and len(frames) < len(state.prompts):
            log.warning(
                "finetune: frames were given as an iterator; using the annotated frames read so far only"
            )
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


def check_handoff(handoff: int, label: str = "handoff") -> None:
    """A hand-off frame count (0: no hand-off) or a one-line :class:`RecvosError` naming ``label``."""
    if handoff < 0:
        raise RecvosError(f"{label} {handoff}: the frames before the tracker takes over, 0 (none) or more")


def check_small_object_size(size: int | None) -> None:
    """A small_object_size (None or 0: off) or a one-line :class:`RecvosError` naming the option."""
    check_max_size(
        size,
        "small_object_size (--small-object-size)",
        zero="off",
        example=f"--small-object-size {SMALL_OBJECT_SIZE}",
    )


def check_memory(memory: int | None, models: list[RecurrentVOS]) -> None:
    """A memory size for these models (None: theirs) or a one-line :class:`RecvosError`."""
    if memory is None:
        return
    from recvos.models.memory import check_memory_frames

    check_memory_frames(memory)
    for m in models:
        if m.inference_only and getattr(m, "memory", None) != memory:
            raise RecvosError(
                f"memory {memory}: {m.name} is inference-only (ONNX Runtime, or already optimised) and its memory "
                "is fixed; use the PyTorch runtime with the model as trained"
            )
    if not any(getattr(m, "memory", 0) > 0 for m in models):
        names = ", ".join(m.name for m in models)
        raise RecvosError(
            f"memory {memory}: {names} has no matching memory (only models trained with memory > 0 have one)"
        )


def load_model(
    name_or_path: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    *,
    kind: str = "one-shot",
    threads: int | None = None,
    max_size: int | None = 240,
    runtime: str = "torch",
    onnx: str | os.PathLike | None = None,
    onnx_size: tuple[int, int] = (240, 427),
    tracker: str | os.PathLike | None = "default",
    handoff: int = HANDOFF,
    **options: Any,
) -> Segmenter:
    """A :class:`Segmenter` for the shipped default (``None``; ``kind`` "one-shot" or "zero-shot"), a
    checkpoint path, or a model name from the registry (random weights, with a warning).

    ``options`` go to :class:`Segmenter` (``objectness_threshold``, ``min_area``, ``mask_threshold``,
    ``precision``, ``memory``, ``small_object_size``, ``flip``) or,
    for a model name, to ``build_model``. ``threads`` sets torch's CPU threads (default: torch's choice).
    ``runtime="onnxruntime"`` runs the model with ONNX Runtime (CPU): the ``onnx`` file written by
    ``recvos export --onnx`` (checked against the model when ``name_or_path`` is given too), or else the
    model exported now for frames of ``onnx_size`` (h, w; the processing size of the videos to segment).
    ``tracker`` (zero-shot models only): the one-shot model that follows the discovered objects after
    ``handoff`` frames (:class:`Segmenter`): "default" (the shipped one-shot weights), a checkpoint, or
    None / "none" for the zero-shot model throughout. It runs with PyTorch whatever the ``runtime``.
    """
    from recvos.models.loading import resolve_model

    def with_tracker(model: RecurrentVOS, **kw: Any) -> Segmenter:
        follower = None
        wanted = tracker is not None and os.fspath(tracker) != "none" and handoff > 0
        if model.mode == "zero-shot" and wanted:
            follower = resolve_model(None if os.fspath(tracker) == "default" else tracker, kind="one-shot")
        return Segmenter(model, device, max_size=max_size, tracker=follower, handoff=handoff, **kw)

    if runtime not in RUNTIMES:
        raise RecvosError(f"runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    seg_keys = {
        "objectness_threshold",
        "min_area",
        "mask_threshold",
        "precision",
        "memory",
        "small_object_size",
        "flip",
    }
    seg_kw = {k: options.pop(k) for k in list(options) if k in seg_keys}
    device = resolve_device(device)
    if threads:
        torch.set_num_threads(int(threads))
    if runtime == "torch":
        if onnx is not None:
            raise RecvosError(f"{onnx}: an ONNX file runs with runtime='onnxruntime' (--runtime onnxruntime)")
        return with_tracker(resolve_model(name_or_path, kind=kind, **options), **seg_kw)
    if seg_kw.get("precision") == "bf16":
        raise RecvosError(
            "precision bf16 runs with the PyTorch runtime (--runtime torch); ONNX Runtime runs fp32"
        )
    from recvos.inference.onnx import OnnxModel, require_onnx

    require_onnx("onnxruntime", "onnx")
    if device.type != "cpu":
        raise RecvosError(f"the onnxruntime runtime runs on the CPU (got device {device}); use --device cpu")
    if onnx is None:
        model = OnnxModel.from_model(resolve_model(name_or_path, kind=kind, **options), onnx_size, threads)
    else:
        model = OnnxModel(onnx, threads)
        if name_or_path is not None:
            model.check_exported_from(
                resolve_model(name_or_path, kind=kind, **options), os.fspath(name_or_path)
            )
    return with_tracker(model, **seg_kw)
