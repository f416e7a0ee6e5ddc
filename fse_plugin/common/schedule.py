"""The learning-rate schedule of every trainer in the plugin (parser, demo and study
recognizers)."""
from __future__ import annotations

import math

__all__ = ["warmup_cosine"]


def warmup_cosine(progress: float, step: int, base_lr: float, warmup_steps: int) -> float:
    """Linear warm-up over ``warmup_steps`` steps, times a cosine from ``base_lr`` to 0 over
    ``progress`` in [0, 1] (the fraction of the budget spent; clipped)."""
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    return base_lr * warm * 0.5 * (1.0 + math.cos(math.pi * min(1.0, max(0.0, progress))))
