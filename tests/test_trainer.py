"""Trainer: learning on synthetic clips, exact resume, checkpoints, NaN/full-disk/bad data, curriculum, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from recvos.errors import RecvosError
from recvos.models.base import RecurrentState, RecurrentVOS, StepOutput
from recvos.training.checkpoint import CheckpointManager, atomic_save, load_training_checkpoint
from recvos.training.config import load_config
from recvos.training.objective import ClipModel, loss_weights
from recvos.training.optim import WarmupCosine, backbone_param_names, param_groups
from recvos.training.trainer import Trainer

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def tiny_cfg(out: Path, *extra: str):
    """The smoke preset shrunk further: 48x48, hidden 16, 2 objects, T=3, no TensorBoard/progress/validation."""
    return load_config(
        CONFIGS / "smoke_synthetic.yaml",
        [
            f"out={out}",
            "train.progress=false",
            "train.tensorboard=false",
            "val.every=0",
            "data.size=[48, 48]",
            "data.synthetic.size=[48, 48]",
            "model.options.hidden_size=16",
            *extra,
        ],
    )


def logged_losses(run: Path) -> dict[int, float]:
    out = {}
    for line in (run / "logs.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "loss" in rec:
            out[rec["step"]] = rec["loss"]
    return out


@pytest.mark.slow
def test_smoke_training_reduces_loss(tmp_path):
    cfg = load_config(
        CONFIGS / "smoke_synthetic.yaml",
        [
            f"out={tmp_path / 'run'}",
            "train.progress=false",
            "train.tensorboard=false",
            "val.every=0",
            "augment.enabled=false",
            "curriculum.own_masks_from_step=null",
            "train.steps=40",
            "train.ckpt_every=40",
        ],
    )
    res = Trainer(cfg).fit()
    losses = res.losses
    assert len(losses) == 40 and all(np.isfinite(losses))
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.8 * first, (first, last)


def test_resume_after_interrupt_reproduces_losses(tmp_path):
    extra = [
        "train.steps=6",
        "train.ckpt_every=2",
        "train.keep_last=5",
        "optim.freeze_backbone_steps=3",
        "curriculum.own_masks_from_step=4",
        "optim.schedule=cosine",
        "optim.warmup_steps=2",
    ]
    full = tiny_cfg(tmp_path / "full", *extra)
    Trainer(full).fit()
    ref = logged_losses(tmp_path / "full")
    assert sorted(ref) == [1, 2, 3, 4, 5, 6]

    crash = tiny_cfg(tmp_path / "crash", *extra)
    Trainer(crash, stop_after=3).fit()  # dies after step 3: the last checkpoint is step 2
    mgr = CheckpointManager(tmp_path / "crash")
    assert [s for s, _ in mgr.list()] == [2]
    res = Trainer(crash, resume=True).fit()
    assert res.step == 6
    got = logged_losses(tmp_path / "crash")
    assert sorted(got) == [1, 2, 3, 4, 5, 6]  # the lost step 3 was logged again, not twice
    assert got == ref  # exactly the same losses on CPU
    # and the same final weights
    a = load_training_checkpoint(CheckpointManager(tmp_path / "full").path_for(6))["state_dict"]
    b = load_training_checkpoint(mgr.path_for(6))["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_contents_rotation_and_factory_load(tmp_path):
    from recvos.models.loading import load_checkpoint

    cfg = tiny_cfg(tmp_path / "run", "train.steps=3", "train.ckpt_every=1", "train.keep_last=2")
    Trainer(cfg).fit()
    mgr = CheckpointManager(tmp_path / "run", keep_last=2)
    assert [s for s, _ in mgr.list()] == [2, 3]
    ck = load_training_checkpoint(mgr.path_for(3))
    for key in (
        "format",
        "model_name",
        "model_config",
        "state_dict",
        "optimizer",
        "scheduler",
        "scaler",
        "step",
        "rng",
        "sampler",
        "config",
    ):
        assert key in ck, key
    assert ck["step"] == 3 and ck["sampler"]["micro_batch"] == 3 and ck["config"]["train"]["steps"] == 3
    model = load_checkpoint(mgr.path_for(3))
    assert model.name == "rvos-t"
    assert (tmp_path / "run" / "config.yaml").is_file()
    assert not list((tmp_path / "run" / "checkpoints").glob(".*tmp"))
    # a second run into the same folder must not silently mix with it
    with pytest.raises(RecvosError, match="--resume"):
        Trainer(tiny_cfg(tmp_path / "run", "train.steps=3")).fit()


def test_full_disk_keeps_previous_checkpoint(tmp_path, monkeypatch):
    import recvos.training.checkpoint as ckmod

    real_save = torch.save
    calls = {"n": 0}

    def failing_save(obj, f, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 1:
            return real_save(obj, f, *a, **kw)
        f.write(b"partial checkpoint bytes")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckmod.torch, "save", failing_save)
    cfg = tiny_cfg(tmp_path / "run", "train.steps=4", "train.ckpt_every=2")
    with pytest.raises(RecvosError, match="could not write checkpoint.*previous checkpoint is kept"):
        Trainer(cfg).fit()
    monkeypatch.setattr(ckmod.torch, "save", real_save)
    mgr = CheckpointManager(tmp_path / "run")
    assert [s for s, _ in mgr.list()] == [2]
    assert load_training_checkpoint(mgr.path_for(2))["step"] == 2
    assert not list(mgr.dir.glob(".*tmp"))


def test_atomic_save_replaces_only_on_success(tmp_path, monkeypatch):
    p = tmp_path / "x.pt"
    atomic_save({"a": torch.ones(2)}, p)

    def boom(obj, f, *a, **kw):
        f.write(b"xx")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("recvos.training.checkpoint.torch.save", boom)
    with pytest.raises(RecvosError, match="x.pt"):
        atomic_save({"a": torch.zeros(2)}, p)
    monkeypatch.undo()
    assert torch.equal(torch.load(p, weights_only=True)["a"], torch.ones(2))
    assert sorted(q.name for q in tmp_path.iterdir()) == ["x.pt"]


def test_nan_loss_stops_with_clear_message(tmp_path, monkeypatch):
    from recvos.losses import VOSLoss

    real = VOSLoss.forward
    calls = {"n": 0}

    def nan_on_third(self, *a, **kw):
        out = real(self, *a, **kw)
        calls["n"] += 1
        if calls["n"] == 3:
            out.total = out.total * float("nan")
            out.terms["total"] = float("nan")
        return out

    monkeypatch.setattr(VOSLoss, "forward", nan_on_third)
    cfg = tiny_cfg(tmp_path / "run", "train.steps=5", "train.ckpt_every=2")
    with pytest.raises(
        RecvosError, match=r"loss is nan at step 3.*last good checkpoint: .*step_00000002\.pt"
    ):
        Trainer(cfg).fit()
    mgr = CheckpointManager(tmp_path / "run")
    assert [s for s, _ in mgr.list()] == [2]
    assert load_training_checkpoint(mgr.path_for(2))["step"] == 2


def test_bad_training_data(tmp_path):
    from recvos.data.clips import ArrayVideo
    from recvos.data.masks import write_mask
    from recvos.data.synthetic import write_synthetic_dataset

    short = [ArrayVideo("s", np.zeros((2, 32, 32, 3), np.uint8), np.ones((2, 32, 32), np.int64))]
    with pytest.raises(RecvosError, match="lower data.num_frames"):
        Trainer(tiny_cfg(tmp_path / "a", "data.mix.real=1", "data.mix.synthetic=0"), train_videos=short).fit()
    root = write_synthetic_dataset(tmp_path / "data", num_videos=2, num_frames=4, size=(32, 32))
    for png in (root / "Annotations").rglob("*.png"):
        write_mask(png, np.zeros((32, 32), np.int64))
    cfg = tiny_cfg(
        tmp_path / "b",
        "data.kind=folder",
        f"data.root={root}",
        "data.split=null",
        "data.mix.real=1",
        "data.mix.synthetic=0",
    )
    with pytest.raises(RecvosError, match="no sequence has annotated objects"):
        Trainer(cfg).fit()
    with pytest.raises(RecvosError, match="data.root"):
        Trainer(tiny_cfg(tmp_path / "c", "data.kind=folder", "data.mix.real=1")).fit()


class _Recorder(RecurrentVOS):
    """A stub one-shot model: logits = 10 * (2 * prev - 1); records the prev masks it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))
        self.seen: list[torch.Tensor] = []

    def init_state(self, frame, masks):
        return RecurrentState(num_objects=masks.shape[1])

    def step(self, frame, state, prev_masks):
        self.seen.append(prev_masks.detach().clone())
        logits = self.w * 10 * (2 * prev_masks - 1) - 3.0
        return StepOutput(logits=logits, objectness=torch.ones(logits.shape[:2]), state=state)


