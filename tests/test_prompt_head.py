"""The learned prompt head: its prompt encoding, the shared shipped backbone, the feature cache, and its
training by simulated users through ``recvos train`` (resumable, validated through the user's function)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from recvos.errors import RecvosError
from recvos.models.factory import build_model
from recvos.models.loading import load_checkpoint, save_model
from recvos.prompts import mask_from_prompts, tight_box, validate_prompts
from recvos.prompts.learned import prompt_maps
from recvos.training.checkpoint import CheckpointManager
from recvos.training.config import PromptTrainConfig, load_config
from recvos.training.prompt_task import PromptTrainer, start_session
from recvos.training.trainer import Trainer, trainer_class

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def tiny_cfg(out: Path, *extra: str):
    """configs/prompt_head.yaml on synthetic 64x96 frames, a random backbone, 4 steps."""
    return load_config(
        CONFIGS / "prompt_head.yaml",
        [
            f"out={out}",
            "model.options.backbone_from=null",
            "model.options.width=16",
            "data.kind=null",
            "data.mix.real=0",
            "data.mix.pseudo=0",
            "data.mix.synthetic=1",
            "data.size=[64, 96]",
            "data.synthetic.size=[64, 96]",
            "data.synthetic.pool=8",
            "train.batch_size=2",
            "train.steps=4",
            "train.ckpt_every=2",
            "train.keep_last=5",
            "train.ema=null",
            "train.progress=false",
            "train.tensorboard=false",
            "optim.warmup_steps=1",
            "val.kind=null",
            "val.every=0",
            *extra,
        ],
    )


def test_prompt_maps_encode_clicks_box_and_previous():
    prev = np.zeros((40, 60), bool)
    prev[5:10, 5:10] = True
    p = validate_prompts((40, 60), box=(10, 20, 30, 35), points=[(15, 25), (50, 5)], labels=[1, 0])
    maps = prompt_maps(p, prev, radius=2)
    assert maps.shape == (4, 40, 60) and maps.dtype == np.float32
    assert maps[0, 25, 15] == 1 and maps[0, 5, 50] == 0 and maps[1, 5, 50] == 1 and maps[1, 25, 15] == 0
    assert maps[0].sum() == maps[1].sum() == 13  # a disk of radius 2
    assert maps[2].sum() == 20 * 15 and maps[2, 20, 10] == 1 and maps[2, 35, 30] == 0
    assert np.array_equal(maps[3] > 0, prev)
    # a given mask stands for the previous mask when there is none
    only_mask = validate_prompts((40, 60), mask=prev)
    assert np.array_equal(prompt_maps(only_mask)[3] > 0, prev)


def test_head_on_the_shipped_backbone_stores_only_the_head(tmp_path):
    head = build_model("prompt-head", backbone_from="one-shot", width=16).eval()
    oneshot = load_checkpoint(
        Path(__file__).resolve().parents[1] / "src/recvos/weights/default_oneshot.pt.gz"
    )
    for k, v in oneshot.backbone.state_dict().items():
        assert torch.equal(head.backbone.state_dict()[k], v.float()), k
    sd = head.state_dict()
    assert sd and not any(k.startswith("backbone.") for k in sd)
    assert not any(p.requires_grad for p in head.backbone.parameters())
    save_model(head, tmp_path / "head.pt")
    again = load_checkpoint(tmp_path / "head.pt")
    x = torch.rand(1, 3, 64, 96)
    maps = torch.zeros(1, 4, 64, 96)
    maps[0, 0, 30:34, 40:44] = 1
    assert torch.equal(head(head.features(x), maps), again(again.features(x), maps))
    with pytest.raises(RecvosError, match="trained on the backbone of another one-shot default"):
        build_model("prompt-head", backbone_from="one-shot", backbone_sha256="0" * 64)
    with pytest.raises(RecvosError, match="interactive"):
        build_model("prompt-head", mode="one-shot")


def test_learned_method_keeps_the_frame_features_between_clicks():
    head = build_model("prompt-head", width=16).eval()
    calls = []
    head.backbone.register_forward_hook(lambda *a: calls.append(1))
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)
    a = mask_from_prompts(frame, points=[(10, 10)], method="learned", model=head)
    b = mask_from_prompts(
        frame, points=[(10, 10), (50, 40)], labels=[1, 0], method="learned", model=head, previous=a
    )
    assert a.shape == b.shape == (60, 80) and a.dtype == bool
    assert len(calls) == 1
    other = frame.copy()
    other[0, 0] ^= 1
    mask_from_prompts(other, box=(5, 5, 40, 40), method="learned", model=head)
    assert len(calls) == 2
    with pytest.raises(RecvosError, match="not a prompt head"):
        mask_from_prompts(
            frame, points=[(10, 10)], method="learned", model=build_model("rvos-st", hidden_size=16)
        )


def test_simulated_sessions_start_inside_the_object():
    gt = np.zeros((50, 70), bool)
    gt[10:30, 20:50] = True
    rng = np.random.default_rng(0)
    kinds = set()
    for _ in range(60):
        s = start_session(gt, PromptTrainConfig(box=0.4, mask=0.2, box_jitter=0.1), rng)
        if s.box is not None:
            kinds.add("box")
            x0, y0, x1, y1 = s.box
            assert 0 <= x0 < x1 <= 70 and 0 <= y0 < y1 <= 50
            assert abs(x0 - 20) <= 3 and abs(y1 - 30) <= 2
        elif s.previous is not None:
            kinds.add("mask")
            assert s.previous.shape == gt.shape and not np.array_equal(s.previous, gt)
        else:
            kinds.add("click")
            ((x, y),) = s.points
            assert gt[y, x] and s.labels == [True]
        maps = s.maps()
        assert maps.shape == (4, 50, 70)
    assert kinds == {"box", "mask", "click"}
    assert tight_box(gt) == (20, 10, 50, 30)


def test_recvos_train_picks_the_prompt_trainer_and_resumes_exactly(tmp_path):
    full = tiny_cfg(tmp_path / "full")
    assert trainer_class(full) is PromptTrainer
    assert trainer_class(load_config(CONFIGS / "smoke_synthetic.yaml")) is Trainer
    res = PromptTrainer(full).fit()
    assert len(res.losses) == 4 and all(np.isfinite(res.losses))
    crash = tiny_cfg(tmp_path / "crash")
    PromptTrainer(crash, stop_after=3).fit()
    PromptTrainer(crash, resume=True).fit()

    def losses(run):
        recs = [json.loads(x) for x in (run / "logs.jsonl").read_text().splitlines()]
        return {r["step"]: r["loss"] for r in recs if "loss" in r}

    assert losses(tmp_path / "full") == losses(tmp_path / "crash")
    assert [s for s, _ in CheckpointManager(tmp_path / "crash").list()] == [2, 4]


def test_validation_scores_through_the_user_function_and_keeps_the_best(tmp_path):
    cfg = tiny_cfg(
        tmp_path / "run", "val.every=2", "val.synthetic=1", "val.max_size=64", "prompts.val_frames=2"
    )
    res = PromptTrainer(cfg).fit()
    vals = [
        json.loads(x)["val"] for x in (tmp_path / "run" / "logs.jsonl").read_text().splitlines() if "val" in x
    ]
    assert len(vals) == 2
    for v in vals:
        assert set(v) == {"box_iou", "iou@1", "iou@3", "prompt_score"}
        assert 0.0 <= v["box_iou"] <= 1.0 and v["prompt_score"] == pytest.approx(
            (v["box_iou"] + v["iou@3"]) / 2
        )
    assert res.best_jf == pytest.approx(max(v["prompt_score"] for v in vals))
    best = CheckpointManager(tmp_path / "run").best_path
    frame = np.random.default_rng(1).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    mask = mask_from_prompts(frame, box=(10, 10, 50, 40), method="learned", model=best)
    assert mask.shape == (64, 96)


def test_cli_lists_the_registered_prompt_methods_default_first():
    from recvos.cli.options import PROMPT_METHODS
    from recvos.prompts.core import DEFAULT_METHOD, METHODS, _method

    _method(DEFAULT_METHOD)  # registers every method
    assert PROMPT_METHODS[0] == DEFAULT_METHOD and set(PROMPT_METHODS) == set(METHODS)


def test_quality_is_the_larger_processing_size():
    import argparse

    from recvos.cli.options import DEFAULT_SIZE, QUALITY_SIZE, add_model_options, check_model_options

    p = argparse.ArgumentParser()
    add_model_options(p)
    for argv, size in (([], DEFAULT_SIZE), (["--quality"], QUALITY_SIZE), (["--max-size", "320"], 320)):
        args = p.parse_args(argv)
        check_model_options(args)
        assert args.max_size == size


def test_backbone_digest_is_of_values_not_of_the_sign_of_zero():
    from recvos.models.state_dicts import tensor_digest

    a = {"w": torch.tensor([0.0, 1.5]), "n": torch.tensor(3)}
    b = {"w": torch.tensor([-0.0, 1.5]), "n": torch.tensor(3)}
    assert tensor_digest(a) == tensor_digest(b)
    assert tensor_digest(a) != tensor_digest({"w": torch.tensor([0.0, 1.25]), "n": torch.tensor(3)})
