"""recvos.prompts: GrabCut from a box / clicks on synthetic images, the simulated clicker, the metrics, and
the one-line errors for bad prompts."""

from __future__ import annotations

import numpy as np
import pytest

from recvos.errors import RecvosError
from recvos.prompts import (
    iou,
    mask_from_prompts,
    mean_iou_at,
    next_click,
    noc,
    parse_box,
    parse_points,
    run_clicks,
    tight_box,
    validate_prompts,
)

H, W = 120, 160


def disc_scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A textured (striped, noisy) disc on a differently coloured, noisy background -> (frame, gt)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    gt = (yy - 60) ** 2 + (xx - 85) ** 2 <= 32**2
    bg = np.array([60, 140, 70], np.float32) + rng.normal(0, 12, (H, W, 3))
    stripes = (np.sin(xx / 3.0) > 0)[..., None]
    fg = np.where(stripes, [200, 60, 50], [230, 150, 40]).astype(np.float32) + rng.normal(0, 12, (H, W, 3))
    frame = np.clip(np.where(gt[..., None], fg, bg), 0, 255).astype(np.uint8)
    return frame, gt


# ------------------------------------------------------------------------------------------------ grabcut
def test_grabcut_box_recovers_a_textured_disc():
    frame, gt = disc_scene()
    pred = mask_from_prompts(frame, box=tight_box(gt), method="grabcut")
    assert pred.dtype == bool and pred.shape == (H, W)
    assert iou(pred, gt) > 0.8


def test_grabcut_clicks_recover_the_disc_and_a_negative_click_removes_background():
    frame, gt = disc_scene(1)
    pred = mask_from_prompts(frame, points=[(85, 60)], labels=[1], method="grabcut")
    assert iou(pred, gt) > 0.6
    pred2 = mask_from_prompts(
        frame, points=[(85, 60), (10, 10)], labels=[1, 0], previous=pred, method="grabcut"
    )
    assert not pred2[10, 10]
    assert iou(pred2, gt) > 0.6


def test_grabcut_is_deterministic_and_processes_large_frames_downscaled():
    frame, gt = disc_scene(2)
    big = np.repeat(np.repeat(frame, 3, 0), 3, 1)  # 360x480 > max_size: processed at a shorter side of 160
    gt_big = np.repeat(np.repeat(gt, 3, 0), 3, 1)
    box = tuple(3 * v for v in tight_box(gt))
    a = mask_from_prompts(big, box=box, method="grabcut")
    b = mask_from_prompts(big, box=box, method="grabcut")
    assert a.shape == gt_big.shape and np.array_equal(a, b)
    assert iou(a, gt_big) > 0.8


def test_a_mask_alone_is_returned_and_scribbles_work():
    frame, gt = disc_scene(3)
    assert np.array_equal(mask_from_prompts(frame, mask=gt), gt)
    pred = mask_from_prompts(
        frame, scribbles=[([(70, 60), (100, 60)], True), ([(5, 5), (5, 100)], False)], method="grabcut"
    )
    assert iou(pred, gt) > 0.6 and not pred[50, 5]


# ------------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({}, "no prompt"),
        ({"box": (10, 10, 10, 50)}, "zero area"),
        ({"box": (50, 10, 10, 50)}, "x0 < x1"),
        ({"box": (200, 10, 300, 50)}, "outside"),
        ({"box": (1, 2, 3)}, "4 numbers"),
        ({"box": (0, 0, float("nan"), 5)}, "finite"),
        ({"points": [(W, 5)]}, "outside the 160x120 frame"),
        ({"points": [(-1, 5)]}, "outside"),
        ({"points": [(5, 5)], "labels": [1, 0]}, "2 labels for 1 points"),
        ({"points": [(5, 5)], "labels": [2]}, "1 (object) or 0"),
        ({"labels": [1]}, "no points"),
        ({"mask": np.zeros((H, W), bool)}, "empty"),
        ({"mask": np.ones((10, 10), bool)}, "frame size"),
        ({"scribbles": [([(500, 5)], True)]}, "outside"),
    ],
)
def test_bad_prompts_raise_one_line_errors(kwargs, words):
    frame, _ = disc_scene()
    with pytest.raises(RecvosError, match=None) as e:
        mask_from_prompts(frame, **kwargs)
    msg = str(e.value)
    assert words in msg and "\n" not in msg