def test_unroll_teacher_forcing_and_own_masks():
    B, T, n_obj = 1, 4, 2
    masks = torch.zeros(B, T, n_obj, 4, 4)
    masks[:, :, 0, :2] = 1
    masks[:, 2:, 1, 2:] = 1  # object 1 appears at frame 2
    valid = torch.tensor([[[1, 0], [1, 0], [1, 1], [1, 1]]], dtype=torch.bool)
    frames = torch.rand(B, T, 3, 4, 4)
    m = _Recorder()
    ClipModel(m)(frames, masks, valid, teacher=True)
    assert torch.equal(m.seen[0], masks[:, 0] * torch.tensor([1.0, 0.0])[None, :, None, None])
    for t in range(1, T):  # teacher forcing: ground truth where valid
        assert torch.equal(m.seen[t][:, 0], masks[:, t - 1, 0])
    assert not m.seen[1][:, 1].any()  # nothing for an object that has not appeared yet
    assert torch.equal(
        m.seen[2][:, 1], masks[:, 2, 1]
    )  # it enters with its own frame's mask, as a user prompt
    assert torch.equal(m.seen[3][:, 1], masks[:, 2, 1])  # then is fed its ground truth
    m2 = _Recorder()
    logits, _ = ClipModel(m2)(frames, masks, valid, teacher=False)
    own = torch.sigmoid(logits)
    assert torch.allclose(m2.seen[2][:, 0], own[:, 1, 0])  # own prediction fed back
    assert torch.equal(m2.seen[3][:, 1], masks[:, 2, 1])  # a newly appearing object is introduced with its GT
    assert torch.allclose(m2.seen[3][:, 0], own[:, 2, 0])
    # loss weights: one-shot skips each object's first valid frame (its mask was the input)
    w = loss_weights(valid, torch.tensor([[True, True]]), zero_shot=False, first_frame=False)
    assert w[0].tolist() == [[False, False], [True, False], [True, False], [True, True]]


