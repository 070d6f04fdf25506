"""Training the ``prompt-head`` model by simulated users (RITM's iterative scheme, Sofiiuk et al. 2022).

The run is an ordinary ``recvos train`` run (same data layer, checkpoints, resume, logs, DDP): the clips
are single frames (``data.num_frames: 1``, one object each) and each training sample is a session:

1. it starts from a jittered box (``prompts.box``), a perturbed copy of the object's mask to correct (a
   propagated mask, ``prompts.mask``) or one positive click (inside the object, at its centre or anywhere);
2. 0..``prompts.max_rounds`` rounds run without gradient, each adding the standard clicker's next click on
   the error of the previous round and feeding that round's mask back as the previous mask;
3. the last round is trained (binary cross-entropy and soft IoU against the object's mask).

Validation runs the user-facing ``mask_from_prompts(method="learned")`` on held-out frames: box IoU and
IoU after 1 and 3 clicks of the standard clicker; ``best.pt`` has the best mean of box IoU and IoU@3.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch

from recvos.inference.inputs import resize_binary
from recvos.losses import bce_loss, soft_iou_loss
from recvos.prompts.clicker import iou, mean_iou_at, next_click, run_clicks
from recvos.prompts.core import Prompts, mask_from_prompts, tight_box
from recvos.prompts.learned import prompt_maps
from recvos.training.config import PromptTrainConfig
from recvos.training.trainer import Trainer

__all__ = ["PromptTrainer", "Session", "start_session"]


class Session:
    """One simulated user on one frame: the prompts so far and the previous mask."""

    def __init__(self, gt: np.ndarray, box: tuple[int, int, int, int] | None = None) -> None:
        self.gt = gt
        self.box = box
        self.points: list[tuple[int, int]] = []
        self.labels: list[bool] = []
        self.previous: np.ndarray | None = None

    def click(self, pred: np.ndarray | None) -> None:
        """Add the standard clicker's next click on the error of ``pred`` (nothing if there is none)."""
        c = next_click(self.gt, pred)
        if c is not None:
            y, x, positive = c
            self.points.append((x, y))
            self.labels.append(positive)

    def maps(self) -> np.ndarray:
        """float32 [4, H, W], the encoding of :func:`recvos.prompts.learned.prompt_maps`."""
        pts = np.array(self.points, np.int64).reshape(-1, 2)
        p = Prompts(self.gt.shape, self.box, pts, np.array(self.labels, bool))
        return prompt_maps(p, self.previous)


