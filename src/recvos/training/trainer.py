"""The training loop: one code path for CPU, one GPU and ``torchrun`` (DDP), resumable exactly.

``Trainer(cfg).fit()`` reads top to bottom: config -> run directory (new, or the newest checkpoint to
resume) -> model (built, warm-started or restored) -> optimizer and schedule -> data -> loop, where each
step runs the model's own frame loop (:class:`~recvos.training.objective.ClipModel`), and every
``val.every`` steps validation segments held-out videos with the user-facing Segmenter
(:mod:`recvos.training.validation`) before a checkpoint is written. Only rank 0 logs, validates and saves.
Run directory::

    <out>/config.yaml        the resolved config
    <out>/logs.jsonl         one JSON line per optimizer step (losses of rank 0, lr, clips/s) and validation
    <out>/checkpoints/       step_XXXXXXXX.pt (last K), best.pt (best validation J&F)
    <out>/tb/                TensorBoard events

Resuming loads the newest readable checkpoint of the run directory and continues from its step: model,
optimizer, scheduler, scaler, RNG states and the sampler position are restored, and since a clip is a pure
function of (seed, clip id), a CPU run reproduces the losses of an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import Dataset

from recvos.data.clips import ClipSampler, seed_worker
from recvos.devices import cpu_has_native_bf16
from recvos.distributed import (
    all_gather_objects,
    any_true,
    barrier,
    cleanup_distributed,
    init_distributed,
)
from recvos.errors import RecvosError
from recvos.losses import VOSLoss
from recvos.models.base import RecurrentVOS
from recvos.models.factory import build_model, model_spec
from recvos.models.loading import model_to_checkpoint, warm_start
from recvos.training.checkpoint import CheckpointManager, rng_state, set_rng_state
from recvos.training.config import Config, config_from_dict, config_to_dict, save_config
from recvos.training.data import train_dataset, val_videos
from recvos.training.objective import ClipModel, loss_weights
from recvos.training.optim import backbone_param_names, build_optimizer
from recvos.training.runlog import RunLog
from recvos.training.validation import validate

log = logging.getLogger(__name__)

__all__ = ["Trainer", "TrainResult", "train", "resume_config"]


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    losses: list[float] = field(default_factory=list)  # total loss per step of this invocation (rank 0)
    best_jf: float | None = None
    last_checkpoint: Path | None = None


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def resolve_amp(amp: str, device: torch.device) -> str:
    """``train.amp`` -> the autocast this run uses: "none", "bf16" or "fp16". "auto": bf16 on a CPU that has it
    natively (where it is emulated, bf16 trains about 1.6x slower than fp32: BENCHMARKS.md, "bf16 only where
    the CPU has it") and on a GPU that supports it, fp16 on other GPUs, else none. On a CPU, fp16 means none."""
    if amp == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "none"
    if device.type == "cpu" and amp == "fp16":
        return "none"
    return amp


class Trainer:
    """Trains one run. ``model``/``train_videos``/``val_videos`` override what ``cfg`` would build (tests);
    ``stop_after`` stops (as if killed) after that many steps of this invocation, without a final checkpoint."""

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
        self.model_override = model
        self.train_videos = train_videos
        self.val_videos = val_videos
        self.stop_after = stop_after
        self.ckpts = CheckpointManager(self.run_dir, cfg.train.keep_last)
        self.best_jf: float | None = None
        self.last_checkpoint: Path | None = None
        self.ema: AveragedModel | None = None

    # -- set-up ---------------------------------------------------------------------------------------------
    def _checkpoint_to_resume(self) -> dict | None:
        """The newest checkpoint when resuming; RecvosError for a new run in a folder that has checkpoints."""
        if not self.resume:
            if self.ckpts.list():
                raise RecvosError(
                    f"run directory {self.run_dir} already has checkpoints; use --resume {self.run_dir} "
                    "or another --out"
                )
            return None
        if self.dist.is_main:
            self.ckpts.clean_temp()
        barrier(self.dist)
        found = self.ckpts.latest()
        if found is None:
            raise RecvosError(
                f"--resume {self.run_dir}: no readable checkpoint in {self.ckpts.dir}; start a new run instead"
            )
        ckpt, self.last_checkpoint = found
        log.info("resuming from %s (step %d)", self.last_checkpoint, ckpt["step"])
        return ckpt

    def _build_model(self, ckpt: dict | None) -> RecurrentVOS:
        """The configured model, with the weights of the checkpoint being resumed or of ``model.init_from``."""
        mc = self.cfg.model
        model = self.model_override if self.model_override is not None else build_model(mc.name, **mc.options)
        if ckpt is not None:
            if ckpt.get("model_name") != model.name:
                raise RecvosError(
                    f"checkpoint {self.last_checkpoint} is for model {ckpt.get('model_name')!r}, "
                    f"the config builds {model.name!r}"
                )
            try:
                model.load_state_dict(ckpt.get("train_state_dict", ckpt["state_dict"]), strict=True)
            except RuntimeError as e:
                raise RecvosError(
                    f"checkpoint {self.last_checkpoint} does not fit the configured model "
                    f"({str(e).splitlines()[0]}); resume with the run's own config.yaml"
                ) from None
        elif mc.init_from:
            fresh = warm_start(model, mc.init_from)
            log.info(
                "warm start from %s%s",
                mc.init_from,
                f" ({len(fresh)} new tensors: {', '.join(fresh[:6])})" if fresh else "",
            )
        model = model.to(self.dist.device)
        if self.cfg.train.channels_last:  # 4-D weights only: convolutions
            model = model.to(memory_format=torch.channels_last)
        return model.train()

    def _restore(self, ckpt: dict) -> int:
        """Optimizer, schedule, scaler, best score and RNG states of a resumed run; returns its step."""
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.best_jf = ckpt.get("best_jf")
        if self.ema is not None:
            if "ema" not in ckpt:
                raise RecvosError(
                    f"checkpoint {self.last_checkpoint} has no weight average; resume with train.ema=null "
                    "(as the run was started) or start a new run"
                )
            self.ema.load_state_dict(ckpt["ema"])
        step = int(ckpt["step"])
        rngs = ckpt.get("rng") or []
        if len(rngs) == self.dist.world_size:
            set_rng_state(rngs[self.dist.rank])
        else:
            log.warning(
                "checkpoint has RNG states for %d processes, running %d: reseeding",
                len(rngs),
                self.dist.world_size,
            )
            torch.manual_seed(self.cfg.train.seed + 1000003 * step + self.dist.rank)
        return step

    def _batches(self, start: int) -> Iterator[dict]:
        """Training batches from step ``start`` on (the sampler skips the batches already seen)."""
        cfg, tc, d = self.cfg, self.cfg.train, self.cfg.data
        dataset = self._cached_dataset() if d.feature_cache.dir else train_dataset(cfg, self.train_videos)
        sampler = ClipSampler(
            dataset,
            batch_size=tc.batch_size,
            num_replicas=self.dist.world_size,
            rank=self.dist.rank,
            seed=tc.seed,
            start_batch=start * tc.accumulate,
            accumulate=tc.accumulate,
            num_frames=d.num_frames,
            num_frames_max=d.num_frames_max,
            frames=d.frames,
            annotated_until_step=cfg.curriculum.all_frames_from_step,
        )
        g = torch.Generator()
        g.manual_seed(tc.seed * 1000 + self.dist.rank)
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=tc.batch_size,
            sampler=sampler,
            num_workers=d.num_workers,
            worker_init_fn=seed_worker,
            generator=g,
            pin_memory=self.dist.device.type == "cuda",
            drop_last=True,
            persistent_workers=False,
        )
        return iter(loader)

    def _cached_dataset(self) -> Dataset:
        """The clips of the feature cache (rank 0 builds it first if needed; the other ranks wait)."""
        from recvos.training.feature_cache import open_cached_dataset, prepare_feature_cache

        if self.dist.is_main:
            prepare_feature_cache(self.cfg, self.model, self.train_videos)
        barrier(self.dist)
        return open_cached_dataset(self.cfg)

    def _set_backbone_trainable(self, trainable: bool) -> None:
        """Freeze the backbone, or restore the requires_grad flags it was built with (frozen stages stay
        frozen), and (re)wrap the model for DDP, which must see the final set of trainable parameters."""
        for name, p in self.model.named_parameters():
            if name in self.backbone_names:
                p.requires_grad_(trainable and self.built_requires_grad[name])
        self.backbone_frozen = not trainable
        net = self._task_net()
        if self.dist.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.dist.device.index] if self.dist.device.type == "cuda" else None
            net = DDP(net, device_ids=ids, find_unused_parameters=self.cfg.train.find_unused_parameters)
        self.net = net

    # -- the loop -------------------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        self.dist = init_distributed(self.cfg.train.device)
        try:
            return self._fit()
        finally:
            cleanup_distributed(self.dist)

    def _fit(self) -> TrainResult:
        cfg, tc, oc = self.cfg, self.cfg.train, self.cfg.optim
        ckpt = self._checkpoint_to_resume()
        seed_everything(tc.seed + self.dist.rank)
        self.model = self._build_model(ckpt)
        expected = cfg.model.options.get("mode", model_spec(cfg.model.name).modes[0])
        if self.model.mode != expected:
            raise RecvosError(
                f"model.options.mode={expected} but the model is built for {self.model.mode}; "
                f"set model.options.mode={self.model.mode}"
            )
        self.optimizer, self.scheduler = build_optimizer(self.model, oc, tc.steps)
        dev_type = self.dist.device.type
        # CPU autocast runs bf16 only (CPUs with AVX512-BF16/AMX are faster in it); fp16 is CUDA-only
        self.amp = resolve_amp(tc.amp, self.dist.device)
        use_amp = self.amp != "none" and dev_type in ("cuda", "cpu")
        if tc.amp == "auto" and self.dist.is_main:
            log.info("train.amp auto: %s on this %s", "fp32" if self.amp == "none" else self.amp, dev_type)
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=use_amp and dev_type == "cuda" and self.amp == "fp16"
        )
        if tc.ema is not None:
            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(tc.ema), use_buffers=True)
        start = self._restore(ckpt) if ckpt is not None else 0
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.run_dir / "config.yaml")
        batches = self._batches(start)
        held_out = val_videos(cfg, self.val_videos) if cfg.val.every > 0 and self.dist.is_main else []
        self.backbone_names = backbone_param_names(self.model)
        self.built_requires_grad = {n: p.requires_grad for n, p in self.model.named_parameters()}
        self._set_backbone_trainable(start >= oc.freeze_backbone_steps)
        self.loss_fn = VOSLoss(
            iou=cfg.loss.iou,
            bce=cfg.loss.bce,
            dice=cfg.loss.dice,
            lovasz=cfg.loss.lovasz,
            objectness=cfg.loss.objectness,
        )
        amp = (
            torch.autocast(
                device_type=dev_type, dtype=torch.bfloat16 if self.amp == "bf16" else torch.float16
            )
            if use_amp
            else contextlib.nullcontext()
        )
        runlog = RunLog(
            self.run_dir,
            active=self.dist.is_main,
            tensorboard=tc.tensorboard,
            progress=tc.progress,
            total=tc.steps,
            start=start,
            log_every=tc.log_every,
        )
        result = TrainResult(run_dir=self.run_dir, step=start)
        end = tc.steps if tc.stop_at is None else min(tc.steps, tc.stop_at)
        step = start
        try:
            while step < end:
                if self.backbone_frozen and step >= oc.freeze_backbone_steps:
                    self._set_backbone_trainable(True)
                    log.info("step %d: backbone unfrozen", step)
                record, batch, logits = self._train_step(step, batches, amp)
                step += 1
                result.losses.append(record["loss"])
                runlog.step(record)
                if tc.image_every and step % tc.image_every == 0 and "frames" in batch:
                    runlog.images(
                        step, batch["frames"][0], torch.sigmoid(logits[0].detach()), batch["masks"][0]
                    )
                if self.stop_after is not None and len(result.losses) >= self.stop_after and step < tc.steps:
                    log.info("stopping after %d steps (simulated interruption)", len(result.losses))
                    break
                validate_now = cfg.val.every > 0 and step % cfg.val.every == 0
                improved = self._validate(step, held_out, runlog) if validate_now else False
                if step % tc.ckpt_every == 0 or step == end or validate_now:
                    self._save(step, best=improved)
        finally:
            runlog.close()
        result.step, result.best_jf, result.last_checkpoint = step, self.best_jf, self.last_checkpoint
        return result

    def _teacher(self, step: int) -> bool:
        """Ground-truth previous masks at this step (else the model's own: Mask-ST+)."""
        own_from = self.cfg.curriculum.own_masks_from_step
        return own_from is None or step < own_from

    def _task_net(self) -> torch.nn.Module:
        """The module DDP wraps and :meth:`_loss` calls: the model's own frame loop over a clip."""
        return ClipModel(self.model, channels_last=self.cfg.train.channels_last)

    def _loss(self, batch: dict, step: int, amp: Any) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
        """One micro-batch -> (loss, its terms incl. "total", logits [B, T, O, H, W] for the image log)."""
        cfg, dev = self.cfg, self.dist.device
        zero_shot = self.model.mode == "zero-shot"
        teacher = self._teacher(step)
        masks, valid = batch["masks"].to(dev, non_blocking=True), batch["valid"].to(dev)
        if "features" in batch:  # from a feature cache: the backbone does not run
            frames, features = None, [f.to(dev, non_blocking=True).float() for f in batch["features"]]
        else:
            frames, features = batch["frames"].to(dev, non_blocking=True), None
        with amp:
            logits, objectness = self.net(frames, masks, valid, teacher, features)
        w = loss_weights(valid, batch["present"].to(dev), zero_shot, cfg.loss.first_frame)
        out = self.loss_fn(
            logits.float(),
            objectness.float(),
            masks,
            w,
            zero_shot=zero_shot,
            annotated=batch["annotated"].to(dev),
        )
        return out.total, out.terms, logits

    def _train_step(self, step: int, batches: Iterator[dict], amp: Any) -> tuple[dict, dict, torch.Tensor]:
        """One optimizer step over ``train.accumulate`` micro-batches; returns (log record, last batch, its logits)."""
        cfg, tc = self.cfg, self.cfg.train
        teacher = self._teacher(step)
        t0 = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        terms: dict[str, float] = {}
        for micro in range(tc.accumulate):
            batch = next(batches)
            sync = micro == tc.accumulate - 1 or not self.dist.distributed
            with self.net.no_sync() if not sync else contextlib.nullcontext():
                total, out_terms, logits = self._loss(batch, step, amp)
                if any_true(not bool(torch.isfinite(total)), self.dist):
                    raise RecvosError(
                        f"loss is {out_terms.get('total')} at step {step + 1} (clip {batch['name'][0]}); stopped, "
                        f"last good checkpoint: {self.last_checkpoint or 'none yet'}; lower optim.lr, set "
                        "optim.grad_clip, or use train.amp=none"
                    )
                self.scaler.scale(total / tc.accumulate).backward()
            for k, v in out_terms.items():
                terms[k] = terms.get(k, 0.0) + v / tc.accumulate
        grad_norm = None
        if cfg.optim.grad_clip:
            self.scaler.unscale_(self.optimizer)
            trainable = [p for p in self.model.parameters() if p.requires_grad]
            grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable, cfg.optim.grad_clip))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        lrs = {g["name"]: g["lr"] for g in self.optimizer.param_groups}
        clips = tc.batch_size * tc.accumulate * self.dist.world_size
        record = {
            "step": step + 1,
            "loss": terms.pop("total"),
            **terms,
            "lr": lrs.get("head", self.optimizer.param_groups[0]["lr"]),
            "clips_per_s": clips / (time.perf_counter() - t0),
            "teacher": teacher,
        }
        if "backbone" in lrs:
            record["lr_backbone"] = lrs["backbone"]
        if grad_norm is not None:
            record["grad_norm"] = grad_norm
        return record, batch, logits

    def _validate(self, step: int, videos: list[Any], runlog: RunLog) -> bool:
        """Rank 0: J&F on the held-out videos, logged; True if it beats the best so far."""
        if not self.dist.is_main or not videos:
            return False
        model = self.ema.module if self.ema is not None else self.model
        metrics = self._score(model, videos)
        runlog.validation(step, metrics)
        jf = metrics.get(self.score_key, float("nan"))
        if math.isfinite(jf) and (self.best_jf is None or jf > self.best_jf):
            self.best_jf = jf
            return True
        return False

    #: the validation metric whose best value picks ``best.pt``
    score_key = "J&F-Mean"

    def _score(self, model: torch.nn.Module, videos: list[Any]) -> dict[str, float]:
        """Validation metrics of ``model`` on the held-out videos (the Segmenter's J&F)."""
        v = self.cfg.val
        return validate(model, videos, max_size=v.max_size, max_frames=v.max_frames, device=self.dist.device)

    def _save(self, step: int, best: bool) -> None:
        """All ranks gather RNG states; rank 0 writes the step checkpoint (and ``best.pt`` if ``best``)."""
        rngs = all_gather_objects(rng_state(), self.dist)
        if self.dist.is_main:
            ck = model_to_checkpoint(self.model)
            if self.ema is not None:  # the average is the model; the raw weights resume training
                ck["train_state_dict"] = ck["state_dict"]
                ck["state_dict"] = model_to_checkpoint(self.ema.module)["state_dict"]
                ck["ema"] = self.ema.state_dict()
            ck.update(
                optimizer=self.optimizer.state_dict(),
                scheduler=self.scheduler.state_dict(),
                scaler=self.scaler.state_dict(),
                step=step,
                rng=rngs,
                sampler={"micro_batch": step * self.cfg.train.accumulate, "world_size": self.dist.world_size},
                config=config_to_dict(self.cfg),
                best_jf=self.best_jf,
                world_size=self.dist.world_size,
            )
            self.last_checkpoint = self.ckpts.save(ck, step)
            log.info("saved %s", self.last_checkpoint)
            if best:
                self.ckpts.save_best(self.last_checkpoint)
                log.info("new best %s %.4f -> %s", self.score_key, self.best_jf, self.ckpts.best_path)
        barrier(self.dist)


def trainer_class(cfg: Config) -> type[Trainer]:
    """The trainer of the configured model's task: VOS clips, or simulated prompting for ``prompt-head``."""
    if "interactive" in model_spec(cfg.model.name).modes:
        from recvos.training.prompt_task import PromptTrainer

        return PromptTrainer
    return Trainer


def train(cfg: Config, *, resume: bool = False) -> TrainResult:
    """Train (or resume) the run described by ``cfg`` (``cfg.out`` is the run directory)."""
    return trainer_class(cfg)(cfg, resume=resume).fit()


def resume_config(run_dir: str | Path) -> Config:
    """The resolved config saved in a run directory (for ``--resume``)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise RecvosError(f"--resume {run_dir}: no config.yaml there; is it a recvos run directory?")
    cfg = config_from_dict(yaml.safe_load(path.read_text()) or {}, str(path))
    cfg.out = str(run_dir)
    return cfg
