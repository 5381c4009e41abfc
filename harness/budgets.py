"""Epoch budgets read off one training run.

With a fixed seed and a learning-rate schedule that does not depend on the budget (lr_schedule
"constant": the warm-up, then the peak), a trial trained for 2 epochs is exactly the first 2 epochs of
the same trial trained for 13. So where search-space points differ only in ``train.epochs``, the sweep
runs one trial per remaining point to the largest budget (``train.budgets`` lists the smaller ones): the
worker evaluates each smaller budget's last epoch as that budget's final evaluation and keeps its
checkpoint (layout.budget_checkpoint), and the results give each budget rows of its own, as the trial
``<trial id>@<budget>`` with ``config.train.epochs`` = the budget and ``budget_of`` = the trial it was read
off. Finalists are chosen among budgets like among trials.

Where training depends on the budget (lr_schedule "cosine" decays to each budget's own last epoch), the
budgets stay separate trials; ``sweep.fold_budgets = false`` keeps them separate always.
"""

from __future__ import annotations

import copy

SEPARATOR = "@"  # "<trial id>@<budget>"


def depends_on_budget(config) -> str | None:
    """Why training at a point of ``config``'s search space depends on its epoch budget, or None."""
    space = config.sweep.space
    schedules = set(space.get("model.lr_schedule", [getattr(config.model, "lr_schedule", "constant")]))
    if schedules - {"constant"}:
        return "model.lr_schedule cosine decays to each budget's own last epoch"
    return None


def folded_budgets(config) -> list[int]:
    """The swept epoch budgets, ascending, that one run per point stands for; [] where they stay separate
    trials (one budget, sweep.fold_budgets off, or training that depends on the budget)."""
    epochs = config.sweep.space.get("train.epochs", [])
    budgets = sorted(set(epochs)) if isinstance(epochs, list) else []  # a drawn range of epochs: no fixed budgets
    if len(budgets) < 2 or not config.sweep.fold_budgets or depends_on_budget(config):
        return []
    return budgets


def budget_id(trial_id: str, budget: int) -> str:
    """The id of the rows of ``trial_id`` read as a ``budget``-epoch trial."""
    return f"{trial_id}{SEPARATOR}{budget}"


def split_budget_id(trial_id: str) -> tuple[str, int | None]:
    """"c5db7_00001@2" -> ("c5db7_00001", 2); a trial's own id -> (it, None)."""
    trial, sep, budget = trial_id.rpartition(SEPARATOR)
    return (trial, int(budget)) if sep and budget.isdigit() else (trial_id, None)


def budget_values(values: dict, budget: int) -> dict:
    """A trial's resolved config dict as the ``budget``-epoch trial it stands for."""
    out = copy.deepcopy(values)
    out["train"]["epochs"] = budget
    out["train"]["budgets"] = []
    return out