def test_bad_frame_method_and_previous():
    frame, gt = disc_scene()
    with pytest.raises(RecvosError, match="uint8 RGB"):
        mask_from_prompts(frame.astype(np.float32), box=tight_box(gt))
    with pytest.raises(RecvosError, match="not available; use one of: grabcut, learned"):
        mask_from_prompts(frame, box=tight_box(gt), method="sam")
    with pytest.raises(RecvosError, match="previous"):
        mask_from_prompts(frame, points=[(80, 60)], previous=np.zeros((3, 3), bool))


def test_a_box_partly_outside_is_clipped():
    p = validate_prompts((H, W), box=(-10.5, -3, W + 20, 40.2))
    assert p.box == (0, 0, W, 41)


def test_cli_parsers():
    assert parse_box("1,2,30.5,40") == (1, 2, 30.5, 40)
    assert parse_points("10,20,+; 30,40,-;5,6") == ([(10, 20), (30, 40), (5, 6)], [1, 0, 1])
    for bad in ("1,2,3", "a,b,c,d"):
        with pytest.raises(RecvosError, match="--box"):
            parse_box(bad)
    for bad in ("", "1,2,?", "1;2"):
        with pytest.raises(RecvosError, match="--points"):
            parse_points(bad)


# ------------------------------------------------------------------------------------------------ clicker
def test_first_click_is_the_objects_innermost_point():
    _, gt = disc_scene()
    y, x, positive = next_click(gt)
    assert positive and gt[y, x]
    assert abs(y - 60) <= 1 and abs(x - 85) <= 1


def test_click_goes_to_the_largest_error_region_with_its_sign():
    gt = np.zeros((H, W), bool)
    gt[20:100, 20:100] = True
    pred = gt.copy()
    pred[40:60, 120:150] = True  # false positive, 600 px
    pred[20:30, 20:30] = False  # false negative, 100 px
    y, x, positive = next_click(gt, pred)
    assert not positive and 40 <= y < 60 and 120 <= x < 150
    pred[40:60, 120:150] = False
    y, x, positive = next_click(gt, pred)
    assert positive and 20 <= y < 30 and 20 <= x < 30
    assert next_click(gt, gt) is None


def test_the_frame_border_counts_as_boundary():
    gt = np.zeros((40, 40), bool)
    gt[5:35, :20] = True  # touches the left border: the click must not sit on it
    y, x, _ = next_click(gt)
    assert 8 <= x <= 11 and 12 <= y <= 27


def test_metrics_and_run_clicks():
    assert iou(np.zeros((4, 4), bool), np.zeros((4, 4), bool)) == 1.0
    assert noc([0.5, 0.86, 0.95], 0.85) == 2 and noc([0.5, 0.86, 0.95], 0.90) == 3 and noc([0.1], 0.9) == 20
    assert mean_iou_at([[0.5, 0.7], [0.9]], 2) == pytest.approx(0.8)

    _, gt = disc_scene()
    calls = []

    def oracle(points, labels):  # perfect from the second click on
        calls.append((list(points), list(labels)))
        return gt if len(points) >= 2 else np.zeros_like(gt)

    run = run_clicks(oracle, gt, max_clicks=20, min_clicks=5, stop_iou=0.9)
    assert run.ious[0] == 0.0 and run.ious[1] == 1.0 and len(run.ious) == 5
    assert calls[0][1] == [1] and calls[1][1] == [1, 1]
    assert noc(run.ious, 0.85) == 2
