"""The first-frame reference and the bounded matching memory, shared by RVOS and S2S (additions to both
papers, after FEELVOS and STM/XMem; see :mod:`recvos.models.rvos` for what they do and why).

:class:`MatchingMemory` is a mixin: a model that sets ``ref_embed`` (a 1x1 conv on its f16 features, or
None), ``reference``, ``memory`` (K), ``mem_top_k`` and ``mem_log_scale`` gets

- :meth:`~MatchingMemory._init_matching`: the state fields of frame 0 (the reference embedding and mask; an
  empty memory of K frames), kept in its state dataclass under the same names (``ref_emb``, ``ref_mask``,
  ``mem_key``, ``mem_val``, ``mem_valid``, ``last_key``);
- :meth:`~MatchingMemory._matching_maps`: per step, the maps of every object at f16 (``MATCH_MAPS`` from the
  reference, ``MEMORY_MAPS`` from the memory), with the memory updated by the previous frame.

A model that also sets ``local_embed`` (a 1x1 conv on its f8 features), ``local_radius`` (r > 0) and
``local_log_scale`` gets local f8 matching (after FEELVOS's local matching, here carrying mask values as the
memory readout does): :meth:`~MatchingMemory._init_local` keeps frame 0's f8 keys (``last_key8``), and
:meth:`~MatchingMemory._local_maps` gives per step ``LOCAL_MAPS`` maps per object at f8: every pixel attends,
by softmax over cosine similarity, to the (2r+1)^2 pixels around its own position in the last frame and reads
the object's fed-back mask there (and the other objects' sum). Its cost is linear in the frame's size
(E8 * (2r+1)^2 multiply-adds per f8 pixel), where a global f8 readout would cost 16x the f16 one per frame.

Every tensor is ``[B, O, ...]``, so adding, dropping and re-initialising objects needs nothing special.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F

from recvos.errors import RecvosError

__all__ = [
    "MATCH_MAPS",
    "MEMORY_MAPS",
    "LOCAL_MAPS",
    "MAX_MEMORY",
    "MAX_VALUE_DIM",
    "MatchingMemory",
    "MatchingState",
    "check_memory_every",
    "check_memory_frames",
]

#: matching maps per object with ``reference=True``: best similarity to the object, and to the rest of the frame
MATCH_MAPS = 2
#: memory readout maps per object with ``memory > 0``: the object's own readout, the other objects' sum
MEMORY_MAPS = 2
#: local f8 matching maps per object with ``local_radius > 0``: the object's own readout, the other objects' sum
LOCAL_MAPS = 2
#: the largest window radius of the local f8 matching (a 15x15 window)
MAX_LOCAL_RADIUS = 7
#: the most channels of the learned memory values (``value_dim``)
MAX_VALUE_DIM = 256
#: the most frames an object's matching memory may hold (``memory``, in training and at inference)
MAX_MEMORY = 64
#: the longest write interval of the memory (``mem_every``)
MAX_MEMORY_EVERY = 100


def check_memory_frames(memory: object, label: str = "memory") -> None:
    """A memory size to run with (1..MAX_MEMORY frames), or a one-line RecvosError naming ``label``."""
    if isinstance(memory, bool) or not isinstance(memory, int) or not 1 <= memory <= MAX_MEMORY:
        raise RecvosError(f"{label} {memory!r}: the frames each object remembers, 1..{MAX_MEMORY}")


def _one_for_all_objects(t: torch.Tensor) -> bool:
    """Whether a per-object state tensor [B, O, ...] holds one value for all objects (the expanded view
    :meth:`MatchingMemory._init_matching` makes of the reference embedding when they are given on the same
    frame): its work can be done once. Never while exporting (the graph takes any state)."""
    return t.shape[1] > 1 and t.stride(1) == 0 and not torch.compiler.is_exporting()


def check_memory_every(every: object, label: str = "mem_every") -> None:
    """A memory write interval (1: every frame), or a one-line RecvosError naming ``label``."""
    if isinstance(every, bool) or not isinstance(every, int) or not 1 <= every <= MAX_MEMORY_EVERY:
        raise RecvosError(
            f"{label} {every!r}: every how many frames a memory entry is kept, 1..{MAX_MEMORY_EVERY} (1: every frame)"
        )


def matching_options(
    reference: bool,
    memory: int,
    mem_top_k: int,
    ref_dim: int,
    mem_every: int = 1,
    local_radius: int = 0,
    local_dim: int = 32,
    value_dim: int = 0,
) -> None:
    """Check the options of the reference, the memory, the learned values and the local f8 matching
    (one-line RecvosErrors)."""
    check_memory_every(mem_every)
    if isinstance(value_dim, bool) or not isinstance(value_dim, int) or not 0 <= value_dim <= MAX_VALUE_DIM:
        raise RecvosError(
            f"value_dim {value_dim!r}: channels of the learned memory values, 0..{MAX_VALUE_DIM} (0: off)"
        )
    if value_dim and not memory:
        raise RecvosError(f"value_dim {value_dim} needs a matching memory (memory >= 1 frames)")
    if (
        isinstance(local_radius, bool)
        or not isinstance(local_radius, int)
        or not 0 <= local_radius <= MAX_LOCAL_RADIUS
    ):
        raise RecvosError(
            f"local_radius {local_radius!r}: the window radius of the local f8 matching, 0..{MAX_LOCAL_RADIUS} (0: off)"
        )
    if local_dim < 1:
        raise RecvosError(f"local_dim must be >= 1 (got {local_dim})")
    if memory < 0 or memory > MAX_MEMORY:
        raise RecvosError(f"memory must be 0..{MAX_MEMORY} frames (got {memory})")
    if mem_top_k < 1:
        raise RecvosError(f"mem_top_k must be >= 1 (got {mem_top_k})")
    if ref_dim < 1:
        raise RecvosError(f"ref_dim must be >= 1 (got {ref_dim})")


def insert_zero_columns(w: torch.Tensor, at: int, want: int) -> torch.Tensor:
    """A convolution weight [C_out, C_in, k, k] with ``want - C_in`` zero input channels inserted before
    channel ``at``: the warm start of a model with more matching maps (the new inputs start unused)."""
    zeros = w.new_zeros(w.shape[0], want - w.shape[1], *w.shape[2:])
    return torch.cat([w[:, :at], zeros, w[:, at:]], 1)


@dataclass(kw_only=True)
class MatchingState:
    """The state fields of the reference and the memory (None for a model without them), mixed into the
    state dataclass of every model with matching (keyword-only, so they may follow its own fields)."""

    #: with ``reference=True``: each object's reference-frame embedding [B, O, E, h16, w16] and its mask
    #: there [B, O, h16 * w16] (soft, area-resized)
    ref_emb: torch.Tensor | None = None
    ref_mask: torch.Tensor | None = None
    #: with ``memory = K``: embeddings [B, O, K, E, P] and the object's masks [B, O, K, P] of its last K
    #: frames (oldest first; ``mem_valid`` [B, O, K] says which entries are filled), and the embedding of the
    #: last frame seen [B, O, E, P], written into the memory with its fed-back mask on the next step
    mem_key: torch.Tensor | None = None
    mem_val: torch.Tensor | None = None
    mem_valid: torch.Tensor | None = None
    last_key: torch.Tensor | None = None
    #: with ``mem_every = N > 1``: per object [B, O], the frames written into the newest memory entry since it
    #: was opened, modulo N (0: the next write opens a new entry; otherwise it replaces the newest one)
    mem_age: torch.Tensor | None = None
    #: with ``local_radius > 0``: the f8 keys of the last frame seen [B, O, E8, h8, w8] (the same frame for
    #: every object; an expanded view when made by ``init_state``), matched locally on the next step
    last_key8: torch.Tensor | None = None


class MatchingMemory:
    """Mixin: the reference matching and the matching memory of a model (see the module docs)."""

    ref_embed: Any
    mem_log_scale: Any
    reference: bool
    memory: int
    mem_top_k: int
    #: keep one memory entry every ``mem_every`` frames (the newest entry always holds the last frame); 1: every frame
    mem_every: int = 1
    #: the local f8 matching (``local_embed`` and ``local_log_scale`` set by a model that has it; 0: off)
    local_embed: Any
    local_log_scale: Any
    local_radius: int = 0
    #: learned memory values (STM-style; ``value_key`` and ``value_mask`` set by a model that has them, else
    #: absent): channels per object read from the memory besides the mask values (0: off)
    value_dim: int = 0

    @property
    def matching_maps(self) -> int:
        """Maps per object that :meth:`_matching_maps` gives (0 without reference and memory)."""
        return (MATCH_MAPS if self.reference else 0) + (MEMORY_MAPS if self.memory else 0)

    def _init_matching(
        self, emb: torch.Tensor, masks: torch.Tensor | None, num_objects: int
    ) -> dict[str, Any]:
        """Frame 0's embedding [B, E, h16, w16] (from :meth:`_embed`) and masks [B, O, H, W] (None in zero-shot)
        -> the state fields of the reference and the (empty) memory."""
        out: dict[str, Any] = {}
        B = emb.shape[0]
        if self.reference:
            m = F.interpolate(masks.to(emb.dtype), size=emb.shape[-2:], mode="area")
            out["ref_emb"] = emb.unsqueeze(1).expand(
                -1, num_objects, -1, -1, -1
            )  # a view: one copy per frame
            out["ref_mask"] = m.flatten(2)
        if self.memory:
            E, P = emb.shape[1], emb.shape[2] * emb.shape[3]
            out["mem_key"] = emb.new_zeros(B, num_objects, self.memory, E, P)
            out["mem_val"] = emb.new_zeros(B, num_objects, self.memory, P)
            out["mem_valid"] = emb.new_zeros(B, num_objects, self.memory)
            out["last_key"] = emb.flatten(2).unsqueeze(1).expand(-1, num_objects, -1, -1)
            if self.mem_every > 1:
                out["mem_age"] = emb.new_zeros(B, num_objects)
        return out

    def _matching_maps(self, f16: torch.Tensor, state: Any, prev_masks: Any) -> tuple[torch.Tensor, Any]:
        """The current frame's f16 features [B, C, h16, w16] -> the per-object maps [B, O, matching_maps +
        value_dim, h16, w16] (the learned values last) and the state with its memory updated (the previous
        frame written in with ``prev_masks(size)``, its fed-back masks area-resized to ``size``; this frame's
        embedding kept for the next step)."""
        q = self._embed(f16)
        maps = []
        if self.reference:
            if state.ref_emb is None:
                raise RecvosError(
                    f"this {type(self).__name__} state has no reference (build it with this model's init_state)"
                )
            maps.append(self._match(q, state))  # [B, O, 2, h16, w16]
        if self.memory:
            if state.mem_key is None:
                raise RecvosError(
                    f"this {type(self).__name__} state has no memory (build it with this model's init_state)"
                )
            size = tuple(q.shape[-2:])
            state = self.remember(state, prev_masks(size), size)
            maps.append(self.read_memory(q, state, values=self.value_dim > 0))
            nobj = state.mem_key.shape[1]
            state = replace(state, last_key=q.flatten(2).unsqueeze(1).expand(-1, nobj, -1, -1))
        return torch.cat(maps, 2), state

    def _embed(self, f16: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.ref_embed(f16), dim=1)

    def match(self, f16: torch.Tensor, state: Any) -> torch.Tensor:
        """Current f16 features [B, C, h, w] -> per-object [best fg, best bg] similarity maps [B, O, 2, h, w].

        A reference pixel counts as object to the degree of its (soft) mask: its similarity is lowered by
        2 * (1 - mask) for the object map (2 * mask for the background map), which removes it entirely at
        mask 0, since cosine similarities lie in [-1, 1].
        """
        return self._match(self._embed(f16), state)

    def _match(self, q: torch.Tensor, state: Any) -> torch.Tensor:
        B, _, h, w = q.shape
        ref = state.ref_emb
        if _one_for_all_objects(ref):
            ref = ref[:, :1]  # one reference embedding for all objects: match it once
        sim = torch.einsum("bep,boeq->boqp", q.flatten(2), ref.flatten(3).to(q.dtype))  # [B, O or 1, Q, P]
        m = state.ref_mask.to(q.dtype).unsqueeze(-1)  # [B, O, Q, 1]
        fg = (sim - 2 * (1 - m)).amax(2)
        bg = (sim - 2 * m).amax(2)
        return torch.stack([fg, bg], 2).view(B, -1, 2, h, w)

    def remember(self, state: Any, prev_masks: torch.Tensor, size: tuple[int, int]) -> Any:
        """The state with the last frame (``state.last_key``) and its fed-back masks [B, O, H, W] (area-resized
        to the memory's ``size`` unless already at it) written into each object's memory, the oldest entry
        dropped. With ``mem_every = N > 1`` (``state.mem_age`` set) a new entry is opened only every N writes;
        the writes in between replace the newest entry, so it always holds the last frame and the K entries
        span about K * N frames (an entry keeps the last frame of its N)."""
        val = prev_masks.to(state.mem_val.dtype)
        if tuple(val.shape[-2:]) != tuple(size):
            val = F.interpolate(val, size=size, mode="area")
        val = val.flatten(2)  # [B, O, P]
        new = {
            "mem_key": state.last_key.unsqueeze(2).to(state.mem_key.dtype),
            "mem_val": val.unsqueeze(2),
            "mem_valid": state.mem_valid.new_ones(*val.shape[:2], 1),
        }
        pushed = {k: torch.cat([getattr(state, k)[:, :, 1:], v], 2) for k, v in new.items()}
        if state.mem_age is None:
            return replace(state, **pushed)
        age = state.mem_age
        opened = age == 0  # [B, O]: these objects open a new entry, the others replace their newest one
        out = {}
        for k, v in new.items():
            kept = torch.cat([getattr(state, k)[:, :, :-1], v], 2)
            cond = opened.view(*opened.shape, *([1] * (v.dim() - 2)))
            out[k] = torch.where(cond, pushed[k], kept)
        return replace(state, **out, mem_age=torch.remainder(age + 1, self.mem_every))

    def read_memory(self, q: torch.Tensor, state: Any, values: bool = False) -> torch.Tensor:
        """Embeddings of the current frame [B, E, h, w] -> per-object [own readout, others' readout] maps
        [B, O, 2, h, w]: top-k softmax attention over each object's reference and memory pixels, carrying the
        object's mask values. With ``values`` (a model with ``value_dim = V``) the same attention also reads
        each object's learned values (:meth:`memory_values`) and appends them: [B, O, 2 + V, h, w].

        Objects share their keys in the usual case (all given on the same frame: one reference embedding,
        and memories filled at the same steps); then similarities and top-k are computed once for all of them
        (:meth:`_keys_shared`) and only the mask values are read per object: the same result, O times less
        work."""
        B, E, h, w = q.shape
        nobj = state.mem_key.shape[1]
        n = 1 if self._keys_shared(state) else nobj  # objects whose keys are matched
        keys, vals, valid = (
            state.mem_key[:, :n],
            state.mem_val,
            state.mem_valid[:, :n],
        )  # [B, n, K, E, P], [B, O, K, P], [B, n, K]
        if state.ref_emb is not None:  # the reference frame is always remembered
            keys = torch.cat([state.ref_emb[:, :n].flatten(3).unsqueeze(2), keys], 2)
            vals = torch.cat([state.ref_mask.unsqueeze(2), vals], 2)
            valid = torch.cat([valid.new_ones(B, n, 1), valid], 2)
        keys, vals = keys.to(q.dtype), vals.to(q.dtype).flatten(2)
        P = keys.shape[-1]
        sim = torch.einsum("beq,boken->boqkn", q.flatten(2), keys).flatten(3)  # [B, n, Q, (1+K)P]
        invalid = valid < 0.5
        if torch.compiler.is_exporting() or bool(invalid.any()):  # the memory is full after K frames
            sim = sim.masked_fill(
                invalid.repeat_interleave(P, 2)[:, :, None], float("-inf")
            )  # [B, n, 1, (1+K)P]
        k = min(self.mem_top_k, sim.shape[-1])
        top, idx = sim.topk(k, dim=-1)  # [B, n, Q, k]
        weight = torch.softmax(top * self.mem_log_scale.exp(), dim=-1)
        picked = vals.unsqueeze(2).expand(-1, -1, h * w, -1).gather(-1, idx.expand(-1, nobj, -1, -1))
        own = (weight * picked).sum(-1)  # [B, O, Q]
        others = own.sum(1, keepdim=True) - own
        maps = torch.stack([own, others], 2).view(B, nobj, 2, h, w)
        if not values:
            return maps
        V = self.value_dim
        v = self.memory_values(keys, vals.unflatten(2, (-1, P)), h, w)  # [B, O, 1 + K, V, P]
        v = v.transpose(2, 3).flatten(3)  # [B, O, V, (1+K)P], in the order of sim's last axis
        picked_v = (
            v.unsqueeze(3)
            .expand(-1, -1, -1, h * w, -1)
            .gather(-1, idx[:, :, None].expand(-1, nobj, V, -1, -1))
        )
        read = (weight[:, :, None] * picked_v).sum(-1)  # [B, O, V, Q]
        return torch.cat([maps, read.view(B, nobj, V, h, w)], 2)

    def memory_values(self, keys: torch.Tensor, masks: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Learned values (STM-style) of memory entries: keys [B, n, N, E, P] (n = 1 when shared by all objects)
        and the objects' masks there [B, O, N, P] -> [B, O, N, V, P], relu(conv3x3(key) + conv3x3(mask)): what
        the object looks like at each remembered pixel, not only whether it is there. The key part is computed
        once per entry for all objects (a convolution of a concatenation is the sum of the two). Computed at
        read time from what the memory already holds, so the state does not grow."""
        B, n, N, E, P = keys.shape
        nobj, V = masks.shape[1], self.value_dim
        kv = self.value_key(keys.reshape(B * n * N, E, h, w)).view(B, n, N, V, P)
        mv = self.value_mask(masks.reshape(B * nobj * N, 1, h, w)).view(B, nobj, N, V, P)
        return F.relu(kv + mv)

    def _embed8(self, f8: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.local_embed(f8), dim=1)

    def _init_local(self, f8: torch.Tensor, num_objects: int) -> dict[str, Any]:
        """Frame 0's f8 features [B, C8, h8, w8] -> the state field of the local matching (its keys, one
        expanded view for all objects)."""
        q = self._embed8(f8)
        return {"last_key8": q.unsqueeze(1).expand(-1, num_objects, -1, -1, -1)}

    def _local_maps(self, f8: torch.Tensor, state: Any, prev8: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """The current frame's f8 features [B, C8, h8, w8] and the fed-back masks of the last frame at f8
        [B, O, h8, w8] -> the per-object local maps [B, O, LOCAL_MAPS, h8, w8] and the state with this frame's
        keys kept for the next step."""
        if state.last_key8 is None:
            raise RecvosError(
                f"this {type(self).__name__} state has no local keys (build it with this model's init_state)"
            )
        q = self._embed8(f8)
        maps = self.read_local(q, state.last_key8, prev8)
        nobj = state.last_key8.shape[1]
        return maps, replace(state, last_key8=q.unsqueeze(1).expand(-1, nobj, -1, -1, -1))

    def read_local(self, q: torch.Tensor, keys: torch.Tensor, vals: torch.Tensor) -> torch.Tensor:
        """Keys of the current frame [B, E, h, w], of the last frame [B, O, E, h, w] and the objects' masks
        there [B, O, h, w] -> per-object [own readout, others' readout] maps [B, O, 2, h, w]: each pixel's
        softmax attention over the (2r+1)^2 last-frame pixels around it (those outside the frame left out),
        carrying the object's mask values. Keys shared by all objects (the usual case) are matched once."""
        B, E, h, w = q.shape
        if _one_for_all_objects(keys):
            keys = keys[:, :1]
        r, k = self.local_radius, 2 * self.local_radius + 1

        def windows(x: torch.Tensor) -> torch.Tensor:  # [..., h, w] -> [..., h, w, k * k] (a view of the pad)
            xp = F.pad(x, (r, r, r, r))  # zeros outside the frame
            return xp.unfold(-2, k, 1).unfold(-2, k, 1).flatten(-2)

        # [B, n, h, w, kk]: one product over a strided view (a one-hot convolution, or an im2col copy with an
        # einsum, was slower end to end on a CPU; BENCHMARKS.md, "Local f8 matching")
        win = windows(keys.to(q.dtype))  # [B, n, E, h, w, kk]
        sim = (win * q.view(B, 1, E, h, w, 1)).sum(2)
        inside = windows(q.new_ones(h, w))  # [h, w, kk]: 1 where the window is in the frame
        sim = sim * self.local_log_scale.exp() - 1e4 * (1 - inside)
        weight = torch.softmax(sim, dim=-1)
        own = (weight * windows(vals.to(q.dtype))).sum(-1)  # [B, O, h, w]
        others = own.sum(1, keepdim=True) - own
        return torch.stack([own, others], 2)

    @staticmethod
    def _keys_shared(state: Any) -> bool:
        """Whether all objects attend to the same keys: more than one object, one reference embedding for all
        (the expanded view :meth:`init_state` makes when they are given on the same frame), and the same
        memory entries filled (each step writes the same frame's keys for every object, so filled entries
        hold the same keys). Objects added or re-prompted later break it until their memory is full again."""
        if state.mem_key.shape[1] < 2 or torch.compiler.is_exporting():
            return False
        if state.ref_emb is not None and not _one_for_all_objects(state.ref_emb):
            return False
        if state.mem_age is not None and not bool((state.mem_age == state.mem_age[:, :1]).all()):
            return False  # entries opened at different frames hold different frames
        valid = state.mem_valid
        return bool((valid == valid[:, :1]).all())