def test_schedule_and_param_groups():
    s = WarmupCosine(warmup=4, total=14, min_ratio=0.1)
    assert s(0) == pytest.approx(0.25) and s(3) == pytest.approx(1.0)
    assert s(4) == pytest.approx(1.0) and s(9) == pytest.approx(0.55) and s(14) == pytest.approx(0.1)
    assert WarmupCosine(0, 10, schedule="constant")(7) == 1.0
    from recvos.models.factory import build_model

    model = build_model("rvos-t", backbone="efficientnet_lite0", hidden_size=16)
    groups = param_groups(model, lr=1e-3, backbone_lr=1e-5, weight_decay=0.1)
    by = {g["name"]: g for g in groups}
    assert by["backbone"]["lr"] == 1e-5 and by["head"]["lr"] == 1e-3
    assert by["head_nodecay"]["weight_decay"] == 0.0
    n = sum(p.numel() for g in groups for p in g["params"])
    assert n == sum(p.numel() for p in model.parameters())


def test_zero_shot_and_s2s_variable_length(tmp_path):
    res = Trainer(
        tiny_cfg(
            tmp_path / "zs",
            "model.name=rvos-s",
            "model.options.mode=zero-shot",
            "model.options.max_objects=3",
            "train.steps=2",
        )
    ).fit()
    assert len(res.losses) == 2 and all(np.isfinite(res.losses))
    recs = [json.loads(x) for x in (tmp_path / "zs" / "logs.jsonl").read_text().splitlines()]
    assert "objectness" in recs[0]
    cfg = tiny_cfg(
        tmp_path / "s2s",
        "model.name=s2s",
        "model.options={hidden_size: 16, decoder_dims: [8, 8, 8, 8, 8]}",
        "data.num_frames=2",
        "data.num_frames_max=4",
        "data.max_objects=1",
        "loss.bce=1",
        "train.steps=3",
    )
    res = Trainer(cfg).fit()
    assert len(res.losses) == 3 and all(np.isfinite(res.losses))
    with pytest.raises(RecvosError, match="zero-shot"):
        Trainer(tiny_cfg(tmp_path / "bad", "model.name=s2s", "model.options={mode: zero-shot}")).fit()


