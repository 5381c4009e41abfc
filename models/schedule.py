"""Learning-rate schedules shared by the families: a multiplier of the peak learning rate per step.

"constant" keeps the peak after the warm-up: training up to step s is the same whatever the trial's
epoch budget, so a shorter budget is a prefix of a longer run (harness/budgets.py reads budgets off one
run). "cosine" decays to 0 at the trial's last step: the budget changes every step after the warm-up,
so budgets are separate trials.
"""

from __future__ import annotations

import math

SCHEDULES = ("constant", "cosine")


def check_schedule(name: str) -> None:
    if name not in SCHEDULES:
        raise ValueError(f"unknown lr_schedule {name!r}; valid: {list(SCHEDULES)}")


def lr_factor(schedule: str, step: int, warmup_steps: int, total_steps: int | None) -> float:
    """The multiplier of the peak learning rate for optimizer step ``step`` (0-based): a linear ramp over
    ``warmup_steps``, then 1 ("constant") or a half cosine from 1 at the end of the warm-up to 0 at
    ``total_steps`` ("cosine"; total_steps None, before the harness set it: no decay)."""
    warm = min(1.0, (step + 1) / max(1, warmup_steps))
    if schedule == "constant" or total_steps is None or step < warmup_steps:
        return warm
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return 0.5 * (1.0 + math.cos(math.pi * progress))
