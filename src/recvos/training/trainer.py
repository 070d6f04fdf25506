"""The training loop: one code path for CPU, one GPU and ``torchrun`` (DDP), resumable exactly.

``Trainer(cfg).fit()`` builds the model (``recvos.models.factory.build_model``), the clip dataset and sampler
(:mod:`recvos.data.clips`), AdamW with a separate backbone learning rate and a warmup/cosine LambdaLR, and
trains for ``cfg.train.steps`` optimizer steps. Only rank 0 logs (logs.jsonl, TensorBoard, tqdm), validates
and saves. Run directory::

    <out>/config.yaml        the resolved config
    <out>/logs.jsonl         one JSON line per optimizer step (losses of rank 0, lr, clips/s)
    <out>/checkpoints/       step_XXXXXXXX.pt (last K), best.pt (best validation J&F)
    <out>/tb/                TensorBoard events

Resuming (``resume=True``) loads the newest readable checkpoint of the run directory and continues from
its step: model, optimizer, scheduler, scaler, RNG states and the sampler position are restored, and since a
clip is a pure function of (seed, clip id), a CPU run reproduces the losses of an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from recvos.data.clips import VOID_ID, ArrayVideo, ClipDataset, ClipSampler, load_window, seed_worker
from recvos.data.transforms import ClipTransform, resize_clip
from recvos.errors import RecvosError
from recvos.losses import VOSLoss
from recvos.models.base import RecurrentVOS
from recvos.training.checkpoint import CheckpointManager, rng_state, set_rng_state
from recvos.training.config import Config, config_from_dict, config_to_dict, save_config
from recvos.training.distributed import (
    all_gather_objects,
    any_true,
    barrier,
    cleanup_distributed,
    init_distributed,
)

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------
# the training unroll
# ---------------------------------------------------------------------------------------------------------
def first_valid(valid: torch.Tensor) -> torch.Tensor:
    """valid [B, T, O] bool -> intro [B, T, O]: True at the first valid frame of each object."""
    prev = torch.zeros_like(valid[:, :1])
    return valid & ~torch.cat([prev, valid[:, :-1]], 1)


class ClipUnroll(nn.Module):
    """Wraps a :class:`RecurrentVOS` so DDP sees one ``forward`` per clip.

    One-shot: frame 0's masks of the objects valid there are the first masks; an object that appears
    mid-clip is introduced with its ground truth at its first valid frame (as a user would add it at
    inference). With ``teacher=True`` the next frame's previous masks are the ground truth where it is known
    (annotated, appeared), else the model's own sigmoid output; with ``teacher=False`` (Mask-ST+) always the
    model's own output (gradients flow through it), except for newly introduced objects.
    Zero-shot: ``model.forward_clip(frames, None)`` (the model feeds back its own predictions).
    """

    def __init__(self, model: RecurrentVOS) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, frames: torch.Tensor, masks: torch.Tensor, valid: torch.Tensor, zero_shot: bool, teacher: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """frames [B,T,3,H,W], masks [B,T,O,H,W], valid [B,T,O] -> (logits [B,T,O',H,W], objectness [B,T,O'])."""
        m = self.model
        if zero_shot:
            out = m.forward_clip(frames, None, teacher_masks=None, include_first=True)
            return out.logits, out.objectness
        B, T = frames.shape[:2]
        vmask = valid[..., None, None].to(masks.dtype)
        intro = first_valid(valid)[..., None, None]
        first = masks[:, 0] * vmask[:, 0]
        state = m.init_state(frames[:, 0], first)
        prev = first
        logits, objectness = [], []
        for t in range(T):
            out = m.step(frames[:, t], state, prev if m.uses_prev_masks else None)
            state = out.state
            logits.append(out.logits)
            objectness.append(out.objectness)
            own = torch.sigmoid(out.logits).to(masks.dtype)
            known = vmask[:, t].bool() if teacher else intro[:, t]
            prev = torch.where(known, masks[:, t], own)
        return torch.stack(logits, 1), torch.stack(objectness, 1)


def loss_weights(valid: torch.Tensor, present: torch.Tensor, zero_shot: bool, first_frame: bool) -> torch.Tensor:
    """Where the mask loss applies: valid [B,T,O], present [B,O] -> bool [B,T,O].

    One-shot without ``first_frame``: not on an object's first valid frame (its mask is the model's input).
    """
    w = valid & present[:, None, :]
    if not zero_shot and not first_frame:
        w = w & ~first_valid(w)
    return w


# ---------------------------------------------------------------------------------------------------------
# schedule, parameter groups
# ---------------------------------------------------------------------------------------------------------
class WarmupCosine:
    """LambdaLR factor: linear warmup to 1 over ``warmup`` steps, then cosine to ``min_ratio`` at ``total``."""

    def __init__(self, warmup: int, total: int, min_ratio: float = 0.01, schedule: str = "cosine") -> None:
        self.warmup, self.total, self.min_ratio, self.schedule = warmup, total, min_ratio, schedule

    def __call__(self, step: int) -> float:
        if self.warmup > 0 and step < self.warmup:
            return (step + 1) / self.warmup
        if self.schedule == "constant":
            return 1.0
        span = max(1, self.total - self.warmup)
        p = min(1.0, (step - self.warmup) / span)
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * p))


def backbone_param_names(model: nn.Module) -> set[str]:
    """Names of the parameters inside the model's feature extractors (``recvos.models.backbones.Backbone``
    submodules: RVOS's ``backbone``, S2S's ``encoder`` and ``initializer``), or under a module named
    ``backbone`` for other models."""
    from recvos.models.backbones import Backbone

    names: set[str] = set()
    for mname, mod in model.named_modules():
        if isinstance(mod, Backbone):
            names.update(f"{mname}.{pn}" if mname else pn for pn, _ in mod.named_parameters())
    if not names:
        names = {n for n, _ in model.named_parameters() if "backbone" in n.split(".")}
    return names


def param_groups(model: nn.Module, lr: float, backbone_lr: float | None, weight_decay: float) -> list[dict]:
    """AdamW groups: backbone / rest, each split into decayed weights and undecayed biases/norms."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    backbone = backbone_param_names(model)
    for name, p in model.named_parameters():
        key = (name in backbone, p.ndim <= 1)
        groups.setdefault(key, []).append(p)
    out = []
    for (bb, nodecay), params in sorted(groups.items()):
        out.append({
            "params": params,
            "lr": (backbone_lr if backbone_lr is not None else lr) if bb else lr,
            "weight_decay": 0.0 if nodecay else weight_decay,
            "name": ("backbone" if bb else "head") + ("_nodecay" if nodecay else ""),
        })
    return out


