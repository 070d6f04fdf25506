"""The one frame loop: state operations, feeds, and the users of ``unroll`` agreeing with each other."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recvos.data.clips import ArrayVideo
from recvos.data.synthetic import synthetic_clip
from recvos.inference.online import pair_logits
from recvos.inference.segmenter import Segmenter
from recvos.models.base import RecurrentVOS
from recvos.models.factory import build_model
from recvos.models.feed import ClipFeed, FirstFrameFeed, ObjectChange, first_valid
from recvos.training.validation import segment_for_validation


@pytest.fixture(scope="module")
def clip():
    return synthetic_clip(5, num_frames=6, size=(48, 64), num_objects=2)


def tiny(name: str = "rvos-st", **kw) -> RecurrentVOS:
    torch.manual_seed(0)
    return build_model(name, hidden_size=16, **kw).eval()


def test_state_ops_cat_select_where():
    model = tiny(reference=True, ref_dim=4)
    frame = torch.rand(2, 3, 32, 48)
    masks = (torch.rand(2, 3, 32, 48) > 0.5).float()
    with torch.no_grad():
        a, b = model.init_state(frame, masks[:, :2]), model.init_state(frame, masks[:, 2:])
        both = a.cat_objects(b)
        assert both.num_objects == 3
        assert [h.shape[1] for h in both.hidden] == [3] * 4 and both.ref_emb.shape[1] == 3
        assert torch.equal(both.select_objects([2]).ref_mask, b.ref_mask)
        back = both.select_objects([1, 0])
        assert torch.equal(back.ref_mask[:, 0], a.ref_mask[:, 1]) and torch.equal(
            back.ref_mask[:, 1], a.ref_mask[:, 0]
        )
        other = model.init_state(frame, 1 - masks)
        which = torch.tensor([[True, False, False], [False, False, True]])
        mixed = both.where_objects(which, other)
        assert torch.equal(mixed.ref_mask[0, 0], other.ref_mask[0, 0])
        assert torch.equal(mixed.ref_mask[0, 1], both.ref_mask[0, 1])
        assert torch.equal(mixed.ref_mask[1, 2], other.ref_mask[1, 2])
        with pytest.raises(TypeError):
            a.cat_objects(
                build_model("s2s", hidden_size=8, decoder_dims=(8, 8, 8, 8, 8)).init_state(frame, masks)
            )


def test_first_valid_marks_only_the_first_frame():
    valid = torch.tensor([[[0, 1], [1, 1], [0, 0], [1, 1]]], dtype=torch.bool)  # [B=1, T=4, O=2]
    assert first_valid(valid)[0].tolist() == [[False, True], [True, False], [False, False], [False, False]]


def test_objects_enter_leave_and_frames_without_objects():
    """unroll appends entering objects, drops removed ones, and yields nothing to segment before the first."""

    class Script:
        zero_shot = False

        def __init__(self, masks):
            self.masks = masks

        def objects(self, t):
            return {
                1: ObjectChange(masks=self.masks[:, :1]),
                2: ObjectChange(masks=self.masks[:, 1:]),
                3: ObjectChange(keep=[1]),
            }.get(t)

        def feedback(self, t, logits):
            return torch.sigmoid(logits)

    model = tiny()
    frames = torch.rand(5, 1, 3, 32, 48)
    masks = (torch.rand(1, 2, 32, 48) > 0.5).float()
    with torch.no_grad():
        results = list(model.unroll(frames, Script(masks)))
    assert [r.t for r in results] == [0, 1, 2, 3, 4]
    assert results[0].logits is None
    assert [r.logits.shape[1] for r in results[1:]] == [1, 2, 1, 1]
    assert results[2].state.num_objects == 2 and results[3].state.num_objects == 1


def test_segmenter_and_training_validation_give_identical_masks(clip):
    """best.pt is chosen by the code users run: validation's masks are the Segmenter's, frame for frame."""
    model = tiny(reference=True, ref_dim=4)
    ids = np.asarray(clip.masks)
    video = ArrayVideo("clip", np.asarray(clip.frames), ids)
    gt, pred = segment_for_validation(Segmenter(model, max_size=32), video, max_frames=6, zero_shot=False)
    seg = Segmenter(model, max_size=32)  # the user path: prompt each object where it first appears
    state = seg.init_state(list(clip.frames))
    for obj, t in video.first_frame.items():
        seg.add_mask(state, t, {obj: ids[t] == obj})
    user = np.stack([m for _, _, m in seg.propagate(state)])
    np.testing.assert_array_equal(pred, user)
    np.testing.assert_array_equal(gt, ids)


def test_online_learning_and_inference_share_the_loop(clip):
    """Online learning's training pair (teacher forcing) is the Segmenter's propagation of a 2-frame video
    prompted on frame 0: the model output on frame 1 is the same number, not a re-implementation."""
    model = tiny()
    ids = np.asarray(clip.masks[:2])
    frames = torch.from_numpy(np.asarray(clip.frames[:2])).permute(0, 3, 1, 2).float().div(255)[None]
    masks = torch.stack([torch.from_numpy(ids == o) for o in (1, 2)], 1).float()[None]  # [1, 2, O, H, W]
    with torch.no_grad():
        logits = pair_logits(model, frames, masks)
    seg = Segmenter(model, max_size=None, optimize=False, precision="fp32")  # the same numbers: fp32 both
    state = seg.init_state(list(clip.frames[:2]))
    seg.add_mask(state, 0, ids[0])
    probs = [p for _, _, p in seg.propagate(state, return_probs=True)]
    torch.testing.assert_close(torch.from_numpy(probs[1]), torch.sigmoid(logits[0, 1]), atol=1e-6, rtol=0)


def test_clip_feed_and_first_frame_feed_agree_without_teacher():
    """Mask-ST+ on a clip (ground truth only where objects enter) is plain inference from frame 0's masks."""
    model = tiny()
    frames = torch.rand(1, 4, 3, 32, 48)
    masks = (torch.rand(1, 4, 2, 32, 48) > 0.5).float()
    with torch.no_grad():
        a = model.unroll_clip(frames, ClipFeed(masks, teacher=False)).logits
        b = model.unroll_clip(frames, FirstFrameFeed(masks[:, 0])).logits
    torch.testing.assert_close(a, b)


def test_zero_shot_loop_needs_a_zero_shot_model():
    from recvos.errors import RecvosError

    with pytest.raises(RecvosError, match="one-shot model and cannot run zero-shot"):
        list(tiny().unroll(torch.rand(2, 1, 3, 32, 48), FirstFrameFeed(None)))
