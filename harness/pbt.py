"""Population-based training (sweep.scheduler = "pbt"): Ray Tune's PopulationBasedTraining decides, the
project's checkpoint folders carry the exploit.

Every ``sweep.perturbation_interval`` epochs the whole population reaches the same epoch (Tune's
synchronous mode: with fewer concurrent slots than trials, the trials take turns), is ranked on the sweep
metric (evaluated at those epochs: harness/evaluation/plan.py), and each trial of the bottom ``sweep.pbt_quantile``
exploits one of the top: it takes that trial's weights and optimizer state and a perturbed copy of its
settings (``pbt_mutations``: a number x 0.8 or x 1.2, a list's neighbouring value, or, with probability
0.25, a fresh draw; Tune's own explore step). Never at a trial's last epoch: nothing would train after it.

Why not Tune's own exploit: a trial here is a Tune function that runs a Ray Train TorchTrainer (Train V2),
and Ray 2.60's ``ray.tune.integration.ray_train.TuneReportCallback`` passes Tune each report's metrics and
the Train checkpoint's *path* as one more metric ("checkpoint_path"), never a Tune checkpoint, so Tune's
PBT has nothing to clone ("[pbt]: no checkpoint for trial ..., skip exploit"). Here an exploit:

1. copies the donor's checkpoint of the ranked epoch (state.pt, which the worker keeps at every
   perturbation epoch in artifacts/<trial>/scheduler/epoch_NNNN/) to the trial's restart_NN/ and writes
   restart_NN.json beside it (trial, donor, epochs, scores, the settings before and after): a restart in
   the run folder's words (reports/run_folder/layout.py restart_record);
2. gives the trial its new settings (Tune's trial config) and pauses it;
3. when the trial runs again, its driver (harness/trial.py) sees the record and starts a TorchTrainer under
   a new Train run name (``layout.train_run_name``: Train V2 would otherwise resume the trial's own run)
   that starts from the copy, with fresh training-noise streams (the worker).

Tune's internals this needs (its private exploit hook, its per-trial state) are harness/tune_pbt.py's, the
one module that touches them, checked against the Ray release it was read in.

Time-sharing needs the whole population to exist at once, so a PBT sweep does not cap the number of trials
(Tune would run them one after another); it caps how many *run* by the trial drivers' CPUs instead
(``driver_cpus``), and their workers ask for a token CPU.
"""

from __future__ import annotations

import json
import logging
import random
import time

from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from condgen_bench.harness.config import ExperimentConfig, SweepConfig
from condgen_bench.harness.schedulers import SweepScheduler
from condgen_bench.harness.search import Distribution, extreme_values, parse
from condgen_bench.harness.tune_pbt import TunePBT
from condgen_bench.reports.run_folder import faults, layout, storage
from condgen_bench.reports.run_folder.checkpoint import TrialCheckpoint, newest_readable, trial_checkpoints

logger = logging.getLogger(__name__)

WORKER_TOKEN_CPU = 0.01  # what a PBT trial's worker asks of Ray; its driver holds the trial's CPUs
# FastGAN's DiffAugment policies that PBT moves between (neighbours: one op more or fewer)
POLICIES = ["translation", "color,translation", "color,translation,cutout"]


def mutations(config: ExperimentConfig) -> dict[str, list | str]:
    """sweep.pbt_mutations, or where empty the family's default: the learning rate (and a discriminator's
    own, where set) over loguniform(lowest / 10, highest * 10) of its values in the space, and FastGAN's
    DiffAugment policy among POLICIES. {path: list or distribution text}, as sweep.space."""
    if config.sweep.pbt_mutations:
        return dict(config.sweep.pbt_mutations)
    out = {}
    for name in ("lr", "d_lr"):
        base = getattr(config.model, name, None)
        if base is None:
            continue
        values = [float(v) for v in extreme_values(config.sweep.space.get(f"model.{name}", [base]))]
        out[f"model.{name}"] = f"loguniform({min(values) / 10:.3g}, {max(values) * 10:.3g})"
    if hasattr(config.model, "policy"):
        out["model.policy"] = list(dict.fromkeys([*POLICIES, config.model.policy]))
    return out


