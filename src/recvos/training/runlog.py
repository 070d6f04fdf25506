"""What a run records (rank 0 only): ``logs.jsonl`` (one JSON line per step and per validation),
TensorBoard scalars and overlay images, and a tqdm progress bar with log lines printed above it."""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recvos.data.masks import onehot_to_ids
from recvos.inference.overlay import blend

log = logging.getLogger(__name__)

__all__ = ["RunLog", "overlay_strip"]


def overlay_strip(frames: torch.Tensor, probs: torch.Tensor) -> np.ndarray:
    """frames [T, 3, H, W] in [0, 1], probs [T, O, H, W] -> uint8 [H, T * W, 3]: each frame with its
    masks (probability >= 0.5, most probable object) blended in, side by side."""
    imgs = (frames.permute(0, 2, 3, 1).clamp(0, 1) * 255).round().byte().cpu().numpy()
    ids = range(1, probs.shape[1] + 1)
    p = probs.float().cpu().numpy()
    return np.concatenate([blend(img, onehot_to_ids(p[t], ids)) for t, img in enumerate(imgs)], axis=1)


class RunLog:
    """The run's records in ``run_dir``; a no-op on ranks other than 0 (``active=False``)."""

    def __init__(
        self,
        run_dir: Path,
        *,
        active: bool,
        tensorboard: bool,
        progress: bool,
        total: int,
        start: int,
        log_every: int,
    ) -> None:
        self.path = run_dir / "logs.jsonl"
        self.active = active
        self.log_every = log_every
        self._stack = contextlib.ExitStack()
        self.tb = None
        self.bar = None
        if not active:
            return
        self._truncate(start)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = self._stack.enter_context(SummaryWriter(str(run_dir / "tb")))
        if progress:
            from tqdm.auto import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self.bar = self._stack.enter_context(
                tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True)
            )
            self._stack.enter_context(logging_redirect_tqdm())  # log lines print above the bar

    def _truncate(self, step: int) -> None:
        """Drop the lines of steps after ``step`` (left by a run that crashed after its last checkpoint)."""
        if not self.path.is_file():
            return
        keep = [
            ln
            for ln in self.path.read_text().splitlines()
            if ln.strip() and json.loads(ln).get("step", 0) <= step
        ]
        self.path.write_text("".join(ln + "\n" for ln in keep))

    def _write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def step(self, record: dict[str, Any]) -> None:
        """One optimizer step: a JSON line, the progress bar, TensorBoard scalars every ``log_every`` steps."""
        if not self.active:
            return
        step = record["step"]
        self._write(record)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{record['loss']:.4f}", clips_s=f"{record['clips_per_s']:.2f}")
        if self.tb is not None and (step % self.log_every == 0 or step == 1):
            for k, v in record.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step":
                    self.tb.add_scalar(f"train/{k}", v, step)
        if step % self.log_every == 0:
            log.info(
                "step %d loss %.4f lr %.2e %.2f clips/s",
                step,
                record["loss"],
                record["lr"],
                record["clips_per_s"],
            )

    def images(self, step: int, frames: torch.Tensor, probs: torch.Tensor, masks: torch.Tensor) -> None:
        """Prediction and ground truth of one clip as TensorBoard images."""
        if self.active and self.tb is not None:
            self.tb.add_image("train/prediction", overlay_strip(frames, probs), step, dataformats="HWC")
            self.tb.add_image("train/ground_truth", overlay_strip(frames, masks), step, dataformats="HWC")

    def validation(self, step: int, metrics: dict[str, float]) -> None:
        if not self.active:
            return
        if "J&F-Mean" in metrics:
            log.info(
                "step %d validation J&F %.4f (J %.4f, F %.4f)",
                step,
                metrics["J&F-Mean"],
                metrics.get("J-Mean", float("nan")),
                metrics.get("F-Mean", float("nan")),
            )
        else:
            log.info("step %d validation %s", step, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        self._write({"step": step, "val": metrics})
        if self.tb is not None:
            for k, v in metrics.items():
                self.tb.add_scalar(f"val/{k}", v, step)

    def close(self) -> None:
        self._stack.close()