# ---------------------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------------------
def _ids_from_probs(probs: torch.Tensor, object_ids: Sequence[int], keep: torch.Tensor | None = None) -> np.ndarray:
    """probs [O, H, W] -> int id map [H, W]: argmax object where its probability >= 0.5, else background."""
    if keep is not None:
        probs = probs * keep[:, None, None]
    val, idx = probs.max(0)
    ids = torch.as_tensor(list(object_ids), device=probs.device)[idx]
    return torch.where(val >= 0.5, ids, torch.zeros_like(ids)).cpu().numpy().astype(np.int64)


@torch.no_grad()
def predict_sequence(
    model: RecurrentVOS, frames: torch.Tensor, gt: np.ndarray, annotated: np.ndarray, zero_shot: bool
) -> np.ndarray:
    """Segment one sequence for validation: frames [T,3,H,W] in [0,1], gt int [T,H,W] -> pred int [T,H,W].

    One-shot: objects of the first annotated frame are given there; objects appearing later are given at
    their first annotated frame (the semi-supervised protocol). Zero-shot: slots with objectness >= 0.5.
    """
    T = frames.shape[0]
    dev = frames.device
    if zero_shot:
        state = model.init_state(frames[:1], None)
        n_slots = state.num_objects
        prev = frames.new_zeros(1, n_slots, *frames.shape[-2:]) if model.uses_prev_masks else None
        preds = []
        for t in range(T):
            out = model.step(frames[t : t + 1], state, prev)
            state = out.state
            probs = torch.sigmoid(out.logits.float())[0]
            prev = probs[None] if model.uses_prev_masks else None
            preds.append(_ids_from_probs(probs, range(1, n_slots + 1), (out.objectness[0].float() >= 0.5).float()))
        return np.stack(preds)
    object_ids = [int(i) for i in np.unique(gt[annotated]) if i not in (0, VOID_ID)]
    if not object_ids:
        return np.zeros_like(gt)
    gt_t = torch.from_numpy(gt).to(dev)
    onehot = torch.stack([(gt_t == o) for o in object_ids], 1).float()  # [T, O, H, W]
    visible = onehot.flatten(2).any(-1) & torch.from_numpy(annotated).to(dev)[:, None]  # [T, O]
    appeared = visible.cumsum(0) > 0
    intro = appeared & ~torch.cat([torch.zeros_like(appeared[:1]), appeared[:-1]], 0)
    first = onehot[0] * intro[0, :, None, None]
    state = model.init_state(frames[:1], first[None])
    prev = first[None]
    preds = []
    for t in range(T):
        out = model.step(frames[t : t + 1], state, prev if model.uses_prev_masks else None)
        state = out.state
        probs = torch.sigmoid(out.logits.float())[0]
        probs = torch.where(intro[t, :, None, None], onehot[t], probs * appeared[t, :, None, None])
        prev = probs[None]
        preds.append(_ids_from_probs(probs, object_ids))
    return np.stack(preds)