def test_cli_train_and_resume(tmp_path, capsys):
    from recvos.cli.main import main

    run = tmp_path / "run"
    common = [
        "train.progress=false",
        "train.tensorboard=false",
        "val.every=0",
        "data.size=[48, 48]",
        "data.synthetic.size=[48, 48]",
        "model.options.hidden_size=16",
        "train.ckpt_every=1",
    ]
    assert (
        main(
            [
                "train",
                "--config",
                str(CONFIGS / "smoke_synthetic.yaml"),
                "--out",
                str(run),
                "train.steps=1",
                *common,
            ]
        )
        == 0
    )
    assert main(["train", "--resume", str(run), "train.steps=2"]) == 0
    assert sorted(logged_losses(run)) == [1, 2]
    assert main(["train", "--config", str(CONFIGS / "smoke_synthetic.yaml"), "train.stepz=2"]) == 2
    assert "train.steps" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "nothing")]) == 2


def test_validation_logs_jf_and_keeps_best(tmp_path):
    cfg = tiny_cfg(
        tmp_path / "run",
        "train.steps=4",
        "train.ckpt_every=4",
        "train.keep_last=1",
        "val.every=2",
        "val.synthetic=2",
        "val.max_frames=4",
        "val.max_size=48",
        "train.tensorboard=true",
        "train.image_every=2",
    )
    res = Trainer(cfg).fit()
    vals = [json.loads(x) for x in (tmp_path / "run" / "logs.jsonl").read_text().splitlines()]
    vals = [r for r in vals if "val" in r]
    assert [r["step"] for r in vals] == [2, 4]
    jf = [r["val"]["J&F-Mean"] for r in vals]
    assert res.best_jf == pytest.approx(max(jf))
    best = load_training_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    assert best["step"] == [2, 4][int(np.argmax(jf))] and best["best_jf"] == pytest.approx(max(jf))
    # keep_last=1 rotated step 2 away; best.pt survives on its own
    assert [s for s, _ in CheckpointManager(tmp_path / "run").list()] == [4]
    assert list((tmp_path / "run" / "tb").glob("events.*"))
    # the logged score is what the user-facing path gives with the saved weights
    from recvos.models.loading import load_checkpoint
    from recvos.training.data import val_videos
    from recvos.training.validation import validate

    again = validate(
        load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt"),
        val_videos(cfg),
        max_size=48,
        max_frames=4,
        device=torch.device("cpu"),
    )
    assert again["J&F-Mean"] == pytest.approx(max(jf), abs=1e-6)


