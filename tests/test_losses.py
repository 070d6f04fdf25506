"""Losses: soft IoU values, Hungarian matching against brute force, one-shot/zero-shot weighting."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from recvos.losses import (
    VOSLoss,
    bce_loss,
    dice_loss,
    hungarian_match,
    lovasz_hinge_loss,
    match_slots,
    soft_iou_loss,
)


def test_soft_iou_known_values():
    y = torch.zeros(4, 4)
    y[:2] = 1  # 8 pixels
    p = torch.zeros(4, 4)
    p[1:3] = 1  # 8 pixels, 4 overlap -> IoU 4/12
    assert soft_iou_loss(p, y).item() == pytest.approx(1 - 4 / 12, abs=1e-5)
    assert soft_iou_loss(y, y).item() == pytest.approx(0.0, abs=1e-5)
    assert soft_iou_loss(torch.zeros(4, 4), torch.zeros(4, 4)).item() == pytest.approx(0.0, abs=1e-5)
    assert soft_iou_loss(torch.ones(4, 4), torch.zeros(4, 4)).item() == pytest.approx(1.0, abs=1e-5)
    # soft values: <p,y> = 0.5*8 = 4, |p| = 8, |y| = 8 -> 4/12
    assert soft_iou_loss(torch.full((4, 4), 0.5), y).item() == pytest.approx(1 - 4 / 12, abs=1e-5)


def test_other_terms_known_values():
    y = (torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    assert (y.sum((-2, -1)) > 0).all()  # every mask has positives (the Lovasz values below assume it)
    good = (y * 2 - 1) * 20  # confident and right: margin 20 on every pixel
    zero = torch.zeros_like(y)
    for fn in (bce_loss, lovasz_hinge_loss):
        assert fn(good, y).shape == (2, 3)
    assert torch.allclose(bce_loss(zero, y), torch.full((2, 3), math.log(2)))  # p = 0.5 everywhere
    assert (bce_loss(good, y) < 1e-8).all()
    # Lovasz hinge: errors 1 - margin; all equal to e -> loss e (the Jaccard loss of "all wrong" is 1)
    assert torch.equal(lovasz_hinge_loss(good, y), torch.zeros(2, 3))  # hinge errors all negative
    assert torch.allclose(lovasz_hinge_loss(zero, y), torch.ones(2, 3))
    assert torch.allclose(lovasz_hinge_loss(-good, y), torch.full((2, 3), 21.0))
    assert (dice_loss(torch.sigmoid(good), y) < 1e-3).all()
    # soft dice by hand: 1 - (2 * 0.5 * |y| + 1) / (32 + |y| + 1) on an 8x8 map of 0.5
    n = float(y[0, 0].sum())
    assert dice_loss(torch.full((8, 8), 0.5), y[0, 0]).item() == pytest.approx(1 - (n + 1) / (33 + n))


def _brute_force_min(cost: np.ndarray) -> float:
    P, G = cost.shape
    if P >= G:
        return min(
            sum(cost[r, c] for c, r in enumerate(rows)) for rows in itertools.permutations(range(P), G)
        )
    return min(sum(cost[r, c] for r, c in enumerate(cols)) for cols in itertools.permutations(range(G), P))


@pytest.mark.parametrize("shape", [(3, 3), (4, 2), (2, 4), (5, 5), (1, 3)])
def test_hungarian_matches_brute_force(shape):
    rng = np.random.default_rng(sum(shape))
    for _ in range(20):
        cost = rng.random(shape)
        rows, cols = hungarian_match(cost)
        assert len(rows) == min(shape) and len(set(rows)) == len(rows) and len(set(cols)) == len(cols)
        assert cost[rows, cols].sum() == pytest.approx(_brute_force_min(cost))


def test_match_slots_brute_force_on_soft_iou():
    gen = torch.Generator().manual_seed(0)
    for trial in range(10):
        P, G = 4, 3
        probs = torch.rand(1, 2, P, 6, 6, generator=gen)
        target = (torch.rand(1, 2, G, 6, 6, generator=gen) > 0.6).float()
        valid = torch.ones(1, 2, G, dtype=torch.bool)
        if trial % 2:
            valid[0, 0, 1] = False  # object 1 appears at frame 1: matched there
        assign = match_slots(probs, target, valid)[0]
        cost = np.zeros((P, G))
        for g in range(G):
            t = 0 if valid[0, 0, g] else 1
            for p in range(P):
                cost[p, g] = soft_iou_loss(probs[0, t, p], target[0, t, g]).item()
        got = sum(cost[p, assign[p]] for p in range(P) if assign[p] >= 0)
        assert int((assign >= 0).sum()) == G
        assert got == pytest.approx(_brute_force_min(cost), abs=1e-5)


def test_match_slots_recovers_a_permutation():
    target = torch.zeros(1, 1, 3, 8, 8)
    target[0, 0, 0, :2] = 1
    target[0, 0, 1, 3:5] = 1
    target[0, 0, 2, 6:] = 1
    perm = [2, 0, 1]  # slot p predicts object perm[p]
    probs = target[:, :, perm] * 0.9 + 0.05
    valid = torch.ones(1, 1, 3, dtype=torch.bool)
    assert match_slots(probs, target, valid)[0].tolist() == perm
    # an object never valid in the clip is left out of the matching
    valid[0, 0, 1] = False
    assert match_slots(probs, target, valid)[0].tolist() == [2, 0, -1]


def test_one_shot_loss_ignores_invalid_entries():
    loss = VOSLoss(iou=1.0, bce=1.0)
    gen = torch.Generator().manual_seed(0)
    target = (torch.rand(2, 3, 2, 8, 8, generator=gen) > 0.5).float()
    logits = (target * 2 - 1) * 10
    obj = torch.full((2, 3, 2), 0.5)
    weight = torch.ones(2, 3, 2, dtype=torch.bool)
    assert loss(logits, obj, target, weight).total.item() < 0.01
    wrong = logits.clone()
    wrong[:, 1, 0] *= -1  # wrong prediction where the object is not valid: no change
    weight[:, 1, 0] = False
    base = loss(logits, obj, target, weight).total.item()
    assert loss(wrong, obj, target, weight).total.item() == pytest.approx(base, abs=1e-7)
    weight[:, 1, 0] = True
    assert loss(wrong, obj, target, weight).total.item() > base + 0.1


def test_zero_shot_loss_is_permutation_invariant_and_trains_objectness():
    loss = VOSLoss(iou=1.0, objectness=1.0)
    target = torch.zeros(1, 2, 2, 8, 8)
    target[0, :, 0, :3] = 1
    target[0, :, 1, 5:] = 1
    weight = torch.ones(1, 2, 2, dtype=torch.bool)
    logits = torch.full((1, 2, 3, 8, 8), -10.0)
    logits[0, :, 2] = (target[0, :, 0] * 2 - 1) * 10  # slot 2 <- object 0
    logits[0, :, 0] = (target[0, :, 1] * 2 - 1) * 10  # slot 0 <- object 1
    obj = torch.tensor([0.99, 0.01, 0.99]).expand(1, 2, 3)
    out = loss(logits, obj, target, weight, zero_shot=True)
    assert out.assign[0].tolist() == [1, -1, 0]
    assert out.total.item() < 0.05
    bad_obj = torch.tensor([0.01, 0.99, 0.01]).expand(1, 2, 3)
    assert loss(logits, bad_obj, target, weight, zero_shot=True).terms["objectness"] > 3.0


def test_zero_shot_gradient_only_reaches_matched_slots():
    loss = VOSLoss(iou=1.0, objectness=0.0)
    target = torch.zeros(1, 1, 1, 8, 8)
    target[..., :4, :] = 1
    logits = torch.randn(1, 1, 3, 8, 8, requires_grad=True)
    out = loss(
        logits, torch.full((1, 1, 3), 0.5), target, torch.ones(1, 1, 1, dtype=torch.bool), zero_shot=True
    )
    out.total.backward()
    matched = int(out.assign[0].argmax())
    norms = logits.grad[0, 0].abs().sum((-2, -1))
    assert norms[matched] > 0
    assert all(norms[p] == 0 for p in range(3) if p != matched)
