"""Multi-object clips from single-object data: paste objects cut out of other training videos onto a video.

DAVIS-2016 annotates one object per video. To train multi-object models on it, each donor clip contributes
one of its objects, cut out with its own mask on every frame so it keeps moving along its own track, placed
with one random scale/offset/flip per clip. Donors are pasted in order: a later one occludes everything
below it, and the id maps are updated so occluded pixels belong to the object on top. Each pasted object
gets a new id above the base video's ids, the same on every frame.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recvos.data.masks import VOID_ID, object_ids
from recvos.data.transforms import scaling, translation, warp_clip


def paste_objects(
    frames: np.ndarray,
    ids: np.ndarray,
    annotated: np.ndarray,
    donors: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    rng: np.random.Generator,
    *,
    scale: tuple[float, float] = (0.4, 0.9),
    max_offset: float = 0.35,
    hflip: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Composite ``donors`` onto a base clip.

    frames uint8 [T, H, W, 3], ids int [T, H, W] (0 background), annotated bool [T] — the base clip;
    donors: (frames uint8 [T, h, w, 3], ids int [T, h, w], annotated bool [T]) of other videos, any size.
    A donor's object is pasted only on frames where the donor is annotated (elsewhere its mask is unknown,
    so the object is left out of that frame and the ground truth stays exact).
    Returns new (frames, ids, annotated); the inputs are not modified.
    """
    frames = frames.copy()
    ids = ids.astype(np.int64, copy=True)
    T, H, W = ids.shape
    next_id = int(ids[ids != VOID_ID].max(initial=0)) + 1
    for dframes, dids, dann in donors:
        if len(dframes) != T:
            raise ValueError(f"donor has {len(dframes)} frames, the base clip {T}")
        cands = object_ids(dids[dann])
        if not cands:
            continue
        obj = cands[int(rng.integers(len(cands)))]
        h, w = dframes.shape[1:3]
        s = min(H / h, W / w) * rng.uniform(*scale)
        flip = -1.0 if rng.random() < hflip else 1.0
        off = rng.uniform(-max_offset, max_offset, size=2) * np.array([W, H])
        m = (
            translation((W - 1) / 2 + off[0], (H - 1) / 2 + off[1])
            @ scaling(s * flip, s)
            @ translation(-(w - 1) / 2, -(h - 1) / 2)
        )
        pasted_f, pasted_m = warp_clip(dframes, (dids == obj).astype(np.int64), [m] * T, (H, W))
        for t in range(T):
            if not dann[t]:
                continue
            sel = pasted_m[t] > 0
            frames[t][sel] = pasted_f[t][sel]
            ids[t][sel] = next_id
        next_id += 1
    return frames, ids, annotated.copy()
