"""Each trial judged at its best evaluated checkpoint (harness/best.py): which epochs are kept and dropped,
budgets read off one run keeping their own best, and, through the worker loop and the finalist stage, a
generator whose tracked metric peaks mid-run scored at the peak from the copy that outlived Ray Train's
rotation."""

import json
import math
import shutil
from dataclasses import dataclass

import pandas as pd
import torch

from condgen_bench import datasets
from condgen_bench.harness import best
from condgen_bench.harness.config import ExperimentConfig
from condgen_bench.harness.finalists import finalist_checkpoint, score_finalist, select_finalists
from condgen_bench.models import METHODS, MethodEntry
from condgen_bench.reports.run_folder import layout, storage
from condgen_bench.reports.run_folder.checkpoint import TrialCheckpoint
import test_worker_loop
from test_ray_sweep import tiny_experiment
from test_toy_family import MeanConfig, MeanMethod
from test_worker_loop import rows_of

train_in_process = test_worker_loop.train_in_process  # the fixture: the worker loop in this process


def saved_at(tmp_path, epoch: int) -> TrialCheckpoint:
    checkpoint = TrialCheckpoint(str(tmp_path / "train" / f"checkpoint_{epoch}"))
    checkpoint.save({"epoch": epoch})
    return checkpoint


def kept_epochs(run_dir: str, trial: str) -> list[int]:
    return sorted(int(n.split("_")[1]) for n in storage.list_dir(layout.best_dir(run_dir, trial)) if n.startswith("epoch_"))


def test_the_best_evaluated_epochs_are_kept_and_the_rest_dropped(tmp_path):
    run_dir = str(tmp_path / "run")
    values = {1: 0.3, 2: 0.7, 3: 0.5, 4: math.nan, 5: 0.6}  # the metric peaks at epoch 2; epoch 4 has none
    for epoch, value in values.items():
        index = best.record_epoch(run_dir, "t", epoch, value, "sample_accuracy", "max", 2, saved_at(tmp_path, epoch), [])
    assert [e["epoch"] for e in index["kept"]] == [2, 5] and kept_epochs(run_dir, "t") == [2, 5]
    entry, folder, rule = best.best_of(run_dir, "t")
    assert entry == {"epoch": 2, "value": 0.7} and TrialCheckpoint(folder).load() == {"epoch": 2}
    assert rule == "best sample_accuracy (max) of the evaluated epochs: 0.7"
    # "min" ranks the other way; ties go to the earlier epoch; keep 0 keeps nothing
    assert best.ranked([{"epoch": 3, "value": 1.0}, {"epoch": 1, "value": 1.0}, {"epoch": 2, "value": 0.5}], "min") == [
        {"epoch": 2, "value": 0.5}, {"epoch": 1, "value": 1.0}, {"epoch": 3, "value": 1.0}]
    assert best.record_epoch(run_dir, "u", 1, 0.5, "fid_domain", "min", 0, saved_at(tmp_path, 1), []) is None
    assert best.best_of(run_dir, "u") is None


def test_a_budget_keeps_its_own_best_and_a_restart_drops_the_epochs_it_trains_again(tmp_path):
    """Budgets 2 and 4 read off a 6-epoch run, keep_best 1: budget 2's best is epoch 1 and stays kept after
    epoch 3 beats it; budget 4's is epoch 3. A restart from epoch 4 trains 5 again (Ray Train restarted the
    trial from an older checkpoint): its new evaluation replaces the old one."""
    run_dir = str(tmp_path / "run")
    for epoch, value in {1: 0.5, 2: 0.4, 3: 0.8, 4: 0.6, 5: 0.9, 6: 0.2}.items():
        best.record_epoch(run_dir, "t", epoch, value, "sample_accuracy", "max", 1, saved_at(tmp_path, epoch), [2, 4])
    assert kept_epochs(run_dir, "t") == [1, 3, 5]
    assert best.best_of(run_dir, "t", 2)[0]["epoch"] == 1 and best.best_of(run_dir, "t", 4)[0]["epoch"] == 3
    assert best.best_of(run_dir, "t")[0]["epoch"] == 5
    best.record_epoch(run_dir, "t", 5, 0.85, "sample_accuracy", "max", 1, saved_at(tmp_path, 5), [2, 4])
    assert best.best_of(run_dir, "t")[0] == {"epoch": 5, "value": 0.85} and kept_epochs(run_dir, "t") == [1, 3, 5]
    assert [e["epoch"] for e in best.read_index(run_dir, "t")["kept"]] == [5]  # one entry an epoch
    # the finalist of the budget "t@2" loads its own best
    checkpoint, state, rule = finalist_checkpoint(run_dir, "t@2")
    assert state == {"epoch": 1} and "up to epoch 2" in rule


def test_finalists_are_ranked_at_their_best_evaluated_epoch():
    config = ExperimentConfig(name="x")
    config.eval.finalists = 1
    frame = pd.DataFrame([{"trial_id": t, "epoch": e, "status": "completed", "stage": "tracking",
                           "sample_accuracy": v} for t, e, v in
                          [("a", 1, 0.9), ("a", 2, 0.3), ("b", 1, 0.5), ("b", 2, 0.6)]])
    [top] = select_finalists(frame, pd.DataFrame(), config)
    assert (top.trial_id, top.value) == ("a", 0.9)  # b leads at the last epoch, a at its best
    config.eval.keep_best = 0
    assert select_finalists(frame, pd.DataFrame(), config)[0].trial_id == "b"