def _perturbed(gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The mask shifted, scaled a little and eroded or dilated: a propagated mask that needs correcting."""
    H, W = gt.shape
    size = np.sqrt(gt.sum())
    m = np.float32(
        [
            [1 + rng.uniform(-0.1, 0.1), 0, rng.uniform(-0.15, 0.15) * size],
            [0, 1, rng.uniform(-0.15, 0.15) * size],
        ]
    )
    m[1, 1] = m[0, 0]
    out = cv2.warpAffine(gt.astype(np.uint8), m, (W, H), flags=cv2.INTER_NEAREST)
    k = int(rng.integers(1, max(2, int(0.08 * size))))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))
    out = cv2.dilate(out, kernel) if rng.random() < 0.5 else cv2.erode(out, kernel)
    return out > 0


def start_session(gt: np.ndarray, pc: PromptTrainConfig, rng: np.random.Generator) -> Session:
    """A session's first prompts for the object ``gt`` (bool [H, W], non-empty)."""
    H, W = gt.shape
    u = rng.random()
    if u < pc.box:
        x0, y0, x1, y1 = tight_box(gt)
        bw, bh = x1 - x0, y1 - y0
        j = pc.box_jitter
        x0 = int(np.clip(x0 + rng.uniform(-j, j) * bw, 0, W - 1))
        y0 = int(np.clip(y0 + rng.uniform(-j, j) * bh, 0, H - 1))
        x1 = int(np.clip(x1 + rng.uniform(-j, j) * bw, x0 + 1, W))
        y1 = int(np.clip(y1 + rng.uniform(-j, j) * bh, y0 + 1, H))
        return Session(gt, (x0, y0, x1, y1))
    s = Session(gt)
    if u < pc.box + pc.mask:
        s.previous = _perturbed(gt, rng)
        s.click(s.previous)
    elif rng.random() < 0.5:
        s.click(None)  # the clicker's first click: the object's most interior point
    else:
        ys, xs = np.nonzero(gt)
        k = int(rng.integers(len(ys)))
        s.points.append((int(xs[k]), int(ys[k])))
        s.labels.append(True)
    return s


class PromptTrainer(Trainer):
    """:class:`~recvos.training.trainer.Trainer` with the simulated-user loss and prompt validation."""

    score_key = "prompt_score"

    def _task_net(self) -> torch.nn.Module:
        return self.model

    def _loss(self, batch: dict, step: int, amp: Any) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
        cfg, dev, pc = self.cfg, self.dist.device, self.cfg.prompts
        frames = batch["frames"][:, 0].to(dev, non_blocking=True)  # [B, 3, H, W]
        gts = (batch["masks"][:, 0, 0] > 0.5).numpy()  # [B, H, W], one object per clip
        batch_size = len(gts)
        keep = [b for b in range(batch_size) if gts[b].sum() >= 16]
        # one draw of torch's (checkpointed) RNG seeds the sessions: a resumed run replays them
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,))))
        if not keep:
            zero = sum(p.sum() for p in self.model.parameters() if p.requires_grad) * 0.0
            empty = torch.zeros(batch_size, 1, 1, *gts.shape[1:])
            return zero, {"total": 0.0}, empty
        frames, gts = frames[keep], gts[keep]
        sessions = [start_session(g, pc, rng) for g in gts]
        feats = self.model.features(frames)
        rounds = int(rng.integers(0, pc.max_rounds + 1))
        for _ in range(rounds):
            with torch.no_grad(), amp:
                logits = self.net(feats, self._maps(sessions))
            preds = (logits > 0).cpu().numpy()
            for s, pred in zip(sessions, preds, strict=True):
                s.previous = pred
                s.click(pred)
        with amp:
            logits = self.net(feats, self._maps(sessions)).float()
        target = torch.from_numpy(gts).to(dev, torch.float32)
        bce = bce_loss(logits, target).mean()
        siou = soft_iou_loss(torch.sigmoid(logits), target).mean()
        total = cfg.loss.bce * bce + cfg.loss.iou * siou
        terms = {"total": float(total.detach()), "bce": float(bce.detach()), "iou": float(siou.detach())}
        terms["rounds"] = float(rounds)
        shown = logits.detach().new_zeros(
            batch_size, *logits.shape[1:]
        )  # the image log pairs sample b with b
        shown[keep] = logits.detach()
        return total, terms, shown[:, None, None]

    def _maps(self, sessions: list[Session]) -> torch.Tensor:
        return torch.from_numpy(np.stack([s.maps() for s in sessions])).to(self.dist.device)

    def _score(self, model: torch.nn.Module, videos: list[Any]) -> dict[str, float]:
        """Box IoU and IoU after 1 and 3 clicks on ``prompts.val_frames`` frames of each held-out video,
        through ``mask_from_prompts(method="learned")`` at ``val.max_size``; masks scored at mask size."""
        was_training = model.training
        model.eval()
        box_ious, runs = [], []
        try:
            for video in videos:
                annotated = video.annotated_indices
                picks = np.linspace(0, len(annotated) - 1, min(len(annotated), self.cfg.prompts.val_frames))
                for i in sorted({annotated[int(round(k))] for k in picks}):
                    frame = video.load_frame(i)
                    ids = np.asarray(video.load_mask(i))
                    for obj in [o for o in np.unique(ids) if 0 < o < 255]:
                        gt = resize_binary(ids == obj, frame.shape[:2])
                        if gt.sum() < 16:
                            continue
                        box_ious.append(iou(self._predict(model, frame, box=tight_box(gt)), gt))

                        runs.append(
                            run_clicks(self._clicker(model, frame), gt, max_clicks=3, stop_iou=None).ious
                        )
        finally:
            model.train(was_training)
        box = float(np.mean(box_ious)) if box_ious else float("nan")
        at3 = mean_iou_at(runs, 3)
        return {"box_iou": box, "iou@1": mean_iou_at(runs, 1), "iou@3": at3, self.score_key: (box + at3) / 2}

    def _clicker(self, model: torch.nn.Module, frame: np.ndarray) -> Any:
        """``predict(points, labels)`` for :func:`run_clicks` that feeds each mask back as the previous one."""
        last: list[np.ndarray] = []

        def predict(points: list[tuple[int, int]], labels: list[int]) -> np.ndarray:
            prev = last[-1] if last else None
            last.append(self._predict(model, frame, points=points, labels=labels, previous=prev))
            return last[-1]

        return predict

    def _predict(self, model: torch.nn.Module, frame: np.ndarray, **prompts: Any) -> np.ndarray:
        return mask_from_prompts(
            frame, method="learned", model=model, max_size=self.cfg.val.max_size, **prompts
        )