def test_validate_perfect_model_scores_one():
    """Segmenter + evaluate_arrays: a model that copies its previous mask is perfect on a still video."""
    from recvos.data.clips import ArrayVideo
    from recvos.training.validation import validate

    masks = np.zeros((5, 16, 16), np.int64)
    masks[:, 2:8, 2:8] = 1
    masks[:, 9:14, 9:14] = 2
    video = ArrayVideo("still", np.zeros((5, 16, 16, 3), np.uint8), masks)
    metrics = validate(_Recorder(), [video], max_size=16, max_frames=5, device=torch.device("cpu"))
    assert metrics["J&F-Mean"] == pytest.approx(1.0)


@pytest.mark.shared
@pytest.mark.parametrize("preset", ["rvos_oneshot_davis2016.yaml", "rvos_zeroshot_davis2016.yaml"])
def test_davis2016_presets_run(davis2016_root, tmp_path, preset):
    """The DAVIS presets train (composite clips from real data) and validate on DAVIS-2016 val, shrunk."""
    cfg = load_config(
        CONFIGS / preset,
        [
            f"out={tmp_path / 'run'}",
            f"data.root={davis2016_root}",
            f"val.root={davis2016_root}",
            "train.progress=false",
            "train.tensorboard=false",
            "model.options.backbone_weights=null",
            "model.options.hidden_size=16",
            "data.size=[64, 112]",
            "data.num_frames=3",
            "data.num_workers=0",
            "train.batch_size=1",
            "train.steps=2",
            "val.every=2",
            "val.max_sequences=1",
            "val.max_frames=4",
            "val.max_size=64",
        ],
    )
    res = Trainer(cfg).fit()
    logged = [
        json.loads(x)["val"]["J&F-Mean"]
        for x in (tmp_path / "run" / "logs.jsonl").read_text().splitlines()
        if "val" in json.loads(x)
    ]
    assert res.step == 2 and res.best_jf == pytest.approx(logged[-1])


