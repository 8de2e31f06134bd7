"""Learning-rate schedule: linear warm-up then cosine decay (paper section 4.1; official
`--lr_scheduler_type cosine --warmup_ratio 0.03`).

A pure function of the step, wrapped in `LambdaLR` so every parameter group keeps its own peak
(layer decay and component multipliers) and the scheduler state is a step counter.
"""

from __future__ import annotations

import math
from functools import partial

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """Fraction of the peak LR at optimizer step `step` (0-based: the LR used by update `step + 1`).

    Rises linearly from `1 / (warmup + 1)` to 1 over `warmup_steps`, then follows a half cosine to
    `min_ratio` at `total_steps`.
    """
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_steps_for(total_steps: int, warmup_steps: int, warmup_ratio: float) -> int:
    """`warmup_steps` if set, else `ceil(warmup_ratio * total_steps)` (the official rounding)."""
    return warmup_steps if warmup_steps > 0 else math.ceil(warmup_ratio * total_steps)


def build_scheduler(optimizer: Optimizer, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> LambdaLR:
    """`LambdaLR` over every group of `optimizer` with `warmup_cosine`."""
    fn = partial(warmup_cosine, warmup_steps=warmup_steps, total_steps=total_steps, min_ratio=min_ratio)
    return LambdaLR(optimizer, fn)