@dataclass
class PeakConfig(MeanConfig):
    noise: float = 0.0  # samples are the stored images themselves
    spoil_after: int = 18  # steps after which the images are swapped round one class and learning stops


class PeakMethod(MeanMethod):
    """A stub generator whose quality peaks: each step it stores a real training image of each class in its
    batch, and samples that class's stored image (the evaluation classifier knows its own training images);
    after ``spoil_after`` steps each class's image becomes the next class's and stays so, so its samples are
    judged as another class and the accuracy on samples falls."""

    name = "peak"

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> dict:
        if self.step == self.config.spoil_after:
            self.net.means.data.copy_(self.net.means.data.roll(1, dims=0))
        if self.step < self.config.spoil_after:
            x = images.float() / 127.5 - 1
            for c in labels.unique():
                self.net.means.data[c] = x[labels == c][0]
        self.step += 1
        return {"loss": torch.zeros(())}


def test_a_trial_whose_metric_peaks_mid_run_is_scored_at_the_peak_from_the_copy_that_survived(
        train_in_process, tmp_path, monkeypatch):
    """4 epochs of 9 steps, spoilt after 2: Ray Train keeps the last 2 checkpoints (3 and 4) and the finalist
    is scored at the best evaluated epoch, 1 or 2, from its copy under best/; its row says which and why, and
    scores far above the last epoch's."""
    import ray.train

    monkeypatch.setitem(METHODS, "peak", MethodEntry(PeakConfig, PeakMethod, PeakConfig, 8))
    run_dir = str(tmp_path / "run")
    train = layout.train_run_dir(layout.train_storage(run_dir), "t_peak")

    def report(metrics, checkpoint=None):  # Ray Train's storage of the checkpoint, rotating as num_to_keep=2
        if checkpoint is not None:
            shutil.copytree(checkpoint.path, f"{train}/{layout.CHECKPOINT_PREFIX}{metrics['epoch']:06d}")
            for old in storage.list_dir(train)[:-2]:
                shutil.rmtree(f"{train}/{old}")

    monkeypatch.setattr(ray.train, "report", report)
    config = tiny_experiment(tmp_path)
    config.method, config.model = "peak", PeakConfig()
    config.train.epochs, config.train.keep_checkpoints = 4, 2
    config.eval.cas, config.eval.augment, config.eval.sampling_sweep = False, False, {}
    config.eval.samples_per_class = 6
    # a reference that tells the classes apart (tiny_experiment's 1 epoch of 2 steps is at chance)
    config.eval.classifier.epochs, config.eval.classifier.batch_size = 20, 16
    train_in_process(config, "t_peak")
    result = type("Result", (), {"error": None, "metrics": {"epoch": 4}})()
    rows = rows_of(run_dir, config, "t_peak", result)
    accuracy = {r["epoch"]: r["sample_accuracy"] for r in rows}
    peak = max(accuracy, key=lambda e: (accuracy[e], -e))
    assert peak in (1, 2) and accuracy[peak] > accuracy[4] + 0.2
    assert sorted(storage.list_dir(train)) == [f"{layout.CHECKPOINT_PREFIX}{e:06d}" for e in (3, 4)]
    assert kept_epochs(run_dir, "t_peak") == [peak]

    data = datasets.load(config.data)
    from condgen_bench.harness.evaluation.reference import prepare_reference

    reference = prepare_reference(data, config.eval, str(tmp_path / "cache"), log=lambda *_: None)
    summary = score_finalist("t_peak", 1, run_dir, data, reference, threads=1, device="cpu")
    assert summary["epoch"] == peak
    finalist = rows_of(run_dir, config, "t_peak", result)[-1]
    assert finalist["stage"] == "finalist" and finalist["selected_epoch"] == finalist["epoch"] == peak
    assert finalist["selection_rule"].startswith("best sample_accuracy (max) of the evaluated epochs")
    record = json.loads(storage.read_bytes(layout.record_file(run_dir, "finalists/t_peak/eval.json")))
    assert record["checkpoint"] == layout.best_checkpoint(run_dir, "t_peak", peak)


def test_a_restarted_trial_is_judged_on_its_own_lineage_only(tmp_path):
    """PBT restarted trial b from a donor's epoch 2 at its epoch 4: b's rows up to epoch 2 are another
    lineage's (other weights and settings), so b's best is sought after it, and the worker forgets the best
    copies it kept before."""
    from condgen_bench.harness.front import evaluated_rows, lineage_start

    restarts = json.dumps([{"epoch": 2, "trial_epoch": 4, "donor": "a"}])
    assert lineage_start(restarts) == 2 and lineage_start(None) == 0
    frame = pd.DataFrame([{"trial_id": "b", "status": "completed", "stage": "tracking", "epoch": e,
                           "sample_accuracy": v, "restarts": restarts} for e, v in ((1, 0.9), (2, 0.8), (4, 0.5))])
    assert evaluated_rows(frame, "sample_accuracy")["epoch"].tolist() == [4]
    run_dir = str(tmp_path / "run")
    best.record_epoch(run_dir, "b", 1, 0.9, "sample_accuracy", "max", 1, saved_at(tmp_path, 1), [])
    best.forget(run_dir, "b")
    assert best.best_of(run_dir, "b") is None and not storage.exists(layout.best_dir(run_dir, "b"))