@pytest.mark.slow
def test_kill9_then_resume_matches_uninterrupted(tmp_path):
    """A real `recvos train` process killed with SIGKILL mid-run, resumed with --resume: same losses."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from recvos.cli.main import main

    args = [
        "train.progress=false",
        "train.tensorboard=false",
        "val.every=0",
        "data.size=[48, 48]",
        "data.synthetic.size=[48, 48]",
        "model.options.hidden_size=16",
        "train.steps=16",
        "train.ckpt_every=2",
        "train.keep_last=2",
    ]
    ref = tmp_path / "ref"
    Trainer(load_config(CONFIGS / "smoke_synthetic.yaml", [f"out={ref}", *args])).fit()
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "recvos",
            "train",
            "--config",
            str(CONFIGS / "smoke_synthetic.yaml"),
            "--out",
            str(run),
            *args,
        ],
        env={**os.environ, "OMP_NUM_THREADS": "2"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    logs = run / "logs.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if logs.is_file() and len(logs.read_text().splitlines()) >= 5:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = len(logs.read_text().splitlines())
    assert killed_at < 16
    saved = [s for s, _ in CheckpointManager(run).list()]
    assert saved and killed_at - saved[-1] <= 2  # at most ckpt_every steps lost
    assert main(["train", "--resume", str(run)]) == 0
    assert logged_losses(run) == logged_losses(ref)


def test_backbone_frozen_for_first_steps(tmp_path):
    from recvos.models.factory import build_model

    model = build_model("rvos-t", backbone="efficientnet_lite0", hidden_size=16)
    names = backbone_param_names(model)
    assert names and all(n.startswith("backbone.") for n in names)
    init = {k: v.detach().clone() for k, v in model.named_parameters()}
    cfg = tiny_cfg(
        tmp_path / "run",
        "train.steps=2",
        "train.ckpt_every=1",
        "optim.freeze_backbone_steps=1",
        "optim.weight_decay=0.1",
    )
    Trainer(cfg, model=model).fit()
    mgr = CheckpointManager(tmp_path / "run")
    s1 = load_training_checkpoint(mgr.path_for(1))["state_dict"]
    s2 = load_training_checkpoint(mgr.path_for(2))["state_dict"]
    assert all(torch.equal(s1[n], init[n]) for n in names)  # step 1: frozen (no update, no weight decay)
    assert not all(torch.equal(s2[n], init[n]) for n in names)  # step 2: trained
    head = [n for n in init if n not in names]
    assert not all(torch.equal(s1[n], init[n]) for n in head)


def test_stop_at_ends_early_on_the_full_schedule_and_init_from_warm_starts(tmp_path):
    """train.stop_at ends the run (with a checkpoint) while the lr schedule still spans train.steps;
    model.init_from starts a new run, here with the first-frame reference added, from those weights."""
    full = tiny_cfg(tmp_path / "full", "train.steps=4", "train.ckpt_every=100")
    Trainer(full).fit()
    short = tiny_cfg(tmp_path / "short", "train.steps=4", "train.stop_at=2", "train.ckpt_every=100")
    res = Trainer(short).fit()
    assert res.step == 2
    lrs = {}
    for run in ("full", "short"):
        for line in (tmp_path / run / "logs.jsonl").read_text().splitlines():
            rec = json.loads(line)
            if "lr" in rec:
                lrs[run, rec["step"]] = rec["lr"]
    assert sorted(s for r, s in lrs if r == "short") == [1, 2]
    assert lrs["short", 2] == lrs["full", 2]
    step, ckpt = CheckpointManager(tmp_path / "short", 3).list()[-1]
    assert step == 2

    warm = tiny_cfg(
        tmp_path / "warm",
        "train.steps=1",
        f"model.init_from={ckpt}",
        "model.options.reference=true",
        "model.options.ref_dim=4",
        "optim.lr=0",
        "optim.backbone_lr=0",
    )  # lr 0: weights as loaded
    trainer = Trainer(warm)
    trainer.fit()
    src = load_training_checkpoint(ckpt)["state_dict"]
    own = trainer.model.state_dict()
    assert torch.equal(own["skips.0.0.weight"], src["skips.0.0.weight"])
    w = own["cells.0.conv.weight"]  # RVOS-T level 0 input: [mask, match fg, match bg, h]
    assert w.shape[1] == src["cells.0.conv.weight"].shape[1] + 2 and not w[:, 1:3].any()

    bad = tiny_cfg(
        tmp_path / "bad", "train.steps=1", f"model.init_from={ckpt}", "model.options.hidden_size=8"
    )
    with pytest.raises(RecvosError, match="cannot warm-start"):
        Trainer(bad).fit()


def test_weight_average_is_the_model_and_resumes_exactly(tmp_path):
    """train.ema: checkpoints offer the average as the model (state_dict = decay * w1 + (1 - decay) * w2 after
    two steps), keep the raw weights for resuming, and a resumed run gives the same weights and losses."""
    from recvos.models.loading import load_checkpoint

    extra = ["train.steps=3", "train.ckpt_every=1", "train.keep_last=5", "train.ema=0.75"]
    Trainer(tiny_cfg(tmp_path / "full", *extra)).fit()
    mgr = CheckpointManager(tmp_path / "full", keep_last=5)
    c1, c2 = (load_training_checkpoint(mgr.path_for(s)) for s in (1, 2))
    for k, v in c2["state_dict"].items():
        if v.is_floating_point():
            torch.testing.assert_close(v, 0.75 * c1["train_state_dict"][k] + 0.25 * c2["train_state_dict"][k])
    assert any(not torch.equal(c2["state_dict"][k], c2["train_state_dict"][k]) for k in c2["state_dict"])
    model = load_checkpoint(mgr.path_for(2))
    assert all(torch.equal(model.state_dict()[k], c2["state_dict"][k].float()) for k in c2["state_dict"])
    Trainer(tiny_cfg(tmp_path / "crash", *extra), stop_after=2).fit()
    Trainer(tiny_cfg(tmp_path / "crash", *extra), resume=True).fit()
    assert logged_losses(tmp_path / "crash") == logged_losses(tmp_path / "full")
    a = load_training_checkpoint(mgr.path_for(3))
    b = load_training_checkpoint(CheckpointManager(tmp_path / "crash").path_for(3))
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    with pytest.raises(RecvosError, match="no weight average"):
        Trainer(tiny_cfg(tmp_path / "plain", "train.steps=2", "train.ckpt_every=1")).fit()
        Trainer(tiny_cfg(tmp_path / "plain", "train.steps=3", "train.ema=0.5"), resume=True).fit()


def test_resume_with_a_changed_model_shape_is_one_line(tmp_path):
    """A resumed run whose overrides change the model's shape names the checkpoint and the fix."""
    cfg = tiny_cfg(tmp_path / "run", "train.steps=2", "train.ckpt_every=2")
    Trainer(cfg).fit()
    changed = tiny_cfg(tmp_path / "run", "train.steps=4", "model.options.hidden_size=8")
    with pytest.raises(RecvosError) as e:
        Trainer(changed, resume=True).fit()
    msg = str(e.value)
    assert "step_00000002.pt does not fit the configured model" in msg and "config.yaml" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("local", [{}, {"local_radius": 2, "local_dim": 4}, {"value_dim": 4}])
