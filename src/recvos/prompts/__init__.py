"""Prompts -> first mask: a box, clicks, scribbles or a mask on any frame become an object's mask.

``mask_from_prompts(frame, box=..., points=..., labels=...)`` is the one entry point; ``method`` picks the
algorithm: "learned" (default: the shipped prompt head on the one-shot default's backbone) or "grabcut"
(OpenCV, no training). ``next_click``, ``run_clicks``, ``noc`` and ``mean_iou_at``
are the standard simulated clicker and metrics used by ``benchmarks/interactive_prompts.py``.
"""

from __future__ import annotations

from recvos.prompts.clicker import ClickRun, iou, mean_iou_at, next_click, noc, run_clicks
from recvos.prompts.core import (
    METHODS,
    Prompts,
    mask_from_prompts,
    parse_box,
    parse_points,
    tight_box,
    validate_prompts,
)

__all__ = [
    "METHODS",
    "ClickRun",
    "Prompts",
    "iou",
    "mask_from_prompts",
    "mean_iou_at",
    "next_click",
    "noc",
    "parse_box",
    "parse_points",
    "run_clicks",
    "tight_box",
    "validate_prompts",
]
