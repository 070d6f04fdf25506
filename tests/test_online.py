"""Online learning: pairs from one frame, frozen backbone, validation, and no leak into the next video."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recvos.data.synthetic import synthetic_clip
from recvos.errors import RecvosError
from recvos.inference.online import make_pair, pair_transform, trainable_parameters
from recvos.inference.segmenter import Segmenter
from recvos.models.backbones import Backbone
from recvos.models.factory import build_model


@pytest.fixture(scope="module")
def clip():
    return synthetic_clip(5, num_frames=4, size=(48, 64), num_objects=2)


@pytest.fixture()
def seg() -> Segmenter:
    torch.manual_seed(0)
    return Segmenter(build_model("rvos-t", hidden_size=16))


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_make_pair_shapes_and_motion(clip):
    rng = np.random.default_rng(0)
    frames, masks = make_pair(clip.frames[0], clip.masks[0], pair_transform((48, 64)), rng)
    assert frames.shape == (1, 2, 3, 48, 64) and masks.shape == (1, 2, 2, 48, 64)
    assert 0 <= float(frames.min()) and float(frames.max()) <= 1
    assert set(torch.unique(masks).tolist()) <= {0.0, 1.0}
    assert not torch.equal(masks[0, 0], masks[0, 1])  # the two frames differ by a warp


def test_finetune_changes_weights_then_propagate_restores_them(seg, clip):
    before = snapshot(seg.model)
    state = seg.init_state(list(clip.frames))
    seg.add_mask(state, 0, clip.masks[0])
    seconds = seg.finetune(state, steps=3, lr=1e-2, tolerance=1.0)  # tolerance: always keep
    assert seconds > 0 and state.finetune_result.kept and state.finetune_result.steps == 3
    tuned = snapshot(seg.model)
    assert not same(before, tuned)
    # the backbone is frozen by default: only the decoder changed
    bb = {k for k in before if k.startswith("backbone.")}
    assert bb and all(torch.equal(before[k], tuned[k]) for k in bb)
    assert all(p.requires_grad for p in seg.model.parameters())  # flags restored
    assert not seg.model.training
    list(seg.propagate(state))
    assert same(before, snapshot(seg.model))


def test_finetuning_does_not_leak_into_the_next_video(seg, clip):
    before = snapshot(seg.model)
    state = seg.init_state(list(clip.frames))
    seg.add_mask(state, 0, clip.masks[0])
    seg.finetune(state, steps=2, lr=1e-2, tolerance=1.0)
    other = seg.init_state(list(clip.frames[::-1]))  # the next video, before propagating the first one
    assert same(before, snapshot(seg.model))
    seg.add_mask(other, 0, clip.masks[-1])
    ref = Segmenter(build_model("rvos-t", hidden_size=16))
    ref.model.load_state_dict(before)
    a = [ids for _, _, ids in seg.propagate(other)]
    ref_state = ref.init_state(list(clip.frames[::-1]))
    ref.add_mask(ref_state, 0, clip.masks[-1])
    b = [ids for _, _, ids in ref.propagate(ref_state)]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_early_stop_of_propagation_restores_weights(seg, clip):
    before = snapshot(seg.model)
    state = seg.init_state(list(clip.frames))
    seg.add_mask(state, 0, clip.masks[0])
    seg.finetune(state, steps=1, lr=1e-2, tolerance=1.0)
    gen = seg.propagate(state)
    next(gen)
    gen.close()
    assert same(before, snapshot(seg.model))


def test_worse_weights_are_reverted(seg, clip):
    before = snapshot(seg.model)
    state = seg.init_state(list(clip.frames))
    seg.add_mask(state, 0, clip.masks[0])
    seg.finetune(state, steps=1, lr=1e-2, tolerance=-2.0)  # impossible to pass: must revert
    res = state.finetune_result
    assert not res.kept and 0 <= res.iou_before <= 1
    assert same(before, snapshot(seg.model))


def test_trainable_parameters_exclude_backbones():
    model = build_model("rvos-t", hidden_size=16)
    backbone = {id(p) for m in model.modules() if isinstance(m, Backbone) for p in m.parameters()}
    params = trainable_parameters(model)
    assert backbone and params and not backbone & {id(p) for p in params}
    assert len(trainable_parameters(model, train_backbone=True)) == len(list(model.parameters()))


def test_finetune_needs_masks(seg, clip):
    state = seg.init_state(list(clip.frames))
    with pytest.raises(RecvosError, match="needs masks"):
        seg.finetune(state, steps=1)


def test_finetune_runs_in_the_segmenters_precision(clip):
    """A bf16 Segmenter fine-tunes under bf16 autocast (fp32 weights, other updates than fp32's); dtype=fp32
    given explicitly fine-tunes exactly as an fp32 Segmenter does."""

    def tuned(precision: str, **options) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        s = Segmenter(build_model("rvos-t", hidden_size=16), precision=precision)
        state = s.init_state(list(clip.frames))
        s.add_mask(state, 0, clip.masks[0])
        s.finetune(state, steps=2, lr=1e-2, tolerance=1.0, **options)
        assert state.finetune_result.kept
        return snapshot(s.model)

    fp32, bf16 = tuned("fp32"), tuned("bf16")
    assert all(v.dtype == torch.float32 for k, v in bf16.items() if v.is_floating_point())
    assert not same(fp32, bf16)
    assert same(fp32, tuned("bf16", dtype=torch.float32))


def test_online_steps_flag_alone_is_the_recommended_setting():
    """--online-steps with no value is ONLINE_STEPS (the CLI's copy equals the library's); absent, 0."""
    import argparse

    from recvos.cli.options import ONLINE_STEPS as CLI_STEPS
    from recvos.cli.options import add_online_steps_option
    from recvos.inference.online import ONLINE_STEPS

    p = argparse.ArgumentParser()
    p.add_argument("video")
    add_online_steps_option(p)
    assert CLI_STEPS == ONLINE_STEPS
    assert p.parse_args(["v.mp4"]).online_steps == 0
    assert p.parse_args(["v.mp4", "--online-steps"]).online_steps == ONLINE_STEPS
    assert p.parse_args(["v.mp4", "--online-steps", "7"]).online_steps == 7


def test_blend_keeps_a_mix_of_the_original_and_fine_tuned_weights(clip):
    """blend=0.5 keeps the midpoint of the original weights and those blend=1 gives (same seed), and a blend
    outside (0, 1] is refused."""

    def tuned(**options) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        torch.manual_seed(0)
        s = Segmenter(build_model("rvos-t", hidden_size=16), precision="fp32")
        before = snapshot(s.model)
        state = s.init_state(list(clip.frames))
        s.add_mask(state, 0, clip.masks[0])
        s.finetune(state, steps=2, lr=1e-2, tolerance=1.0, **options)
        return before, snapshot(s.model)

    before, full = tuned()
    _, half = tuned(blend=0.5)
    changed = [k for k in before if before[k].is_floating_point() and not torch.equal(before[k], full[k])]
    assert changed
    for k in changed:
        torch.testing.assert_close(half[k], (before[k] + full[k]) / 2)
    for bad in (0.0, 1.5):
        with pytest.raises(RecvosError, match="blend must be in"):
            tuned(blend=bad)


def test_progress_reports_every_step_and_can_stop_the_fine_tuning(seg, clip):
    """progress(done, steps) after every step; returning True stops there with the original weights."""
    before = snapshot(seg.model)
    state = seg.init_state(list(clip.frames))
    seg.add_mask(state, 0, clip.masks[0])
    calls = []
    seg.finetune(state, steps=3, lr=1e-2, tolerance=1.0, progress=lambda d, n: calls.append((d, n)))
    assert calls == [(1, 3), (2, 3), (3, 3)] and state.finetune_result.kept
    seg.restore_weights()
    seg.finetune(state, steps=5, lr=1e-2, tolerance=1.0, progress=lambda d, n: d == 2)
    res = state.finetune_result
    assert res.steps == 2 and not res.kept
    assert same(before, snapshot(seg.model))


def test_open_sequence_runs_online_learning_with_the_options_given(seg, clip):
    """open_sequence(online_steps=N, finetune_options=...) fine-tunes with those options (a blend out of range
    is refused, so they reach finetune), and with none the weights are untouched."""
    from recvos.data.clips import ArrayVideo
    from recvos.inference.dataset import open_sequence

    video = ArrayVideo("clip", np.stack(clip.frames), np.stack(clip.masks))
    before = snapshot(seg.model)
    open_sequence(seg, video)
    assert same(before, snapshot(seg.model))
    state = open_sequence(seg, video, online_steps=2, finetune_options={"lr": 1e-2, "tolerance": 1.0})
    assert state.finetune_result.steps == 2 and state.finetune_result.kept
    with pytest.raises(RecvosError, match="blend must be in"):
        open_sequence(seg, video, online_steps=1, finetune_options={"blend": 2.0})