def test_channels_last_computes_what_nchw_computes(local):
    """``train.channels_last``: weights, frames and cached features channels-last give the NCHW results (with
    the local f8 matching too, whose readout takes strided views of its keys)."""
    import copy

    from recvos.models.factory import build_model

    torch.manual_seed(0)
    model = build_model("rvos-st", hidden_size=16, reference=True, memory=2, **local).eval()
    fast = copy.deepcopy(model).to(memory_format=torch.channels_last)
    assert fast.skips[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    B, T, H, W = 2, 3, 64, 96
    frames = torch.rand(B, T, 3, H, W)
    masks = (torch.rand(B, T, 2, H, W) > 0.6).float()
    valid = torch.ones(B, T, 2, dtype=torch.bool)
    with torch.no_grad():
        feats = [
            torch.stack(f, 1) for f in zip(*(model.backbone(frames[:, t]) for t in range(T)), strict=True)
        ]
        a, _ = ClipModel(model)(frames, masks, valid, True)
        seen = []
        hook = fast.backbone.register_forward_pre_hook(
            lambda _, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last))
        )
        b, _ = ClipModel(fast, channels_last=True)(frames, masks, valid, True)
        hook.remove()
        assert seen and all(seen)  # every frame reaches the backbone channels-last
        c, _ = ClipModel(model)(None, masks, valid, True, feats)
        d, _ = ClipModel(fast, channels_last=True)(None, masks, valid, True, feats)
    assert (a - b).abs().max() < 1e-4 and (c - d).abs().max() < 1e-4


def test_channels_last_training_matches_nchw(tmp_path):
    """The trainer converts the model when ``train.channels_last`` is on (the default) and trains as NCHW does."""
    losses, trainers = {}, {}
    for cl in (True, False):
        cfg = tiny_cfg(tmp_path / str(cl), "train.steps=3", "train.ckpt_every=3", f"train.channels_last={cl}")
        trainers[cl] = Trainer(cfg)
        trainers[cl].fit()
        losses[cl] = logged_losses(tmp_path / str(cl))
    conv = next(m for m in trainers[True].model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    conv = next(m for m in trainers[False].model.modules() if isinstance(m, torch.nn.Conv2d))
    assert not conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert sorted(losses[True]) == sorted(losses[False]) == [1, 2, 3]
    for step, loss in losses[False].items():
        assert losses[True][step] == pytest.approx(loss, rel=1e-3, abs=1e-4)
