"""Population-based training without a cluster: its settings, the default mutations of each GAN family, the
resources a trial's driver holds, and the exploit through the run's folders (harness/pbt.py), driven on
stand-in trials. A PBT sweep on Ray: tests/test_ray_sweep.py."""

import json
from dataclasses import dataclass, field

import pytest
import torch
from ray.tune.schedulers import TrialScheduler
from ray.tune.schedulers.pbt import _PBTTrialState
from ray.tune.search.sample import Domain

from condgen_bench.harness import pbt
from condgen_bench.harness.config import ClusterConfig, ExperimentConfig, SweepConfig, TrainConfig, to_dict
from condgen_bench.harness.evaluation.plan import trial_plan
from condgen_bench.harness.schedulers import scheduler_of
from condgen_bench.reports.run_folder import layout


def gan(method: str, **sweep) -> ExperimentConfig:
    return ExperimentConfig(method=method, sweep=SweepConfig(scheduler="pbt", **sweep))


def test_pbt_settings_are_checked_naming_what_is_wrong():
    with pytest.raises(ValueError, match="train.epochs"):
        SweepConfig(scheduler="pbt", space={"train.epochs": [2, 4]})
    with pytest.raises(ValueError, match="grid or random"):
        SweepConfig(scheduler="pbt", search="optuna")
    with pytest.raises(ValueError, match="sweep.pbt_mutations.model.lr"):
        SweepConfig(scheduler="pbt", pbt_mutations={"model.lr": "lognormal(1, 2)"})
    with pytest.raises(ValueError, match="perturbation_interval"):
        SweepConfig(scheduler="pbt", perturbation_interval=0)
    with pytest.raises(ValueError, match="unknown scheduler"):
        SweepConfig(scheduler="hyperband")


def test_each_gan_family_mutates_its_learning_rates_and_fastgan_its_diffaugment_policy():
    assert pbt.mutations(gan("dcgan")) == {"model.lr": "loguniform(2e-05, 0.002)"}  # d_lr None follows lr
    ddgan = pbt.mutations(gan("ddgan"))
    assert set(ddgan) == {"model.lr", "model.d_lr"} and ddgan["model.d_lr"] == "loguniform(1.25e-05, 0.00125)"
    fastgan = gan("fastgan")
    assert pbt.mutations(fastgan)["model.policy"] == pbt.POLICIES  # its own policy is one of them
    fastgan.model.policy = "color"
    assert pbt.mutations(fastgan)["model.policy"] == [*pbt.POLICIES, "color"]
    # a swept learning rate: the range spans the swept values
    assert pbt.mutations(gan("dcgan", space={"model.lr": [1e-4, 1e-3]}))["model.lr"] == "loguniform(1e-05, 0.01)"
    own = {"model.lr": [1e-4, 2e-4], "model.n_critic": [1, 2]}
    assert pbt.mutations(gan("dcgan", pbt_mutations=own)) == own
    nested = pbt.tune_mutations({"model.lr": "loguniform(1e-4, 1e-2)", "model.policy": ["a", "b"]})
    assert isinstance(nested["model"]["lr"], Domain) and nested["model"]["policy"] == ["a", "b"]


def test_a_pbt_trials_driver_holds_its_share_of_the_cpus_and_pbt_epochs_are_evaluated():
    local = gan("dcgan", max_concurrent_trials=1)
    assert pbt.driver_cpus(local, 2.0) == 1.99  # one trial at a time: the second driver does not fit
    cluster = gan("dcgan", max_concurrent_trials=3)
    cluster.cluster = ClusterConfig(workers_per_trial=4)
    assert pbt.driver_cpus(cluster, 16.0) == 5.29
    config = gan("dcgan", perturbation_interval=3)
    config.train = TrainConfig(epochs=10, eval_every=0)
    assert [e for e in range(1, 10) if trial_plan(config, e).stage] == [3, 6, 9]
    # the same answers through the schedulers' interface the sweep and the trial driver use
    scheduler = scheduler_of(config)
    assert isinstance(scheduler, pbt.PBT) and scheduler.restarts_trials and scheduler.trial_cap(config.sweep) == 0
    assert scheduler.worker_cpus(1.0) == pbt.WORKER_TOKEN_CPU and scheduler.driver_cpus(local, 2.0) == 1.99
    assert scheduler.kept_checkpoints(config, "/run", "t") == {
        e: [layout.scheduler_checkpoint("/run", "t", e)] for e in (3, 6, 9)}
    assert scheduler.fixed_settings(config) == ["model.lr"]


