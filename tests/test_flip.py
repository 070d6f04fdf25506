"""Test-time flip (Segmenter(flip=True), --flip): a mirror-symmetric ensemble of two recurrent runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recvos.data.synthetic import synthetic_clip
from recvos.errors import RecvosError
from recvos.inference.flip import FlipFeed, merge_mirror, unroll_flipped, with_mirror
from recvos.inference.segmenter import Segmenter, load_model
from recvos.models.factory import build_model
from recvos.models.feed import FirstFrameFeed
from recvos.models.loading import save_model


def tiny(**options):
    """RVOS-ST with the shipped default's state (reference, matching memory), tiny, random, fixed seed."""
    torch.manual_seed(0)
    return build_model("rvos-st", hidden_size=16, reference=True, memory=2, **options).eval()


@pytest.fixture(scope="module")
def clip():
    return synthetic_clip(5, num_frames=6, size=(48, 64), num_objects=2)


def probs_of(seg: Segmenter, frames, prompts: dict[int, np.ndarray]) -> list[np.ndarray]:
    state = seg.init_state(list(frames))
    for t, ids in prompts.items():
        seg.add_mask(state, t, ids)
    return [p for _, _, p in seg.propagate(state, return_probs=True)]


def test_mirror_helpers_round_trip():
    x = torch.randn(2, 3, 4, 5)
    m = with_mirror(x)
    assert m.shape == (4, 3, 4, 5)
    torch.testing.assert_close(m[2:], x.flip(-1))
    torch.testing.assert_close(merge_mirror(m), x)
    score = torch.tensor([[0.2, 0.4], [0.6, 0.8]])  # objectness [2B, O]: no width axis, averaged as it is
    torch.testing.assert_close(merge_mirror(score), torch.tensor([[0.4, 0.6]]))


def test_flip_is_mirror_symmetric(clip):
    """With flip, segmenting the mirrored video gives the mirror image of the masks (the two views swap
    roles); a plain run of the same random model does not have that symmetry, so the test has teeth."""
    frames, ids = clip.frames, clip.masks[0]
    mirrored = [np.ascontiguousarray(f[:, ::-1]) for f in frames]
    for flip, symmetric in ((True, True), (False, False)):
        seg = Segmenter(tiny(), max_size=None, precision="fp32", flip=flip)
        a = probs_of(seg, frames, {0: ids})
        b = probs_of(seg, mirrored, {0: np.ascontiguousarray(ids[:, ::-1])})
        gap = max(float(np.abs(x - y[..., ::-1]).max()) for x, y in zip(a, b, strict=True))
        if symmetric:
            assert gap < 1e-4
        else:
            assert gap > 1e-3


def test_flip_merges_the_two_views_of_every_frame(clip):
    """unroll_flipped's logits are the mean of the two copies' (the mirror's flipped back), and both copies
    are fed the inner feed's answer to them."""
    model = tiny()
    frames = [torch.from_numpy(f).permute(2, 0, 1)[None].float() / 255 for f in clip.frames]
    masks = torch.from_numpy(np.stack([clip.masks[0] == k for k in (1, 2)])).float()[None]
    fed_seen = []

    class Spy(FirstFrameFeed):
        def feedback(self, t, logits):
            fed_seen.append(logits)
            return super().feedback(t, logits)

    with torch.no_grad():
        results = list(unroll_flipped(model, frames, Spy(masks)))
        # the same run by hand: a batch of (frame, mirror) through the plain unroll with the wrapped feed
        plain = list(model.unroll((with_mirror(x) for x in frames), FlipFeed(FirstFrameFeed(masks))))
    assert len(results) == len(frames)
    for r, p, seen in zip(results, plain, fed_seen, strict=True):
        assert (
            r.logits.shape == (1, 2, 48, 64)
            and r.objectness.shape == (1, 2)
            and r.fed.shape == (1, 2, 48, 64)
        )
        torch.testing.assert_close(r.logits, (p.logits[:1] + p.logits[1:].flip(-1)) / 2)
        torch.testing.assert_close(seen, r.logits)  # the inner feed answers the merged logits
        torch.testing.assert_close(p.fed[1:], p.fed[:1].flip(-1))  # both copies get the same masks
    torch.testing.assert_close(results[0].fed, masks)  # frame 0: the given masks