def tune_mutations(paths: dict[str, list | str]) -> dict:
    """{path: list or distribution text} as Tune's nested hyperparam_mutations: {"model": {"lr": domain}}."""
    out: dict = {}
    for path, value in paths.items():
        parsed = parse(value, f"sweep.pbt_mutations.{path}")
        *parents, name = path.split(".")
        node = out
        for key in parents:
            node = node.setdefault(key, {})
        node[name] = parsed.tune_domain() if isinstance(parsed, Distribution) else list(parsed)
    return out


def get_path(values: dict, path: str):
    """The value at a dotted path of a nested config dict."""
    for key in path.split("."):
        values = values[key]
    return values


def driver_cpus(config: ExperimentConfig, total_cpus: float) -> float:
    """The CPUs a PBT trial's driver asks for: the cluster's CPUs over max_concurrent_trials, less its
    workers' tokens, so that no more trials run at once than their workers have room for (a second
    driver started before the first one's workers would otherwise take the CPUs they wait for)."""
    share = total_cpus / config.sweep.max_concurrent_trials
    return max(config.cluster.cpus_per_trial_driver,
               int((share - config.cluster.workers_per_trial * WORKER_TOKEN_CPU) * 100) / 100)


class FolderPBT(TunePBT):
    """Tune's PBT (synchronous) with the exploit through the run's folders (module docstring); its contact
    with Tune's internals is harness/tune_pbt.py's.

    run_dir: the run directory; seed: the choice among the top trials; the other arguments Tune's."""

    def __init__(self, run_dir: str, seed: int, paths: dict[str, list | str], **kwargs):
        super().__init__(tune_mutations(paths), **kwargs)
        self.run_dir = run_dir
        self.paths = list(paths)
        self.rng = random.Random(seed)

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        if result.get(self.time_attr, 0) >= trial.config["train"]["epochs"]:
            return TrialScheduler.CONTINUE  # the trial's last epoch: nothing would train after an exploit
        return super().on_trial_result(tune_controller, trial, result)

    def choose_donor(self, top: list[Trial]) -> Trial:
        return self.rng.choice(top)

    def exploit(self, tune_controller, trial: Trial, donor: Trial) -> None:
        number = len(layout.restart_records(self.run_dir, trial.trial_id)) + 1  # this exploit's
        try:
            copy, epoch = self._copy_donor(trial, donor, number)
        except (OSError, RuntimeError, KeyError) as error:  # a checkpoint being rotated, an unreadable file
            logger.warning(f"[pbt] trial {trial.trial_id} cannot exploit {donor.trial_id}: {error}")
            return
        self._exploit_from(tune_controller, trial, donor, number, copy, epoch)

    def _copy_donor(self, trial: Trial, donor: Trial, number: int) -> tuple[str, int]:
        """Copy the donor's checkpoint of the epoch it was ranked at (the worker keeps one at every
        perturbation epoch; its newest where that is missing) to the trial's ``number``-th exploit folder:
        (folder, its epoch). A paused trial's workers may have trained on past the epoch Tune ranked it at."""
        source = TrialCheckpoint(layout.scheduler_checkpoint(self.run_dir, donor.trial_id, self.ranked_epoch(donor)))
        if source.exists():
            epoch = source.load()["epoch"]
        else:  # the donor's newest, by what its checkpoints hold
            found = newest_readable(trial_checkpoints(self.run_dir, donor.trial_id), log=logger.warning)
            if found is None:
                raise FileNotFoundError(f"no readable checkpoint of trial {donor.trial_id}")
            source, epoch = found[0], found[1]["epoch"]
        copy = source.copy_to(layout.restart_dir(self.run_dir, trial.trial_id, number))
        return copy.folder, epoch

    def _exploit_from(self, tune_controller, trial: Trial, donor: Trial, number: int, copy: str, epoch: int) -> None:
        """Record the trial's ``number``-th exploit (after the copy: the record says it is whole), give the
        trial the donor's perturbed settings, pause it; its driver starts from the copy when it runs again."""
        new_config, operations = self.perturbed_config(trial, donor)
        record = {
            "trial": trial.trial_id, "donor": donor.trial_id,
            "epoch": epoch,  # the donor's epoch whose weights the trial takes (it trains on from there)
            "trial_epoch": self.ranked_epoch(trial),  # where the trial itself was
            "metric": self.metric,
            "score": self.last_result(trial).get(self.metric), "donor_score": self.last_result(donor).get(self.metric),
            "before": {p: get_path(trial.config, p) for p in self.paths},  # the trial's settings until now
            "donor_settings": {p: get_path(donor.config, p) for p in self.paths},
            "after": {p: get_path(new_config, p) for p in self.paths},  # the donor's, perturbed
            "operations": operations, "checkpoint": copy, "number": number, "time": time.time(),
            "why": f"exploit {number} of {donor.trial_id}'s epoch {epoch}",
        }
        storage.write_bytes(layout.restart_record(self.run_dir, trial.trial_id, number),
                            json.dumps(record, indent=1, default=str).encode())
        faults.hit("restart", trial=trial.trial_id)  # drills: the driver dies before Tune saves the new config
        logger.info(f"[pbt] trial {trial.trial_id} (score {record['score']}) takes the weights of "
                    f"{donor.trial_id} (score {record['donor_score']}) at epoch {epoch}: {record['after']}")
        self.take_over(tune_controller, trial, donor, new_config, f"@exploit{number}")