def test_a_pbt_run_whose_exploits_older_code_kept_elsewhere_is_refused_naming_the_trials(tmp_path):
    """Before the schedulers' run-folder records, exploits lay in artifacts/<trial>/pbt/: resumed now, the
    trial would find no restart record and train on from its own weights under the donor's settings. (A moved
    PBT run: tests/test_runs.py.)"""
    scheduler, config = pbt.PBT(), gan("dcgan")
    run = tmp_path / "run"
    (run / "artifacts" / "t_00000" / "scheduler").mkdir(parents=True)
    (run / layout.ORIGIN).write_text(json.dumps({"folder": str(run)}))
    scheduler.check_resume(str(run), config)  # in place, in this code's layout: fine
    (run / "artifacts" / "t_00001" / "pbt").mkdir(parents=True)
    with pytest.raises(ValueError, match="trials t_00001 keep their PBT exploits in artifacts/<trial>/pbt/"):
        scheduler.check_resume(str(run), config)


@dataclass(eq=False)  # hashed by identity, as Tune's trials
class StandIn:
    """What the scheduler reads and sets of a Tune trial."""
    trial_id: str
    config: dict
    status: str = "RUNNING"
    experiment_tag: str = ""
    paused: list = field(default_factory=list)

    def set_config(self, config):
        self.config = config

    def set_experiment_tag(self, tag):
        self.experiment_tag = tag


class Controller:
    def pause_trial(self, trial, should_checkpoint=True):
        trial.status = "PAUSED"


def save_state(folder, epoch: int, marker: float) -> None:
    folder.mkdir(parents=True)
    torch.save({"epoch": epoch, "method": {"w": torch.tensor([marker])}, "config": {}},
               folder / layout.CHECKPOINT_FILE)


def population(tmp_path, lrs=(1e-3, 1e-4)):
    """A FolderPBT and two stand-in trials ranked at epoch 2: "low" (lr 1e-3, 20%) and "top" (lr 1e-4, 50%)."""
    config = gan("dcgan", space={"model.lr": list(lrs)})
    config.train.epochs = 6
    scheduler = pbt.FolderPBT(str(tmp_path), 0, pbt.mutations(config), time_attr="epoch", metric="sample_accuracy",
                              mode="max", perturbation_interval=2)
    trials = {}
    for name, lr, score in (("low", lrs[0], 0.2), ("top", lrs[1], 0.5)):
        values = to_dict(config)
        values["model"]["lr"] = lr
        trial = trials[name] = StandIn(name, values)
        state = scheduler._trial_state[trial] = _PBTTrialState(trial)
        state.last_score, state.last_train_time, state.last_result = score, 2, {"sample_accuracy": score, "epoch": 2}
    return scheduler, trials


def test_the_bottom_trial_takes_the_tops_weights_of_the_ranked_epoch_and_perturbed_settings(tmp_path):
    scheduler, trials = population(tmp_path)
    low, top = trials["low"], trials["top"]
    # the top trial's worker kept its epoch-2 checkpoint, and has trained on to epoch 3 since
    save_state(tmp_path / "artifacts" / "top" / "scheduler" / "epoch_0002", 2, 2.0)
    save_state(tmp_path / "train" / "top" / "checkpoint_2026-11-30_03-00-00.000000", 3, 3.0)
    scheduler._checkpoint_or_exploit(top, Controller(), [top], [low])  # the top is not touched
    assert top.status == "RUNNING" and layout.restart_records(str(tmp_path), "top") == []

    scheduler._checkpoint_or_exploit(low, Controller(), [top], [low])
    record = json.loads((tmp_path / "artifacts" / "low" / "scheduler" / "restart_01.json").read_text())
    assert (record["trial"], record["donor"], record["epoch"], record["trial_epoch"]) == ("low", "top", 2, 2)
    assert (record["score"], record["donor_score"]) == (0.2, 0.5)
    assert record["before"] == {"model.lr": 1e-3} and record["donor_settings"] == {"model.lr": 1e-4}
    new_lr = low.config["model"]["lr"]
    assert record["after"] == {"model.lr": new_lr}
    assert new_lr in (pytest.approx(1.2e-4), pytest.approx(0.8e-4)) or 1e-5 <= new_lr <= 1e-2  # x1.2, x0.8 or a draw
    assert low.status == "PAUSED" and low.experiment_tag.endswith("@exploit1")
    # the trial trains on from the copy, under a Train run of its own
    [copy] = layout.checkpoint_folders(str(tmp_path), "low")
    assert copy == record["checkpoint"] == layout.restart_dir(str(tmp_path), "low", 1)
    assert torch.load(f"{copy}/{layout.CHECKPOINT_FILE}")["method"]["w"].item() == 2.0  # epoch 2's, not 3's
    assert layout.train_run_name("low", 1) == "low-x1"
    (tmp_path / "train" / "low-x1" / "checkpoint_2026-11-30_03-01-00.000000").mkdir(parents=True)
    (tmp_path / "train" / "low-x1" / "checkpoint_2026-11-30_03-01-00.000000" / layout.CHECKPOINT_FILE).write_bytes(b"x")
    [own] = layout.checkpoint_folders(str(tmp_path), "low")
    assert own.endswith("low-x1/checkpoint_2026-11-30_03-01-00.000000")