def test_flip_with_objects_added_later_and_removed(clip):
    seg = Segmenter(tiny(), max_size=None, precision="fp32", flip=True)
    state = seg.init_state(list(clip.frames))
    seg.add_mask(state, 0, {1: clip.masks[0] == 1})
    seg.add_mask(state, 2, {2: clip.masks[2] == 2})
    out = []
    for t, ids, m in seg.propagate(state):
        if t == 3:
            seg.remove_object(state, 1)
        out.append((t, ids, m))
    assert [ids for _, ids, _ in out] == [[1], [1], [1, 2], [1, 2], [2], [2]]
    np.testing.assert_array_equal(out[2][2] == 2, clip.masks[2] == 2)  # a prompt is its frame's result


def test_flip_runs_the_zero_shot_tracker_and_leaves_discovery_plain(clip):
    """Zero-shot with a tracker and flip: discovery (frames 0-2) is the plain zero-shot model's; after the
    hand-off, the probabilities are a flipped one-shot run of the tracker prompted with the handed objects."""
    torch.manual_seed(0)
    z = build_model("rvos-st", mode="zero-shot", hidden_size=16, max_objects=3)
    # min_area -1: every slot is reported whatever its area (the random tracker's probabilities stay under 0.5)
    kw = dict(max_size=None, precision="fp32", objectness_threshold=0.0, min_area=-1.0)
    frames = list(clip.frames)
    ids, probs = {}, {}
    for flip in (False, True):
        seg = Segmenter(z, tracker=tiny(), handoff=3, flip=flip, **kw)
        ids[flip] = [m for _, _, m in seg.propagate(seg.init_state(frames), zero_shot=True)]
        probs[flip] = [
            p for _, _, p in seg.propagate(seg.init_state(frames), zero_shot=True, return_probs=True)
        ]
    for t in range(3):  # discovery: the zero-shot model, plain either way
        np.testing.assert_array_equal(ids[True][t], ids[False][t])
    handed = ids[True][2]
    assert handed.max() > 0
    tracker = Segmenter(tiny(), max_size=None, precision="fp32", flip=True, small_object_size=None)
    state = tracker.init_state(frames[2:])
    tracker.add_mask(state, 0, handed)
    tracked = [p for _, _, p in tracker.propagate(state, return_probs=True)]
    for t in range(3, len(frames)):
        np.testing.assert_allclose(probs[True][t], tracked[t - 2], atol=1e-5)
    assert max(float(np.abs(probs[True][t] - probs[False][t]).max()) for t in range(3, len(frames))) > 1e-3


def test_flip_option_through_load_model_and_refused_for_onnx(tmp_path, monkeypatch):
    path = tmp_path / "tiny.pt"
    save_model(tiny(), path)
    assert load_model(path, flip=True).flip and not load_model(path).flip
    import recvos.inference.onnx as onnx_mod

    class FakeOnnx(onnx_mod.OnnxModel):  # an ONNX Runtime model without a graph: only its type matters here
        def __init__(self):
            super(onnx_mod.OnnxModel, self).__init__()

    with pytest.raises(RecvosError, match=r"flip \(--flip\).*--runtime torch"):
        Segmenter(FakeOnnx(), flip=True)


def test_flip_after_online_learning_uses_the_fine_tuned_weights_then_restores_them(clip):
    """Online learning, then a flipped propagation: the masks are those of the fine-tuned weights seen twice
    (a flipped run of a copy holding them), and the original weights are back afterwards."""
    import copy

    seg = Segmenter(tiny(), max_size=None, precision="fp32", flip=True, small_object_size=None)
    before = {k: v.clone() for k, v in seg.model.state_dict().items()}
    state = seg.init_state(list(clip.frames))
    seg.add_mask(state, 0, clip.masks[0])
    seg.finetune(state, steps=2, val_pairs=0)
    tuned = copy.deepcopy(seg.model)
    got = [p for _, _, p in seg.propagate(state, return_probs=True)]
    for k, v in seg.model.state_dict().items():
        torch.testing.assert_close(v, before[k])
    ref = Segmenter(tuned, max_size=None, precision="fp32", flip=True, small_object_size=None)
    want = probs_of(ref, clip.frames, {0: clip.masks[0]})
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert any(
        not np.allclose(a, b, atol=1e-4)
        for a, b in zip(got, probs_of(seg, clip.frames, {0: clip.masks[0]}), strict=True)
    )