class PBT(SweepScheduler):
    """sweep.scheduler "pbt" to the rest of the harness (harness/schedulers.py): FolderPBT for Tune, its
    perturbation epochs to evaluate and keep, the trial drivers that hold the CPUs, what it mutates."""

    restarts_trials = True

    def tune_scheduler(self, config: ExperimentConfig, run_dir: str) -> FolderPBT:
        sweep = config.sweep
        return FolderPBT(run_dir, sweep.search_seed, mutations(config), time_attr="epoch", metric=sweep.metric,
                         mode=sweep.mode, perturbation_interval=sweep.perturbation_interval,
                         quantile_fraction=sweep.pbt_quantile)

    def decision_epochs(self, config: ExperimentConfig) -> list[int]:
        """Every perturbation_interval-th epoch but the trial's last (nothing would train after an exploit)."""
        return list(range(config.sweep.perturbation_interval, config.train.epochs, config.sweep.perturbation_interval))

    def kept_checkpoints(self, config: ExperimentConfig, run_dir: str, trial_id: str) -> dict[int, list[str]]:
        """A copy at each perturbation epoch: what a trial exploiting this one takes (Ray Train's own rotate)."""
        return {epoch: [layout.scheduler_checkpoint(run_dir, trial_id, epoch)] for epoch in self.decision_epochs(config)}

    def trial_cap(self, sweep: SweepConfig) -> int:
        """None: the whole population must exist at once (the drivers' CPUs cap what runs: driver_cpus)."""
        return 0

    def driver_cpus(self, config: ExperimentConfig, cluster_cpus: float) -> float:
        return driver_cpus(config, cluster_cpus)

    def worker_cpus(self, cpus: float) -> float:
        return WORKER_TOKEN_CPU  # the trial's driver holds its CPUs

    def fixed_settings(self, config: ExperimentConfig) -> list[str]:
        return list(mutations(config))  # set at every exploit

    def check_resume(self, run_dir: str, config: ExperimentConfig) -> None:
        """A PBT run resumes only in the folder it was made in: Ray restores Tune's scheduler from its pickle,
        FolderPBT with it, which would write its exploits to the old folder. Nor does one whose exploits
        older code kept in artifacts/<trial>/pbt/: its trials would restart from their own weights."""
        origin_file = layout.run_file(run_dir, layout.ORIGIN)
        if storage.exists(origin_file):
            origin = json.loads(storage.read_bytes(origin_file)).get("folder")
            if origin != run_dir:
                raise ValueError(f"cannot resume {run_dir}: a PBT run resumes only in the folder it was made in "
                                 f"({origin}): Ray restores its scheduler with that folder, where it would write its "
                                 "exploits; move it back")
        older = layout.trials_holding(run_dir, "pbt")
        if older:
            raise ValueError(f"cannot resume {run_dir}: trials {', '.join(older)} keep their PBT exploits in "
                             "artifacts/<trial>/pbt/, where code before the schedulers' run-folder records did; "
                             "finish the run with the code version its invocations.json names, or start a new run")

    def describe(self, config: ExperimentConfig) -> str:
        return f"PBT every {config.sweep.perturbation_interval} epochs mutating {mutations(config)}"