def validate(
    model: RecurrentVOS,
    videos: Sequence[Any],
    *,
    zero_shot: bool,
    size: Sequence[int],
    max_frames: int,
    device: torch.device,
) -> dict[str, float]:
    """J&F of ``model`` on the first ``max_frames`` frames of each video, at ``size``, with recvos.evaluation."""
    from recvos.evaluation.protocols import evaluate_arrays

    was_training = model.training
    model.eval()
    gts, preds = {}, {}
    try:
        for v in videos:
            n = min(len(v.frame_paths), max_frames)
            frames, ids, annotated = load_window(v, list(range(n)))
            frames, ids = resize_clip(frames, ids, (int(size[0]), int(size[1])))
            ids[ids == VOID_ID] = 0
            if not annotated.all():  # evaluate on annotated frames only
                keep = np.flatnonzero(annotated)
            else:
                keep = np.arange(n)
            x = torch.from_numpy(frames).to(device).permute(0, 3, 1, 2).float().div_(255)
            pred = predict_sequence(model, x, ids, annotated, zero_shot)
            gts[v.name] = ids[keep]
            preds[v.name] = pred[keep]
    finally:
        model.train(was_training)
    res = evaluate_arrays(gts, preds, task="unsupervised" if zero_shot else "semi-supervised")
    return {k: float(v) for k, v in res.global_metrics.items()}


# ---------------------------------------------------------------------------------------------------------
# the trainer
# ---------------------------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    run_dir: Path
    step: int
    losses: list[float] = field(default_factory=list)  # total loss per step of this invocation (rank 0)
    best_jf: float | None = None
    last_checkpoint: Path | None = None


def _overlay(frames: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """frames [T,3,H,W] in [0,1], probs [T,O,H,W] -> [3, H, T*W] image with coloured masks."""
    colours = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]], dtype=frames.dtype)
    img = frames.clone()
    for o in range(probs.shape[1]):
        a = (probs[:, o : o + 1] >= 0.5).to(frames.dtype) * 0.5
        img = img * (1 - a) + colours[o % len(colours)][None, :, None, None] * a
    return torch.cat(list(img), dim=-1).clamp(0, 1)


