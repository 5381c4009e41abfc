"""Search spaces beyond grids: what a path of sweep.space may hold, and the Tune search it runs under.

A path of ``sweep.space`` takes a list of values or a distribution written as text:

    {"model.lr": "loguniform(1e-4, 1e-2)", "model.ema_decay": "uniform(0.99, 0.9999)",
     "model.unet.base_channels": [16, 32], "model.diffusion.timesteps": "randint(200, 1001)"}

``sweep.search`` says how points are drawn:

- "grid" (the default): every combination of the lists (a distribution is refused); ``num_samples`` > 1
  repeats each point with another training seed (train.seed, seed + 1, ...), so repeats are real
  repeats, not copies of one deterministic run;
- "random": ``num_samples`` points, each list a uniform choice, each distribution a draw (Tune's
  BasicVariantGenerator, seeded by sweep.search_seed);
- "optuna": ``num_samples`` points proposed by Optuna's TPE sampler through Ray Tune's OptunaSearch, on
  the sweep metric and mode, or on every one of ``sweep.objectives`` at once (the [optuna] extra). Tune saves the searcher's state with the experiment,
  so ``--resume`` continues its proposals instead of repeating finished points.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

SEARCHES = ("grid", "random", "optuna")
KINDS = ("uniform", "loguniform", "randint")  # randint(low, high): integers low .. high - 1, as Tune's
_PATTERN = re.compile(r"^\s*(\w+)\s*\(\s*([^,()]+?)\s*,\s*([^,()]+?)\s*\)\s*$")


@dataclass(frozen=True)
class Distribution:
    """A range of one setting: uniform / loguniform floats in [low, high), randint integers in [low, high)."""

    kind: str
    low: float
    high: float

    def ends(self) -> list:
        """The extreme values a draw can take (what --dry-run builds)."""
        return [int(self.low), int(self.high) - 1] if self.kind == "randint" else [self.low, self.high]

    def tune_domain(self):
        """The Ray Tune domain that draws it."""
        import ray.tune

        return {"uniform": ray.tune.uniform, "loguniform": ray.tune.loguniform,
                "randint": ray.tune.randint}[self.kind](self.ends()[0] if self.kind == "randint" else self.low,
                                                          int(self.high) if self.kind == "randint" else self.high)


def parse(value, path: str = "sweep.space") -> list | Distribution:
    """A sweep.space entry: a list as it is, a distribution's text as a Distribution. Raises ValueError
    naming the path for anything else (an unknown kind, a bad bound, low >= high, loguniform from <= 0,
    randint with non-integer bounds)."""
    if isinstance(value, list):
        if not value:
            raise ValueError(f"{path}: an empty list of values")
        return value
    match = _PATTERN.match(value) if isinstance(value, str) else None
    if not match:
        raise ValueError(f"{path}: expected a list of values or a distribution such as 'loguniform(1e-4, 1e-2)', "
                         f"got {value!r}")
    kind, low_text, high_text = match.groups()
    if kind not in KINDS:
        raise ValueError(f"{path}: unknown distribution {kind!r}; valid: {list(KINDS)}")
    try:
        low, high = float(low_text), float(high_text)
    except ValueError:
        raise ValueError(f"{path}: {value!r}: bounds must be numbers") from None
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise ValueError(f"{path}: {value!r}: needs finite bounds with low < high")
    if kind == "loguniform" and low <= 0:
        raise ValueError(f"{path}: {value!r}: loguniform needs low > 0")
    if kind == "randint" and not (low.is_integer() and high.is_integer()):
        raise ValueError(f"{path}: {value!r}: randint needs integer bounds")
    return Distribution(kind, low, high)


def check_space(space: dict, search: str) -> dict[str, list | Distribution]:
    """Every entry of ``space`` parsed; a distribution under the grid search is refused."""
    if search not in SEARCHES:
        raise ValueError(f"unknown sweep.search {search!r}; valid: {list(SEARCHES)}")
    parsed = {path: parse(value, f"sweep.space.{path}") for path, value in space.items()}
    ranges = [path for path, value in parsed.items() if isinstance(value, Distribution)]
    if ranges and search == "grid":
        raise ValueError(f"sweep.space {ranges}: a distribution needs sweep.search random or optuna (--search), "
                         "a grid takes lists")
    return parsed


def extreme_values(value) -> list:
    """The values of a space entry that --dry-run builds: a list's values, a distribution's two ends."""
    parsed = parse(value)
    return parsed.ends() if isinstance(parsed, Distribution) else parsed


def tune_space(space: dict, search: str) -> dict:
    """{path: Tune domain}: grid_search over each list (grid), else a choice among a list's values and
    each distribution's own domain."""
    import ray.tune

    out = {}
    for path, value in check_space(space, search).items():
        if isinstance(value, Distribution):
            out[path] = value.tune_domain()
        else:
            out[path] = ray.tune.grid_search(list(value)) if search == "grid" else ray.tune.choice(list(value))
    return out


def search_algorithm(sweep, trial_cap: int):
    """The Tune searcher of sweep.search: None for a grid (Tune's own), a seeded BasicVariantGenerator for
    random draws (holding ``trial_cap`` itself: the scheduler's cap on live trials, 0 for none), OptunaSearch (TPE, seeded) on the sweep metric and
    mode for optuna (TuneConfig's max_concurrent_trials limits it). Seeds: sweep.search_seed."""
    if sweep.search == "grid":
        return None
    if sweep.search == "random":
        from ray.tune.search import BasicVariantGenerator

        # Tune ignores TuneConfig's max_concurrent_trials beside a generator passed in: it limits itself
        # (unlimited, on 2 CPUs the trials' drivers take the CPUs their workers wait for: a deadlock)
        return BasicVariantGenerator(random_state=sweep.search_seed, max_concurrent=trial_cap)
    try:
        import optuna
        from ray.tune.search.optuna import OptunaSearch
    except ImportError as error:
        raise RuntimeError(f"sweep.search optuna needs Optuna: pip install -e '.[optuna]' ({error})") from None
    sampler = optuna.samplers.TPESampler(seed=sweep.search_seed)  # TPE weighs several objectives too
    if sweep.objectives:  # multi-objective: Optuna ranks the points by Pareto dominance
        return OptunaSearch(metric=list(sweep.objectives), mode=list(sweep.objectives.values()), sampler=sampler)
    return OptunaSearch(metric=sweep.metric, mode=sweep.mode, sampler=sampler)
