"""The one module that touches Ray Tune's PopulationBasedTraining internals.

Tune's PBT has no public hook for an exploit that a project carries out itself (harness/pbt.py copies the
donor's checkpoint through the run folder, because Ray Train V2 passes Tune no checkpoint to clone). So
``TunePBT`` overrides Tune's private ``_checkpoint_or_exploit`` and reads its per-trial state
(``_trial_state``: the epoch a trial was ranked at, its last result), its perturbation (``_get_new_config``)
and its counters (``_num_perturbations``), here and nowhere else, and offers them to its subclass as plain
methods. These were read in Ray 2.60 (python/ray/tune/schedulers/pbt.py); a Ray release outside
CHECKED_RAY is refused when a PBT sweep starts, with what to do, rather than left to break silently, and
tests/test_pbt.py checks that every internal named here exists in the installed Ray.
"""

from __future__ import annotations

import ray
from ray.tune.experiment import Trial
from ray.tune.schedulers import PopulationBasedTraining

CHECKED_RAY = ("2.60",)  # Ray releases (major.minor) whose PBT internals this module was read against
INTERNAL_METHODS = ("_checkpoint_or_exploit", "_get_new_config")  # Tune's, overridden or called here
INTERNAL_STATE = ("_trial_state", "_num_perturbations", "_metric", "_time_attr")  # read or set on an instance
INTERNAL_TRIAL_STATE = ("last_checkpoint", "last_train_time", "last_result", "last_perturbation_time", "orig_tag")


def check_ray_version(version: str = ray.__version__) -> None:
    """Raise RuntimeError naming the release when ``version`` is not one CHECKED_RAY lists."""
    if not any(version == checked or version.startswith(checked + ".") for checked in CHECKED_RAY):
        raise RuntimeError(
            f"sweep.scheduler = pbt relies on Ray Tune's PopulationBasedTraining internals, read against Ray "
            f"{', '.join(CHECKED_RAY)}; this is Ray {version}. Install ray=={CHECKED_RAY[-1]}.*, or check "
            "harness/tune_pbt.py against this release's ray/tune/schedulers/pbt.py and add it to CHECKED_RAY")


class TunePBT(PopulationBasedTraining):
    """Tune's synchronous PBT whose exploit is the subclass's ``exploit(tune_controller, trial, donor)``:
    Tune ranks the population and names the bottom trials and their donors; nothing is saved for the top
    trials (their workers keep the checkpoints an exploit copies). ``mutations``: Tune's nested
    hyperparam_mutations; the other arguments Tune's."""

    def __init__(self, mutations: dict, **kwargs):
        check_ray_version()
        super().__init__(hyperparam_mutations=mutations, synch=True, **kwargs)

    # what the subclass does
    def choose_donor(self, top: list[Trial]) -> Trial:
        raise NotImplementedError

    def exploit(self, tune_controller, trial: Trial, donor: Trial) -> None:
        raise NotImplementedError

    # Tune's state, read and changed through these only
    @property
    def metric(self) -> str:
        return self._metric

    @property
    def time_attr(self) -> str:
        return self._time_attr

    def ranked_epoch(self, trial: Trial) -> int:
        """The epoch (time_attr) at which Tune last ranked ``trial``."""
        return int(self._trial_state[trial].last_train_time)

    def last_result(self, trial: Trial) -> dict:
        """The trial's last result Tune ranked it by."""
        return self._trial_state[trial].last_result

    def perturbed_config(self, trial: Trial, donor: Trial) -> tuple[dict, dict]:
        """Tune's explore step on the donor's config: (the new config of ``trial``, the operations done)."""
        return self._get_new_config(trial, donor)

    def take_over(self, tune_controller, trial: Trial, donor: Trial, new_config: dict, tag: str) -> None:
        """After an exploit: pause ``trial``, give it ``new_config`` and its experiment tag plus ``tag``, and
        count it as Tune counts a perturbation (the trial now stands where the donor was ranked)."""
        state, donor_state = self._trial_state[trial], self._trial_state[donor]
        if trial.status != Trial.PAUSED:
            tune_controller.pause_trial(trial, should_checkpoint=False)
        trial.set_experiment_tag(f"{state.orig_tag}{tag}")
        trial.set_config(new_config)
        self._num_perturbations += 1
        state.last_perturbation_time = donor_state.last_perturbation_time
        state.last_train_time = donor_state.last_train_time

    # Tune's hook (private in Ray 2.60): called for each trial once the population is ranked
    def _checkpoint_or_exploit(self, trial: Trial, tune_controller, upper_quantile: list, lower_quantile: list):
        self._trial_state[trial].last_checkpoint = None  # nothing saved by Tune: the workers keep checkpoints
        if trial in lower_quantile:
            self.exploit(tune_controller, trial, self.choose_donor(upper_quantile))