class Trainer:
    """Trains one run. ``model``/``train_videos``/``val_videos`` override what ``cfg`` would build (tests)."""

    def __init__(
        self,
        cfg: Config,
        *,
        resume: bool = False,
        model: RecurrentVOS | None = None,
        train_videos: Sequence[Any] | None = None,
        val_videos: Sequence[Any] | None = None,
        stop_after: int | None = None,
    ) -> None:
        self.cfg = cfg
        self.run_dir = Path(cfg.out)
        self.resume = resume
        self._model_arg = model
        self._train_videos = train_videos
        self._val_videos = val_videos
        #: stop (as if killed) after this many steps of this invocation, without the final checkpoint (tests)
        self.stop_after = stop_after

    # -- building -----------------------------------------------------------------------------------------
    def _build_model(self) -> RecurrentVOS:
        if self._model_arg is not None:
            return self._model_arg
        from recvos.models.factory import build_model

        options = dict(self.cfg.model.options)
        if self.cfg.model.name.startswith("rvos") and "mode" not in options:
            options["mode"] = self.cfg.train.task  # RVOS is built for one task
        return build_model(self.cfg.model.name, **options)

    def _open(
        self, kind: str | None, root: str | None, split: str | None, what: str,
        sequences: list[str] | None = None, exclude: list[str] | None = None,
    ) -> list[Any] | None:
        if kind is None:
            return None
        if root is None:
            raise RecvosError(f"{what}.kind={kind} needs {what}.root (the dataset folder)")
        from recvos.data.datasets import open_dataset

        dataset = open_dataset(kind, root, split)
        names = list(dataset.names)
        unknown = sorted(set(sequences or []) - set(names)) + sorted(set(exclude or []) - set(names))
        if unknown:
            raise RecvosError(
                f"{what}.sequences/{what}.exclude name {unknown} not in {kind} split {split!r} at {root}; "
                "fix the names or the split"
            )
        keep = [n for n in names if (not sequences or n in sequences) and n not in (exclude or [])]
        if not keep:
            raise RecvosError(f"{what}: no sequences left after {what}.sequences/{what}.exclude; fix those lists")
        return [dataset[n] for n in keep]

    def _train_dataset(self) -> ClipDataset:
        c = self.cfg
        d = c.data
        videos = self._train_videos if self._train_videos is not None else self._open(d.kind, d.root, d.split, "data", d.sequences, d.exclude)
        a = c.augment
        transform = ClipTransform(
            d.size, enabled=a.enabled, scale=a.scale, hflip=a.hflip, rotate=a.rotate, shear=a.shear,
            translate=a.translate, brightness=a.brightness, contrast=a.contrast, saturation=a.saturation,
            hue=a.hue, jitter_translate=a.jitter_translate, jitter_rotate=a.jitter_rotate, jitter_scale=a.jitter_scale,
        )
        return ClipDataset(
            videos, size=d.size, num_frames=d.num_frames, num_frames_max=d.num_frames_max, max_stride=d.max_stride,
            max_objects=d.max_objects, frames=d.frames, transform=transform,
            mix={"real": d.mix.real, "composite": d.mix.composite, "synthetic": d.mix.synthetic},
            synthetic={"pool": d.synthetic.pool, "num_frames": d.synthetic.num_frames, "size": d.synthetic.size,
                       "num_objects": d.synthetic.num_objects},
            composite={"min_pasted": d.composite.min_pasted, "max_pasted": d.composite.max_pasted,
                       "scale": d.composite.scale, "max_offset": d.composite.max_offset},
            length=d.clips_per_epoch, seed=c.train.seed, source_name=str(d.root or "synthetic clips"),
        )

    def _val_videos_list(self) -> list[Any]:
        v = self.cfg.val
        if self._val_videos is not None:
            return list(self._val_videos)[: v.max_sequences]
        videos = self._open(v.kind, v.root, v.split, "val", v.sequences, v.exclude) or []
        if not videos and v.synthetic > 0:
            from recvos.data.synthetic import synthetic_clip

            s = self.cfg.data.synthetic
            for k in range(v.synthetic):
                seed = int(np.random.SeedSequence([self.cfg.train.seed, 15485863, k]).generate_state(1)[0])
                clip = synthetic_clip(seed, num_frames=v.max_frames, size=tuple(s.size), num_objects=s.num_objects)
                videos.append(ArrayVideo(f"val{k:03d}", np.asarray(clip.frames), np.asarray(clip.masks)))
        return videos[: v.max_sequences]

    # -- state ------------------------------------------------------------------------------------------
    def _set_backbone_trainable(self, trainable: bool) -> None:
        """Freeze the backbone, or restore the requires_grad flags it was built with (frozen stages stay frozen)."""
        if not hasattr(self, "_built_requires_grad"):
            self._built_requires_grad = {n: p.requires_grad for n, p in self.model.named_parameters()}
            self._backbone_names = backbone_param_names(self.model)
        for name, p in self.model.named_parameters():
            if name in self._backbone_names:
                p.requires_grad_(trainable and self._built_requires_grad[name])
        self._backbone_frozen = not trainable
        self._wrap()

    def _wrap(self) -> None:
        unroll = ClipUnroll(self.model)
        if self.dist.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.dist.device.index] if self.dist.device.type == "cuda" else None
            self.net = DDP(unroll, device_ids=ids, find_unused_parameters=self.cfg.train.find_unused_parameters)
        else:
            self.net = unroll

    def _payload(self, step: int) -> dict:
        from recvos.models.factory import model_to_checkpoint

        ck = dict(model_to_checkpoint(self.model))
        ck["state_dict"] = {k: v.detach().cpu() for k, v in ck["state_dict"].items()}
        ck.update(
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict(),
            step=step,
            rng=self._gathered_rng,
            sampler={"micro_batch": step * self.cfg.train.accumulate, "world_size": self.dist.world_size},
            config=config_to_dict(self.cfg),
            best_jf=self.best_jf,
            world_size=self.dist.world_size,
        )
        return ck

    def _save(self, step: int) -> Path | None:
        """All ranks gather RNG states; rank 0 writes. Returns the path on rank 0."""
        self._gathered_rng = all_gather_objects(rng_state(), self.dist)
        path = None
        if self.dist.is_main:
            path = self.ckpts.save(self._payload(step), step)
            self.last_checkpoint = path
            log.info("saved %s", path)
        barrier(self.dist)
        return path

    def _log_step(self, record: dict) -> None:
        with open(self.run_dir / "logs.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def _truncate_logs(self, step: int) -> None:
        path = self.run_dir / "logs.jsonl"
        if not path.is_file():
            return
        keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= step]
        path.write_text("".join(ln + "\n" for ln in keep))

    def _writer(self):
        if self._tb is None and self.cfg.train.tensorboard and self.dist.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tb"))
        return self._tb

    # -- the loop -----------------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        self.dist = init_distributed(self.cfg.train.device)
        try:
            return self._fit()
        finally:
            if getattr(self, "_tb", None) is not None:
                self._tb.close()
            cleanup_distributed(self.dist)

    def _fit(self) -> TrainResult:
        cfg = self.cfg
        tc = cfg.train
        dev = self.dist.device
        self._tb = None
        self.best_jf: float | None = None
        self.last_checkpoint: Path | None = None
        self.ckpts = CheckpointManager(self.run_dir, tc.keep_last)
        ckpt = None
        if self.resume:
            if self.dist.is_main:
                self.ckpts.clean_temp()
            barrier(self.dist)
            found = self.ckpts.latest()
            if found is None:
                raise RecvosError(f"--resume {self.run_dir}: no readable checkpoint in {self.ckpts.dir}; start a new run instead")
            ckpt, self.last_checkpoint = found
            log.info("resuming from %s (step %d)", self.last_checkpoint, ckpt["step"])
        elif self.ckpts.list():
            raise RecvosError(f"run directory {self.run_dir} already has checkpoints; use --resume {self.run_dir} or another --out")

        torch.manual_seed(tc.seed + self.dist.rank)
        np.random.seed((tc.seed + self.dist.rank) % 2**32)
        import random

        random.seed(tc.seed + self.dist.rank)

        self.model = self._build_model().to(dev)
        self.model.train()
        zero_shot = tc.task == "zero-shot"
        model_mode = getattr(self.model, "mode", None)
        if zero_shot and model_mode is None:
            raise RecvosError(f"model {self.model.name} has no zero-shot mode; use train.task=one-shot or an rvos-st/rvos-s model")
        if model_mode is not None and model_mode != tc.task:
            raise RecvosError(f"train.task={tc.task} but the model is built for {model_mode}; set model.options.mode={tc.task}")
        if ckpt is not None:
            if ckpt.get("model_name") not in (None, getattr(self.model, "name", None)):
                raise RecvosError(f"checkpoint {self.last_checkpoint} is for model {ckpt.get('model_name')!r}, the config builds {self.model.name!r}")
            try:
                self.model.load_state_dict(ckpt["state_dict"], strict=True)
            except RuntimeError as e:
                first = str(e).splitlines()[0]
                raise RecvosError(f"checkpoint {self.last_checkpoint} does not fit the configured model ({first}); "
                                  "resume with the run's own config.yaml") from None

        elif cfg.model.init_from:
            from recvos.models.factory import warm_start

            fresh = warm_start(self.model, cfg.model.init_from)
            log.info("warm start from %s%s", cfg.model.init_from,
                     f" ({len(fresh)} new tensors: {', '.join(fresh[:6])})" if fresh else "")
        oc = cfg.optim
        self.optimizer = torch.optim.AdamW(
            param_groups(self.model, oc.lr, oc.backbone_lr, oc.weight_decay), lr=oc.lr, betas=tuple(oc.betas)
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, WarmupCosine(oc.warmup_steps, tc.steps, oc.min_lr_ratio, oc.schedule)
        )
        use_amp = dev.type == "cuda" and tc.amp != "none"
        amp_dtype = torch.bfloat16 if tc.amp == "bf16" else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_amp and tc.amp == "fp16")
        start = 0
        if ckpt is not None:
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
            self.scaler.load_state_dict(ckpt["scaler"])
            start = int(ckpt["step"])
            self.best_jf = ckpt.get("best_jf")
            rngs = ckpt.get("rng") or []
            if len(rngs) == self.dist.world_size:
                set_rng_state(rngs[self.dist.rank])
            else:
                log.warning("checkpoint has RNG states for %d processes, running %d: reseeding", len(rngs), self.dist.world_size)
                torch.manual_seed(tc.seed + 1000003 * start + self.dist.rank)

        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.run_dir / "config.yaml")
            self._truncate_logs(start)

        dataset = self._train_dataset()
        val_videos = self._val_videos_list() if (cfg.val.every > 0 and self.dist.is_main) else []
        d = cfg.data
        sampler = ClipSampler(
            dataset, batch_size=tc.batch_size, num_replicas=self.dist.world_size, rank=self.dist.rank,
            seed=tc.seed, start_batch=start * tc.accumulate, accumulate=tc.accumulate, num_frames=d.num_frames,
            num_frames_max=d.num_frames_max, frames=d.frames, annotated_until_step=cfg.curriculum.all_frames_from_step,
        )
        g = torch.Generator()
        g.manual_seed(tc.seed * 1000 + self.dist.rank)
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=tc.batch_size, sampler=sampler, num_workers=d.num_workers,
            worker_init_fn=seed_worker, generator=g, pin_memory=dev.type == "cuda", drop_last=True,
            persistent_workers=False,
        )
        batches: Iterator[dict] = iter(loader)

        loss_fn = VOSLoss(iou=cfg.loss.iou, bce=cfg.loss.bce, dice=cfg.loss.dice, lovasz=cfg.loss.lovasz,
                          objectness=cfg.loss.objectness)
        self._backbone_frozen = False
        self._set_backbone_trainable(not (start < oc.freeze_backbone_steps))
        trainable = lambda: [p for p in self.model.parameters() if p.requires_grad]  # noqa: E731

        bar = None
        redirect = contextlib.ExitStack()
        if self.dist.is_main and tc.progress:
            from tqdm.auto import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            bar = tqdm(total=tc.steps, initial=start, desc="train", unit="step", dynamic_ncols=True)
            redirect.enter_context(logging_redirect_tqdm())  # log lines print above the bar
        result = TrainResult(run_dir=self.run_dir, step=start, best_jf=self.best_jf, last_checkpoint=self.last_checkpoint)
        clips_per_step = tc.batch_size * tc.accumulate * self.dist.world_size
        step = start
        done_here = 0
        end = tc.steps if tc.stop_at is None else min(tc.steps, tc.stop_at)
        try:
            while step < end:
                if self._backbone_frozen and step >= oc.freeze_backbone_steps:
                    self._set_backbone_trainable(True)
                    log.info("step %d: backbone unfrozen", step)
                teacher = cfg.curriculum.own_masks_from_step is None or step < cfg.curriculum.own_masks_from_step
                t0 = time.perf_counter()
                self.optimizer.zero_grad(set_to_none=True)
                terms_sum: dict[str, float] = {}
                last_batch = last_out = None
                for micro in range(tc.accumulate):
                    batch = next(batches)
                    frames = batch["frames"].to(dev, non_blocking=True)
                    masks = batch["masks"].to(dev, non_blocking=True)
                    valid = batch["valid"].to(dev)
                    present = batch["present"].to(dev)
                    sync = micro == tc.accumulate - 1 or not self.dist.distributed
                    ctx = self.net.no_sync() if not sync else _nullctx()
                    with ctx:
                        with torch.autocast(device_type="cuda", dtype=amp_dtype, enabled=use_amp):
                            logits, objectness = self.net(frames, masks, valid, zero_shot, teacher)
                        w = loss_weights(valid, present, zero_shot, cfg.loss.first_frame)
                        out = loss_fn(logits.float(), objectness.float(), masks, w, zero_shot=zero_shot,
                                      annotated=batch["annotated"].to(dev))
                        bad = any_true(not bool(torch.isfinite(out.total)), self.dist)
                        if bad:
                            kept = self.last_checkpoint or "none yet"
                            raise RecvosError(
                                f"loss is {out.terms.get('total')} at step {step + 1} (clip {batch['name'][0]}); stopped, "
                                f"last good checkpoint: {kept}; lower optim.lr, set optim.grad_clip, or use train.amp=none"
                            )
                        self.scaler.scale(out.total / tc.accumulate).backward()
                    for k, v in out.terms.items():
                        terms_sum[k] = terms_sum.get(k, 0.0) + v / tc.accumulate
                    last_batch, last_out = batch, logits
                grad_norm = None
                if oc.grad_clip:
                    self.scaler.unscale_(self.optimizer)
                    grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable(), oc.grad_clip))
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.scheduler.step()
                step += 1
                done_here += 1
                dt = time.perf_counter() - t0
                result.losses.append(terms_sum["total"])
                if self.dist.is_main:
                    lrs = {g["name"]: g["lr"] for g in self.optimizer.param_groups}
                    rec = {"step": step, "loss": terms_sum["total"], **{k: v for k, v in terms_sum.items() if k != "total"},
                           "lr": lrs.get("head", self.optimizer.param_groups[0]["lr"]), "clips_per_s": clips_per_step / dt,
                           "teacher": teacher}
                    if "backbone" in lrs:
                        rec["lr_backbone"] = lrs["backbone"]
                    if grad_norm is not None:
                        rec["grad_norm"] = grad_norm
                    self._log_step(rec)
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{rec['loss']:.4f}", clips_s=f"{rec['clips_per_s']:.2f}")
                    tb = self._writer()
                    if tb is not None and (step % tc.log_every == 0 or step == 1):
                        for k, v in rec.items():
                            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step":
                                tb.add_scalar(f"train/{k}", v, step)
                    if step % tc.log_every == 0:
                        log.info("step %d loss %.4f lr %.2e %.2f clips/s", step, rec["loss"], rec["lr"], rec["clips_per_s"])
                    if tb is not None and tc.image_every and step % tc.image_every == 0 and last_out is not None:
                        probs = torch.sigmoid(last_out[0].detach().float()).cpu()
                        tb.add_image("train/prediction", _overlay(last_batch["frames"][0], probs), step)
                        tb.add_image("train/ground_truth", _overlay(last_batch["frames"][0], last_batch["masks"][0]), step)
                if self.stop_after is not None and done_here >= self.stop_after and step < tc.steps:
                    log.info("stopping after %d steps (simulated interruption)", done_here)
                    break
                validate_now = cfg.val.every > 0 and step % cfg.val.every == 0
                improved = self._validate(step, val_videos, zero_shot) if validate_now else False
                if step % tc.ckpt_every == 0 or step == end or validate_now:
                    path = self._save(step)
                    if improved and path is not None:
                        self.ckpts.save_best(path)
                        log.info("new best J&F %.4f -> %s", self.best_jf, self.ckpts.best_path)
        finally:
            redirect.close()
            if bar is not None:
                bar.close()
        result.step = step
        result.best_jf = self.best_jf
        result.last_checkpoint = self.last_checkpoint
        return result

    def _validate(self, step: int, videos: list[Any], zero_shot: bool) -> bool:
        """Rank 0: J&F on the held-out videos, logged; True if it beats the best so far."""
        if not self.dist.is_main or not videos:
            return False
        v = self.cfg.val
        metrics = validate(self.model, videos, zero_shot=zero_shot, size=v.size, max_frames=v.max_frames, device=self.dist.device)
        jf = metrics.get("J&F-Mean", float("nan"))
        log.info("step %d validation J&F %.4f (J %.4f, F %.4f)", step, jf, metrics.get("J-Mean", float("nan")), metrics.get("F-Mean", float("nan")))
        self._log_step({"step": step, "val": metrics})
        tb = self._writer()
        if tb is not None:
            for k, val in metrics.items():
                tb.add_scalar(f"val/{k}", val, step)
        if math.isfinite(jf) and (self.best_jf is None or jf > self.best_jf):
            self.best_jf = jf
            return True
        return False


class _nullctx:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def train(cfg: Config, *, resume: bool = False) -> TrainResult:
    """Train (or resume) the run described by ``cfg`` (``cfg.out`` is the run directory)."""
    return Trainer(cfg, resume=resume).fit()


def resume_config(run_dir: str | Path) -> Config:
    """The resolved config saved in a run directory (for ``--resume``)."""
    import yaml

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise RecvosError(f"--resume {run_dir}: no config.yaml there; is it a recvos run directory?")
    cfg = config_from_dict(yaml.safe_load(path.read_text()) or {}, str(path))
    cfg.out = str(run_dir)
    return cfg


