"""Semi-supervised and unsupervised protocols: toolkit equivalence, improvements, files and errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from recvos.data.masks import write_mask
from recvos.data.synthetic import synthetic_clip, write_synthetic_dataset
from recvos.errors import RecvosError
from recvos.evaluation.folders import find_ground_truth
from recvos.evaluation.metrics import jaccard_and_f, summarize
from recvos.evaluation.protocols import (
    evaluate_arrays,
    evaluate_semi_supervised,
    evaluate_sequences,
    evaluate_unsupervised,
)
from recvos.evaluation.results import METRIC_KEYS

# ------------------------------------------------------------------ the toolkit's protocols (sequence level)


def _toolkit_onehot(masks, n):
    return np.stack([masks == i for i in range(1, n + 1)]) if n else np.zeros((0, *masks.shape), bool)


def _toolkit_semi(gt, pred):
    """Per-object (J, F) arrays as davis2017-evaluation computes them for one sequence."""
    n = int(gt[0].max())  # objects 1..max id of frame 0
    g = _toolkit_onehot(gt[1:-1], n)
    p = _toolkit_onehot(pred[1:-1], int(pred[1:-1].max()))
    assert p.shape[0] == g.shape[0]
    return [jaccard_and_f(g[i], p[i]) for i in range(n)]


def _toolkit_unsup(gt, pred):
    n = int(gt[0].max())
    g = _toolkit_onehot(gt, n)
    p = _toolkit_onehot(pred, int(pred.max()))
    if p.shape[0] < n:
        p = np.concatenate([p, np.zeros((n - p.shape[0], *p.shape[1:]), bool)])
    J = np.zeros((p.shape[0], n, gt.shape[0]))
    F = np.zeros_like(J)
    for i in range(n):
        for k in range(p.shape[0]):
            J[k, i], F[k, i] = jaccard_and_f(g[i], p[k])
    rows, cols = linear_sum_assignment(-(J.mean(axis=2) + F.mean(axis=2)) / 2)
    return [(J[r, c], F[r, c]) for r, c in zip(rows, cols, strict=True)]


def _toolkit_global(per_object):
    st = np.array([[*summarize(j), *summarize(f)] for j, f in per_object])
    jm, jr, jd, fm, fr, fd = st.mean(axis=0)
    return {
        "J&F-Mean": (jm + fm) / 2,
        "J-Mean": jm,
        "J-Recall": jr,
        "J-Decay": jd,
        "F-Mean": fm,
        "F-Recall": fr,
        "F-Decay": fd,
    }


def _perturb(masks, seed):
    """A plausible prediction: shifted masks, one object dropped on some frames, a false positive."""
    rng = np.random.default_rng(seed)
    out = masks.copy()
    for t in range(len(out)):
        out[t] = np.roll(out[t], tuple(rng.integers(-3, 4, 2)), axis=(0, 1))
        if rng.random() < 0.3:
            out[t][out[t] == 2] = 0
        if rng.random() < 0.3:
            y, x = rng.integers(0, out.shape[1] - 6), rng.integers(0, out.shape[2] - 6)
            out[t, y : y + 5, x : x + 5] = 1
    return out


@pytest.fixture(scope="module")
def clips():
    gts, preds = {}, {}
    for k in range(3):
        c = synthetic_clip(k, num_frames=9, size=(40, 56), num_objects=2)
        gts[f"s{k}"] = c.masks
        preds[f"s{k}"] = _perturb(c.masks, k)
    return gts, preds


# ------------------------------------------------------------------------------------------------- tests


def test_semi_supervised_equals_toolkit(clips):
    gts, preds = clips
    res = evaluate_arrays(gts, preds, "semi-supervised")
    ref = _toolkit_global([jf for s in gts for jf in _toolkit_semi(gts[s], preds[s])])
    for k in METRIC_KEYS:
        assert res.global_metrics[k] == pytest.approx(ref[k], abs=1e-12), k
    assert 0.2 < res.global_metrics["J&F-Mean"] < 0.95  # a real, imperfect score
    assert [len(o.frames) for o in res.objects] == [7] * 6  # first and last frame excluded
    assert res.objects[0].frames[0] == "00001" and res.objects[0].frames[-1] == "00007"


def test_unsupervised_equals_toolkit(clips):
    gts, preds = clips
    # proposals with other ids (2 <-> 1 swapped) and one extra proposal
    swapped = {}
    for s, p in preds.items():
        q = np.where(p == 1, 2, np.where(p == 2, 1, p))
        q[:, :4, :4] = 3
        swapped[s] = q
    res = evaluate_arrays(gts, swapped, "unsupervised")
    ref = _toolkit_global([jf for s in gts for jf in _toolkit_unsup(gts[s], swapped[s])])
    for k in METRIC_KEYS:
        assert res.global_metrics[k] == pytest.approx(ref[k], abs=1e-12), k
    assert [(o.object_id, o.pred_id) for o in res.objects[:2]] == [(1, 2), (2, 1)]
    assert len(res.objects[0].frames) == 9  # every frame


def test_unsupervised_perfect_with_other_ids_and_fewer_proposals():
    c = synthetic_clip(5, num_frames=6, size=(40, 56), num_objects=2)
    pred = np.where(c.masks == 1, 7, np.where(c.masks == 2, 4, 0))
    res = evaluate_arrays({"a": c.masks}, {"a": pred}, "unsupervised")
    assert res.global_metrics["J&F-Mean"] == 1.0
    assert {o.object_id: o.pred_id for o in res.objects} == {1: 7, 2: 4}
    # only one proposal: object 2 is matched to an empty mask and scores 0 wherever it is visible
    only1 = np.where(c.masks == 1, 9, 0)
    res = evaluate_arrays({"a": c.masks}, {"a": only1}, "unsupervised")
    o2 = [o for o in res.objects if o.object_id == 2][0]
    assert o2.pred_id is None
    visible = (c.masks == 2).any(axis=(1, 2))
    assert np.all(o2.j[visible] == 0) and np.all(o2.f[visible] == 0)


def test_unsupervised_too_many_proposals():
    c = synthetic_clip(1, num_frames=3, size=(40, 56), num_objects=1)
    pred = np.zeros_like(c.masks)
    for i in range(5):
        pred[:, i, :5] = i + 1
    with pytest.raises(RecvosError, match="5 object ids"):
        evaluate_arrays({"a": c.masks}, {"a": pred}, "unsupervised", max_proposals=4)


def test_late_objects_and_no_phantom_ids():
    T, H, W = 8, 30, 40
    gt = np.zeros((T, H, W), np.int64)
    gt[:, 2:10, 2:10] = 1
    gt[3:, 15:25, 20:30] = 3  # id 3 (no id 2), appears at frame 3
    pred = gt.copy()
    pred[4:, 15:25, 20:30] = 0  # object 3 lost after its prompt frame
    res = evaluate_arrays({"v": gt}, {"v": pred}, "semi-supervised")
    assert [o.object_id for o in res.objects] == [1, 3]  # no phantom object 2
    o1, o3 = res.objects
    assert o1.frames == [f"{t:05d}" for t in range(1, 7)]
    assert o3.frames == [f"{t:05d}" for t in range(4, 7)]  # after its first frame, before the last
    assert np.all(o1.j == 1) and np.all(o3.j == 0)
    assert res.global_metrics["J-Mean"] == pytest.approx(0.5)
    # an object first seen in the last-but-one frame has nothing to score: skipped
    gt2 = gt.copy()
    gt2[6:, 0:2, 0:2] = 5
    res = evaluate_arrays({"v": gt2}, {"v": gt2}, "semi-supervised")
    assert [o.object_id for o in res.objects] == [1, 3]


def test_void_255_is_not_an_object():
    gt = np.zeros((4, 20, 20), np.int64)
    gt[:, 2:8, 2:8] = 1
    gt[:, 15:, 15:] = 255
    res = evaluate_arrays({"v": gt}, {"v": np.where(gt == 255, 0, gt)}, "semi-supervised")
    assert [o.object_id for o in res.objects] == [1]
    assert res.global_metrics["J&F-Mean"] == 1.0


def test_semi_supervised_rejects_unknown_predicted_ids():
    gt = np.zeros((4, 20, 20), np.int64)
    gt[:, 2:8, 2:8] = 1
    pred = gt.copy()
    pred[2, 10:12, 10:12] = 4
    with pytest.raises(RecvosError, match="id.*4.*not objects"):
        evaluate_arrays({"v": gt}, {"v": pred}, "semi-supervised")


def test_arrays_reject_probabilities():
    gt = np.zeros((3, 10, 10), np.int64)
    gt[:, 2:5, 2:5] = 1
    with pytest.raises(RecvosError, match="non-integer"):
        evaluate_arrays({"v": gt}, {"v": gt * 0.7})
    assert evaluate_arrays({"v": gt}, {"v": gt.astype(np.float32)}).global_metrics["J&F-Mean"] == 1.0


def test_decay_over_300_frames():
    T = 302
    gt = np.zeros((T, 12, 12), np.int64)
    gt[:, 2:10, 2:10] = 1
    pred = gt.copy()
    pred[T // 2 :] = 0  # lost halfway
    res = evaluate_arrays({"long": gt}, {"long": pred}, "semi-supervised")
    assert res.global_metrics["J-Decay"] == pytest.approx(1.0)  # toolkit: nan (uint8 bin edges wrap)
    assert res.global_metrics["J-Mean"] == pytest.approx(0.5, abs=0.01)


def _write_tree(root, masks_by_seq):
    for s, masks in masks_by_seq.items():
        for t, m in enumerate(masks):
            write_mask(root / s / f"{t:05d}.png", m)


def test_files_equal_arrays_and_workers(tmp_path, clips):
    gts, preds = clips
    _write_tree(tmp_path / "gt", gts)
    _write_tree(tmp_path / "pred", preds)
    want = evaluate_arrays(gts, preds)
    one = evaluate_semi_supervised(tmp_path / "gt", tmp_path / "pred", workers=1)
    two = evaluate_sequences(tmp_path / "gt", tmp_path / "pred", "semi-supervised", workers=2)
    assert one.global_metrics == want.global_metrics == two.global_metrics
    assert [o.name for o in two.objects] == [o.name for o in want.objects]
    unsup = evaluate_unsupervised(tmp_path / "gt", tmp_path / "pred", workers=2)
    assert unsup.global_metrics == evaluate_arrays(gts, preds, "unsupervised").global_metrics
    done = []
    evaluate_sequences(
        tmp_path / "gt", tmp_path / "pred", workers=1, sequences=["s1"], on_sequence_done=done.append
    )
    assert done == ["s1"]


def test_dataset_root_and_split(tmp_path):
    root = write_synthetic_dataset(tmp_path / "ds", num_videos=3, num_frames=5, size=(40, 56))
    specs = find_ground_truth(root)  # ImageSets/2017 -> DAVIS-2017, split val
    assert [s.name for s in specs] == ["synthetic002"]
    assert len(find_ground_truth(root, split="train")) == 2
    # perfect predictions: the ground truth itself
    res = evaluate_sequences(root, root / "Annotations", split="train", workers=1)
    assert res.global_metrics["J&F-Mean"] == 1.0
    with pytest.raises(RecvosError, match="unknown split"):
        find_ground_truth(root, split="nope")
    # the unsupervised task reads Annotations_unsupervised when the DAVIS root has it
    unsup = root / "Annotations_unsupervised" / "synthetic002"
    gt = np.zeros((40, 56), np.uint8)
    gt[5:20, 5:20] = 1
    for t in range(5):
        write_mask(unsup / f"{t:05d}.png", gt)
    (spec,) = find_ground_truth(root, task="unsupervised")
    assert spec.gt_paths[0].parent == unsup
    assert find_ground_truth(root)[0].gt_paths[0].parent == root / "Annotations" / "synthetic002"


def test_missing_sequence_frame_and_size(tmp_path, clips):
    gts, preds = clips
    _write_tree(tmp_path / "gt", gts)
    _write_tree(tmp_path / "pred", {"s0": preds["s0"], "s1": preds["s1"]})
    with pytest.raises(RecvosError, match="s2"):
        evaluate_sequences(tmp_path / "gt", tmp_path / "pred", workers=1)
    _write_tree(tmp_path / "pred", {"s2": preds["s2"]})
    (tmp_path / "pred" / "s1" / "00004.png").unlink()
    with pytest.raises(RecvosError, match=r"s1/00004\.png"):
        evaluate_sequences(tmp_path / "gt", tmp_path / "pred", workers=2)
    write_mask(tmp_path / "pred" / "s1" / "00004.png", np.zeros((20, 20), np.uint8))
    with pytest.raises(RecvosError, match=r"00004\.png.*20x20.*40x56"):
        evaluate_sequences(tmp_path / "gt", tmp_path / "pred", workers=1)
    with pytest.raises(RecvosError, match="not found"):
        evaluate_sequences(tmp_path / "gt", tmp_path / "nowhere")
    with pytest.raises(RecvosError, match="unknown task"):
        evaluate_sequences(tmp_path / "gt", tmp_path / "pred", task="bogus")


def test_annotation_folder_with_resolution_subfolder(tmp_path, clips):
    gts, _ = clips
    _write_tree(tmp_path / "Annotations" / "480p", gts)
    specs = find_ground_truth(tmp_path / "Annotations")
    assert [s.name for s in specs] == ["s0", "s1", "s2"]
    assert specs[0].frames[:2] == ["00000", "00001"]
    res = evaluate_sequences(tmp_path / "Annotations", tmp_path / "Annotations" / "480p", workers=1)
    assert res.global_metrics["J&F-Mean"] == 1.0


def test_paper_reports_length_curve_and_object_count_table():
    """J over normalised length (S2S Fig. 3) and J/F by objects per sequence (RVOS Table 3), on hand-made
    scores: one sequence with 1 object perfect in its first half only, one with 2 objects always perfect."""
    from recvos.evaluation.report import j_over_length, jf_by_object_count
    from recvos.evaluation.results import EvalResult, ObjectScores

    def obj(seq, oid, j):
        j = np.asarray(j, dtype=np.float64)
        return ObjectScores(seq, oid, [f"{k:05d}" for k in range(len(j))], j, j.copy())

    res = EvalResult(
        "semi-supervised", [obj("a", 1, [1, 1, 0, 0]), obj("b", 1, [1, 1, 1, 1]), obj("b", 2, [1] * 4)]
    )
    np.testing.assert_allclose(j_over_length(res, bins=2), [1.0, 2 / 3])
    assert jf_by_object_count(res) == [(1, 1, 0.5, 0.5), (2, 2, 1.0, 1.0)]
