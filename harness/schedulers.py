"""The sweep's schedulers behind one interface (sweep.scheduler names one: harness/config.py SCHEDULERS maps
the name to its class). A scheduler is Ray Tune's object plus the answers the rest of the harness asks of it:

- the sweep (harness/sweep.py): the Tune scheduler, how many trials live at once, the CPUs a trial's driver
  and workers ask for, what a resume may not change, and a line for the log;
- the evaluation plan (harness/evaluation/plan.py): the epochs at which it compares trials on the sweep
  metric, which are evaluated on the validation split like the tracking epochs;
- the trial driver (harness/trial.py): the epochs whose checkpoint it needs kept beside Ray Train's (which
  rotate), as folders of the run.

A scheduler may also *restart* a trial: give it another trial's weights and new settings. It then writes a
restart record and a checkpoint copy into the run folder (reports/run_folder/layout.py restart_record); the
trial driver, the results and the report read those without knowing which scheduler wrote them. The
worker knows none of this: it is told where to start and what to keep.

FIFO and ASHA live here, the others in the modules SCHEDULERS names.
"""

from __future__ import annotations

import importlib

from condgen_bench.harness.config import SCHEDULERS, ExperimentConfig, SweepConfig
from condgen_bench.harness.search import extreme_values


def max_epochs(config: ExperimentConfig) -> int:
    """The largest epoch budget of the experiment (its own, or the largest swept one)."""
    return max([config.train.epochs, *extreme_values(config.sweep.space.get("train.epochs", [config.train.epochs]))])


class SweepScheduler:
    """FIFO: every trial runs all its epochs, and nothing is compared on the way. The other schedulers
    override what they change."""

    restarts_trials = False  # whether it restarts trials from others' weights (time estimates are then bounds)

    def tune_scheduler(self, config: ExperimentConfig, run_dir: str):
        """Ray Tune's scheduler object for the experiment; ``run_dir``: the run directory (absolute or URI)."""
        from ray.tune.schedulers import FIFOScheduler
        return FIFOScheduler()

    def decision_epochs(self, config: ExperimentConfig) -> list[int]:
        """The epochs at which it compares the trials on sweep.metric (the plan evaluates them)."""
        return []

    def kept_checkpoints(self, config: ExperimentConfig, run_dir: str, trial_id: str) -> dict[int, list[str]]:
        """{epoch: [folder]}: the copies of a trial's checkpoint it needs kept beside Ray Train's."""
        return {}

    def trial_cap(self, sweep: SweepConfig) -> int:
        """The cap on live trials Tune holds to (0: none): sweep.max_concurrent_trials (unset: 1)."""
        return sweep.max_concurrent_trials or 1

    def driver_cpus(self, config: ExperimentConfig, cluster_cpus: float) -> float:
        """The CPUs a trial's driver asks Ray for, on a cluster of ``cluster_cpus``."""
        return config.cluster.cpus_per_trial_driver

    def worker_cpus(self, cpus: float) -> float:
        """The CPUs a trial's worker asks Ray for, where the cluster settings give it ``cpus``."""
        return cpus

    def fixed_settings(self, config: ExperimentConfig) -> list[str]:
        """Dotted config paths it sets itself during the run, which a resume may therefore not change."""
        return []

    def check_resume(self, run_dir: str, config: ExperimentConfig) -> None:
        """Raise ValueError naming the reason when the run at ``run_dir`` cannot resume under it."""

    def restore_note(self, config: ExperimentConfig) -> str:
        """What a user should know about a resumed experiment under it ("" where nothing)."""
        return ""

    def describe(self, config: ExperimentConfig) -> str:
        """Its part of the log line that starts an experiment ("" where nothing to add)."""
        return ""


class ASHA(SweepScheduler):
    """Asynchronous successive halving: at each rung (grace_period * reduction_factor^k epochs) a trial goes
    on only if it is in the top 1/reduction_factor of the trials that reached the rung."""

    def tune_scheduler(self, config: ExperimentConfig, run_dir: str):
        from ray.tune.schedulers import ASHAScheduler
        sweep = config.sweep
        return ASHAScheduler(time_attr="epoch", metric=sweep.metric, mode=sweep.mode, max_t=max_epochs(config),
                             grace_period=sweep.grace_period, reduction_factor=sweep.reduction_factor)

    def decision_epochs(self, config: ExperimentConfig) -> list[int]:
        """The rungs: grace_period * reduction_factor^k below the largest budget."""
        rungs, epoch = [], config.sweep.grace_period
        while epoch < max_epochs(config):
            rungs.append(epoch)
            epoch *= config.sweep.reduction_factor
        return rungs

    def restore_note(self, config: ExperimentConfig) -> str:
        # Ray saves the searcher's state with the experiment, not the scheduler's
        return (f"{config.name}: note: Ray restores ASHA without its rung records, so the trials that run now are "
                "compared only with results reported after this resume (a trial it would have stopped may run on)")


def scheduler_of(config: ExperimentConfig | SweepConfig) -> SweepScheduler:
    """The scheduler sweep.scheduler names (SCHEDULERS: "module:Class", imported on first use)."""
    sweep = config if isinstance(config, SweepConfig) else config.sweep
    module, name = SCHEDULERS[sweep.scheduler].split(":")
    return getattr(importlib.import_module(module), name)()