def test_without_the_ranked_epochs_copy_the_donors_newest_checkpoint_is_taken_and_none_skips(tmp_path):
    scheduler, trials = population(tmp_path)
    low, top = trials["low"], trials["top"]
    scheduler._checkpoint_or_exploit(low, Controller(), [top], [low])  # the donor has no checkpoint at all
    assert low.status == "RUNNING" and layout.restart_records(str(tmp_path), "low") == []
    save_state(tmp_path / "train" / "top" / "checkpoint_2026-11-30_03-00-00.000000", 3, 3.0)
    scheduler._checkpoint_or_exploit(low, Controller(), [top], [low])
    assert json.loads((tmp_path / "artifacts" / "low" / "scheduler" / "restart_01.json").read_text())["epoch"] == 3


def test_no_exploit_at_a_trials_last_epoch(tmp_path):
    scheduler, trials = population(tmp_path)
    result = {"epoch": 6, "sample_accuracy": 0.1}
    assert scheduler.on_trial_result(None, trials["low"], result) == TrialScheduler.CONTINUE
    assert scheduler._trial_state[trials["low"]].last_train_time == 2  # not ranked


def test_a_driver_killed_between_an_exploits_record_and_tunes_save_trains_under_the_record(tmp_path):
    """The exploit record is written before Tune saves the trial's new config: the sweep's driver, SIGKILLed
    between the two (the fault hook, in a process of its own that runs the exploit), leaves Tune's saved config
    with the old learning rate beside a record (and a copy of the donor's weights) with the new one. The
    trial's driver runs it under the record's settings, and its rows say the same."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    from types import SimpleNamespace

    from condgen_bench import datasets
    from condgen_bench.harness.results import TrialOutcome, _trial_rows
    from condgen_bench.harness.trial import trial_settings
    from condgen_bench.reports.run_folder import faults

    _, trials = population(tmp_path)
    saved_by_tune = json.loads(json.dumps(trials["low"].config))  # what Tune restores: the save never came
    save_state(tmp_path / "artifacts" / "top" / "scheduler" / "epoch_0002", 2, 2.0)
    driver = ("import sys, pathlib; sys.path.insert(0, sys.argv[2]); "
              "from test_pbt import Controller, population; "
              "scheduler, trials = population(pathlib.Path(sys.argv[1])); "
              "scheduler._checkpoint_or_exploit(trials['low'], Controller(), [trials['top']], [trials['low']]); "
              "print('survived')")
    env = {**os.environ, faults.ENV: json.dumps({"at": "restart", "trial": "low", "do": "kill"})}
    killed = subprocess.run([sys.executable, "-c", driver, str(tmp_path), str(Path(__file__).parent)], env=env,
                            capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9 and "survived" not in killed.stdout, killed.stderr[-2000:]
    new_lr = json.loads((tmp_path / "artifacts" / "low" / "scheduler" / "restart_01.json").read_text())["after"]["model.lr"]
    assert saved_by_tune["model"]["lr"] == 1e-3 != new_lr
    values, exploits = trial_settings(saved_by_tune, str(tmp_path), "low", [])
    assert values["model"]["lr"] == new_lr and exploits == 1
    resumed = [{"id": 1, "values": {"train.sync_every": [50, 7]}}]  # a resume's change comes on top
    assert trial_settings(saved_by_tune, str(tmp_path), "low", resumed)[0]["train"]["sync_every"] == 7

    outcome = TrialOutcome("low", SimpleNamespace(error=None, metrics={"epoch": 2}), None, None)
    spec = datasets.load(datasets.DataConfig(name="synthetic_faces", num_train=14, num_test=7, image_size=16)).spec()
    [row], _ = _trial_rows(str(tmp_path), outcome, saved_by_tune, {}, spec)
    assert row["config.model.lr"] == new_lr and json.loads(row["restarts"])[0]["after"] == {"model.lr": new_lr}


def test_the_tune_internals_pbt_relies_on_exist_in_this_ray_and_another_release_is_refused_clearly():
    """harness/tune_pbt.py is the one module that touches Tune's PBT internals: every one it names exists in
    the installed Ray (a release that renames one fails here, not silently in a sweep), and a Ray release it
    was not read against is refused when a PBT sweep starts, naming the release and what to do."""
    import ray
    from ray.tune.schedulers import PopulationBasedTraining

    from condgen_bench.harness import tune_pbt

    tune_pbt.check_ray_version()  # the installed one is checked
    assert any(ray.__version__.startswith(v + ".") for v in tune_pbt.CHECKED_RAY)
    for name in tune_pbt.INTERNAL_METHODS:
        assert callable(getattr(PopulationBasedTraining, name, None)), name
    scheduler = PopulationBasedTraining(time_attr="epoch", metric="m", mode="max", hyperparam_mutations={"a": [1, 2]})
    for name in tune_pbt.INTERNAL_STATE:
        assert hasattr(scheduler, name), name
    trial_state = _PBTTrialState(StandIn("t", {}))
    for name in tune_pbt.INTERNAL_TRIAL_STATE:
        assert hasattr(trial_state, name), name
    with pytest.raises(RuntimeError, match=r"read against Ray 2\.60; this is Ray 2\.99\.0\. Install ray==2\.60\.\*"):
        tune_pbt.check_ray_version("2.99.0")
    with pytest.raises(RuntimeError, match="this is Ray 2.6.0"):
        tune_pbt.check_ray_version("2.6.0")  # not a prefix match on "2.6"
    tune_pbt.check_ray_version("2.60.1")


def _scheduler_mentions(path: str) -> list[str]:
    """The lines of the module at ``path`` that mention PBT or exploits, less those of the report's rendering of
    the exploit records (reports/sections.py pbt_section, and where the report lists it)."""
    import ast
    import re

    text = open(path, encoding="utf-8").read()
    rendering = set()
    for node in ast.walk(ast.parse(text, path)):
        if isinstance(node, ast.FunctionDef) and node.name == "pbt_section":
            rendering |= set(range(node.lineno, node.end_lineno + 1))
    return [f"{path}:{n}: {line.strip()}" for n, line in enumerate(text.splitlines(), 1)
            if n not in rendering and re.search(r"pbt|exploit", line.replace("pbt_section", ""), re.IGNORECASE)]


def test_only_the_pbt_adapter_the_config_the_cli_and_the_reports_rendering_know_pbt():
    """The sweep, the trial driver, the worker, the plan, the results and the run folder speak of a scheduler
    and its restarts (harness/schedulers.py, layout.restart_record): PBT and its exploits are named only in its
    adapter (harness/pbt.py, harness/tune_pbt.py), its settings (config, CLI) and the report's table of them."""
    import glob
    import os

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    allowed = {os.path.join("harness", name) for name in ("pbt.py", "tune_pbt.py", "config.py", "cli.py")}
    files = sorted(f for folder in ("harness", "reports", "models", "datasets", "experiments")
                   for f in glob.glob(os.path.join(root, folder, "**", "*.py"), recursive=True))
    assert len(files) > 40 and any(f.endswith("worker.py") for f in files)
    found = [line for f in files if os.path.relpath(f, root) not in allowed for line in _scheduler_mentions(f)]
    assert not found, "\n".join(found)
    # the finder finds them where they are: the adapter, and the report outside its rendering
    assert _scheduler_mentions(os.path.join(root, "harness", "pbt.py"))
    sections = os.path.join(root, "reports", "sections.py")
    assert open(sections, encoding="utf-8").read().count("exploit") > 2 and not _scheduler_mentions(sections)
