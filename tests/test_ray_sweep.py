"""Ray Train + Ray Tune end to end, on a tiny network: a 2-trial sweep with 2 DDP workers of 0.5 CPU
each and its finalist stage, a trial whose worker dies in a benchmark of two families (one of them under
population-based training), the script on a CSV.
(An ASHA sweep, restarts and resumes: tests/test_drills.py.)"""

import dataclasses
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from condgen_bench.datasets import DataConfig
from condgen_bench.reports.run_folder import runs
from condgen_bench.harness.evaluation import extractors
from condgen_bench.harness.config import (ClusterConfig, EvalConfig, ExperimentConfig, SweepConfig, TrainConfig,
                                          experiment_from_dict, to_dict)
from condgen_bench.reports import paired
from condgen_bench.reports.run_folder import faults
from condgen_bench.reports.run_folder.records import EvalRecord
from condgen_bench.models.classifier import ClassifierConfig
from condgen_bench.models.ddpm import DDPMConfig
from condgen_bench.models.dcgan import DCGANConfig
from condgen_bench.models.diffusion import DiffusionConfig
from condgen_bench.models.unet import UNetConfig

pytestmark = [pytest.mark.ray, pytest.mark.timeout(400)]


def tiny_experiment(tmp_path, **sweep) -> ExperimentConfig:
    return ExperimentConfig(
        name="tiny",
        data=DataConfig(image_size=16, num_train=140, num_test=70),
        model=DDPMConfig(unet=UNetConfig(base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                                         attention_resolutions=(8,), num_heads=2),
                         diffusion=DiffusionConfig(timesteps=50), sampling_steps=3, lr=1e-3),
        train=TrainConfig(epochs=2, batch_size=16, eval_every=1, keep_checkpoints=5),
        # Inception costs ~0.3 s an image here: only the first test turns it on (tests/test_metrics.py has the rest)
        eval=EvalConfig(samples_per_class=3, final_samples_per_class=4, bpd_images=8, bpd_t_samples=3,
                        bpd_at="every", inception_at="never", cas_pool_per_class=10, augment_steps=10,
                        classifier=ClassifierConfig(width=8, epochs=1)),
        sweep=SweepConfig(**sweep),
        cluster=ClusterConfig(storage_path=str(tmp_path), workers_per_trial=2, cpus_per_worker=0.5,
                              cpus_per_trial_driver=0.25),
    )


def test_sweep_of_two_trials_with_two_ddp_workers_one_killed_writes_results_and_report(ray_local, tmp_path,
                                                                                      monkeypatch):
    """Two identical trials (the same seed twice) of 2 DDP workers. The worker drill: rank 1 of the first trial is
    paused before step 3 of epoch 2 (rank 0 waits in that step's all-reduce) and SIGKILLed once Ray Train has
    registered the epoch-1 checkpoint; with max_failures 1 both ranks restart from it, each continuing its
    own noise stream, so the trial ends exactly where its uninterrupted twin does. Then two resumes of the
    finished run: one that finds the disk full, one of the run moved elsewhere, by its path, under another name."""
    import threading

    import torch

    from drill_tools import epoch_record, kill_when_checkpointed
    from condgen_bench.harness.sweep import run_sweep
    from condgen_bench.reports.inputs import load_inputs

    marker = tmp_path / "paused"
    monkeypatch.setenv(faults.ENV, json.dumps({"at": "step", "trial": "00000", "epoch": 2, "rank": 1, "step": 3,
                                               "do": "pause", "once": str(marker)}))
    config = tiny_experiment(tmp_path, space={"train.seed": [0, 0]})  # twins: one seed twice
    config.eval.inception_at = "finalists"  # tests/test_metrics.py has the other settings
    # Inception's features cost ~0.3 s an image here: 2 real and 2 finalist samples a class
    config.data.num_test, config.eval.final_samples_per_class = 14, 2
    config.cluster.max_failures = 1
    # the twins side by side: 2 x (a 0.25-CPU driver and two 0.25-CPU workers) on the 2 CPUs
    config.sweep.max_concurrent_trials, config.cluster.cpus_per_worker = 2, 0.25
    killer = threading.Thread(target=kill_when_checkpointed, args=(marker, tmp_path / "tiny", 1), daemon=True)
    killer.start()
    outcome = run_sweep(config, log=lambda *_: None)
    killer.join(5)
    monkeypatch.delenv(faults.ENV)
    frame = pd.read_parquet(outcome.results_path)
    trials = frame[frame["stage"] != "finalist"]
    assert len(trials) == 4  # 2 trials x evaluations at epochs 1 and 2
    assert set(frame["status"]) == {"completed"}

    run_dir = Path(outcome.run_dir)
    killed, twin = sorted(d.name for d in (run_dir / "train").iterdir())
    assert marker.exists() and epoch_record(run_dir, killed, 2)["resumed_from_epoch"] == 1
    assert epoch_record(run_dir, twin, 2)["resumed_from_epoch"] == 0

    def final_state(trial):
        [*_, folder] = sorted(p for p in (run_dir / "train" / trial).iterdir() if p.is_dir())
        return torch.load(folder / "state.pt", weights_only=True)

    restarted, uninterrupted = final_state(killed), final_state(twin)
    assert restarted["epoch"] == uninterrupted["epoch"] == 2 and len(restarted["noise_states"]) == 2
    for rank, (a, b) in enumerate(zip(restarted["noise_states"], uninterrupted["noise_states"])):
        assert torch.equal(a, b), f"rank {rank}'s noise stream differs from the uninterrupted one"
    assert epoch_record(run_dir, killed, 2)["loss"] == epoch_record(run_dir, twin, 2)["loss"]
    assert sorted(trials["epoch"]) == [1, 1, 2, 2]
    assert sorted(trials["stage"]) == ["tracking", "tracking", "trial_final", "trial_final"]
    for column in ("sample_accuracy", "fid_domain", "kid_domain", "is_domain", "bpd",
                   "bpd_stderr", "sample_seconds_per_image", "classifier_real_accuracy"):
        assert frame[column].notna().all(), column
    assert (frame["bpd"] > 0).all()
    assert (frame["is_domain"] >= 1 - 1e-6).all() and (frame["is_domain"] <= 7 + 1e-6).all()
    assert trials["protocol.num_samples"].eq(21).all()
    assert frame["version.ray"].notna().all() and frame["git_commit"].notna().all()
    assert frame["config.cluster.workers_per_trial"].eq(2).all()
    assert frame["protocol.train_precision"].eq("fp32").all()  # "auto" resolved on these CPU workers
    final = trials[trials["epoch"] == 2]
    for column in ("sample_accuracy_std", "fid_domain_std"):
        assert final[column].notna().all(), column
    assert trials["cas"].isna().all() and trials["aug_gain"].isna().all()  # the finalist stage's
    assert all("finalists only" in json.loads(m)["cas"] for m in trials["missing"])
    assert trials["fid_inception"].isna().all()  # the finalists' only
    assert all("finalists only" in json.loads(m)["fid_inception"] for m in trials["missing"])

    # the finalist: the best trial by sample accuracy at its best evaluated epoch, scored there from the copy
    # of that epoch's checkpoint the trial kept (harness/best.py)
    [finalist] = frame[frame["stage"] == "finalist"].to_dict("records")
    best = trials.sort_values(["sample_accuracy", "epoch", "trial_id"], ascending=[False, True, True]).iloc[0]
    assert finalist["trial_id"] == best["trial_id"] and finalist["epoch"] == best["epoch"] == finalist["selected_epoch"]
    assert finalist["finalist_rank"] == 1 and finalist["selection_rule"].startswith("best sample_accuracy (max)")
    for trial in trials["trial_id"].unique():  # each trial's best epoch kept beside Ray Train's checkpoints
        rows = trials[trials["trial_id"] == trial].sort_values(["sample_accuracy", "epoch"], ascending=[False, True])
        kept = sorted(os.listdir(os.path.join(outcome.run_dir, "artifacts", trial, "best")))
        assert kept == ["best.json", f"epoch_{int(rows['epoch'].iloc[0]):04d}"], (trial, kept)
    assert finalist["protocol.num_samples"] == 14  # eval.final_samples_per_class, not samples_per_class
    for column in ("cas", "cas_std", "cas_real_accuracy", "aug_gain", "aug_gain_std", "fid_intra_domain",
                   "fid_intra_domain.happy"):
        assert pd.notna(finalist[column]), column
    # 14 samples in 32-dimensional features: FID∞ out of its range, missing and saying so (KID is there)
    assert all("out of FID∞'s range" in json.loads(m)["fid_inf_domain"] for m in frame["missing"])
    assert finalist["protocol.cas_pool_per_class"] == 10 and finalist["protocol.cas_train_images"] == 70
    if extractors.offline_inception_path() is not None:  # the [fid] extra: Inception metrics with no download
        assert all(pd.notna(finalist[column]) for column in ("fid_inception", "kid_inception",
                                                             "precision_inception", "recall_inception"))
    # the bound of the same checkpoint, on the test split (the trial's was on validation)
    assert finalist["protocol.bpd_split"] == "test" and set(trials["protocol.bpd_split"]) == {"validation"}
    for grid in frame["sample_grid"]:
        assert os.path.getsize(os.path.join(outcome.run_dir, grid)) > 100
    history = pd.read_parquet(os.path.join(outcome.run_dir, "history.parquet"))
    assert len(history) == 4 and history["loss"].notna().all()
    # the hardware use: counted FLOPs (the same network: one figure), the rate, the device; no peak on a CPU
    assert frame["train_gflops_per_image"].nunique() == 1 and (frame["train_gflops_per_image"] > 0).all()
    assert (history["train_tflops"] > 0).all() and set(history["device"]) == {"cpu"}
    assert history["train_peak_fraction"].isna().all() and (trials["train_tflops"] > 0).all()
    assert trials["protocol.train_math"].eq("fp32").all() and frame["protocol.eval_math"].str.contains("no TF32").all()
    report = open(outcome.report_path, encoding="utf-8").read()
    assert "data:image/png;base64," in report and frame["trial_id"].iloc[0] in report
    assert "Finalists" in report and "intra-class FID" in report
    # the finalist's memorization figures and its gallery of closest sample / training pairs
    assert 0 <= finalist["memorized_share"] <= 1 and finalist["train_distance_pixels"] > 0
    assert os.path.exists(os.path.join(outcome.run_dir, finalist["memorization_grid"]))
    assert "<h2>Memorization</h2>" in report and "memorized share" in report
    # decided on the validation split, reported on the test split (the protocol section says which)
    assert trials["protocol.reference_split"].eq("validation").all() and finalist["protocol.reference_split"] == "test"
    assert "decided on the validation split (14 images)" in report and "reported on the test split (14 images)" in report
    summary = json.load(open(os.path.join(outcome.run_dir, "dataset_summary.json")))
    assert summary["counts"]["train"]["angry"] == 20

    # --resume of a finished run restores the Tuner from its directory: nothing reruns, the finalist is
    # not scored again; here the disk is full when the results are written again (the fault hook): the
    # error names the file, and the previous results stay whole and readable beside their history
    record = os.path.join(outcome.run_dir, "finalists", finalist["trial_id"], "eval.json")
    written, before = os.stat(record).st_mtime_ns, open(outcome.results_path, "rb").read()
    lines = []
    monkeypatch.setenv(faults.ENV, json.dumps({"at": "write", "path": "results.parquet", "do": "enospc"}))
    again = experiment_from_dict(to_dict(config))  # the run's own settings (a resume compares them)
    again.cluster.max_failures = 0
    with pytest.raises(OSError, match=r"could not write .*results\.parquet: No space left on device"):
        run_sweep(again, resume="latest", log=lines.append)
    assert os.stat(record).st_mtime_ns == written
    assert any("already scored" in line and finalist["trial_id"] in line for line in lines), "\n".join(lines[-6:])
    assert "cluster settings changed for the resumed trials: max_failures: 1 -> 0" in lines  # this call's
    assert open(outcome.results_path, "rb").read() == before and not list(tmp_path.rglob("*.tmp*"))
    assert len(load_inputs(outcome.run_dir).results) == len(frame)  # still the pair the manifest lists

    # the run moved elsewhere and resumed by its path under another name: Tune's state is read from the
    # folder itself, the same trials come back (nothing reruns), and nothing is written anywhere else. Its
    # cache removed too: the evaluation classifier is trained again, to the weights the run pinned
    monkeypatch.delenv(faults.ENV)
    shutil.rmtree(tmp_path / "cache")
    moved = tmp_path / "elsewhere" / "moved-run"
    moved.parent.mkdir()
    shutil.move(outcome.run_dir, moved)
    experiments_before = sorted(os.listdir(tmp_path / "tiny"))
    again.name, lines = "another-name", []
    resumed = run_sweep(again, resume=str(moved), log=lines.append)
    assert resumed.run_dir == str(moved) and f"resuming {moved}" in lines
    assert any(line.startswith("evaluation classifier: training") for line in lines)  # not read from a cache
    pinned = json.loads((moved / "reference.json").read_text())
    [classifier] = [p["classifier"] for p in pinned.values()]
    assert f"evaluation reference of synthetic_faces: the run's own (classifier {classifier})" in lines
    moved_frame = pd.read_parquet(resumed.results_path)
    assert sorted(moved_frame["trial_id"]) == sorted(frame["trial_id"])
    assert sorted(os.listdir(tmp_path / "tiny")) == experiments_before and not (tmp_path / "another-name").exists()
    assert not (moved / runs.LOCK_FILE).exists()  # the driver's lock, released when it ended

    # no trial started Ray Train's Ray Data actor (harness/trial.py Trainer: there are no Ray Datasets)
    from ray.util.state import list_actors

    assert not list_actors(filters=[("class_name", "=", "DatasetManager")], raise_on_missing_output=False)
    assert list_actors(filters=[("class_name", "=", "TrainController")], raise_on_missing_output=False)


def test_a_benchmark_whose_worker_dies_goes_on_and_compares_two_families_one_under_pbt(
        ray_local, tmp_path, monkeypatch):
    """One benchmark run of two families, one shared evaluation and one report.

    DDPM (models/unet_method.py's training code; its sibling flow matching's finalist evaluation is checked in
    tests/test_flow.py), two trials on one worker each, at once, locally (max_failures 0): one finishes; one
    has its worker SIGKILLed mid-epoch (an error row with its reason, and the sweep goes on). (A trial whose
    loss diverges, or whose disk fills at an evaluation record: tests/test_worker_loop.py.)
    DCGAN (models/gan.py; FastGAN and DDGAN add networks and losses that their own tests train; two ranks
    averaging a GAN's gradients: tests/test_steps.py) under population-based training (sweep.scheduler pbt,
    harness/pbt.py): two trials of 2 epochs, their learning rates drawn by the random search, two at a time,
    ranked after epoch 1 (never at the last): the worse trial takes the better one's epoch-1 weights and a
    perturbed copy of its learning rate under a Train run of its own, trains on from there, and the exploit
    (which trial, from which, at which epoch) is in the results and the report.
    A row per family, finalists that pair on the same samples. (One run for both families and PBT: each Ray
    run costs its processes' start-up, ~20 s of CPU a trial on 2 cores.)"""
    from condgen_bench.harness.sweep import run_sweep
    from condgen_bench.reports.catalog import uncatalogued
    from condgen_bench.reports.inputs import metric_columns

    marks = tmp_path / "marks"
    monkeypatch.setenv(faults.ENV, json.dumps(
        {"at": "step", "trial": "00001", "epoch": 1, "step": 2, "do": "kill", "once": str(marks / "killed")}))
    ddpm = tiny_experiment(tmp_path, space={"model.lr": [1e-3, 2e-3]}, max_concurrent_trials=2)
    ddpm.name, ddpm.cluster.workers_per_trial = "ddpm", 1  # both at once: 2 x (0.25 + 0.5) CPUs
    ddpm.train.epochs, ddpm.train.eval_every = 1, 0
    ddpm.eval.augment = False  # family-agnostic and scored in the first sweep test: 30 classifier trainings saved
    dcgan = ExperimentConfig(
        name="dcgan", method="dcgan", model=DCGANConfig(ngf=4, ndf=4, z_dim=8), data=ddpm.data,
        train=dataclasses.replace(ddpm.train, epochs=2), eval=ddpm.eval,
        # the population drawn by the random search (its smoke test): two learning rates
        sweep=SweepConfig(space={"model.lr": "loguniform(1e-4, 1e-2)"}, search="random", num_samples=2,
                          scheduler="pbt", perturbation_interval=1, max_concurrent_trials=2),
        cluster=ddpm.cluster)
    outcome = run_sweep([ddpm, dcgan], name="benchmark", log=lambda *_: None)
    frame = pd.read_parquet(outcome.results_path)

    families = frame[frame["method"] == "ddpm"]
    fine, killed = (families[families["config.model.lr"] == lr] for lr in (1e-3, 2e-3))
    assert set(fine["status"]) == {"completed"} and fine["sample_accuracy"].notna().all() and set(fine["epoch"]) == {1}
    assert list(fine["stage"]) == ["trial_final", "finalist"]  # a failed trial is never a finalist
    assert list(killed["status"]) == ["error"] and "died" in killed["status_reason"].iloc[0].lower()
    assert not [p for p in tmp_path.rglob("*.tmp*")]  # no half-written file left behind
    report = open(outcome.report_path, encoding="utf-8").read()
    assert killed["status_reason"].iloc[0].split(":")[0] in report

    gans = frame[frame["method"] == "dcgan"]
    assert set(gans["status"]) == {"completed"} and gans["sample_accuracy"].notna().all()
    finalists = frame[frame["stage"] == "finalist"]  # one per experiment
    assert sorted(finalists["method"]) == ["dcgan", "ddpm"] and finalists["cas"].notna().all()
    assert gans["bpd"].isna().all() and fine["bpd"].notna().all()
    # every figure the results writer emitted for the two families and their finalists is in the catalog
    assert len(metric_columns(frame)) > 60 and uncatalogued(metric_columns(frame)) == []
    assert set(gans.loc[gans["stage"] != "finalist", "network_evaluations"]) == {1}
    history = pd.read_parquet(os.path.join(outcome.run_dir, "history.parquet"))
    assert history.loc[history["trial_id"].isin(gans["trial_id"]), "train/loss_d"].notna().all()
    assert all(family in report for family in ("ddpm", "dcgan"))
    # every record kept its per-sample values: the families' finalists pair on the same samples, and the
    # leaderboard's noise marks use the paired bootstrap
    evaluated = frame[frame["status"] == "completed"]
    assert evaluated["per_sample"].notna().all()
    own = frame[frame["stage"] == "finalist"].set_index("method")
    arrays = {m: EvalRecord.read(os.path.join(outcome.run_dir, os.path.dirname(own.loc[m, "per_sample"]))).per_sample
              for m in ("ddpm", "dcgan")}
    assert paired.pairs("sample_accuracy", arrays["ddpm"], arrays["dcgan"])
    assert "paired bootstrap over the same" in report
    saved = json.load(open(os.path.join(outcome.run_dir, "config.json")))
    assert [c["method"] for c in saved["experiments"]] == ["ddpm", "dcgan"]

    # PBT: one exploit, of the worse trial, from the better one's epoch 1
    population = gans[gans["stage"] != "finalist"]
    assert sorted(population["epoch"]) == [1, 1, 2, 2]
    exploited = population[population["restarts"].notna()]
    assert exploited["trial_id"].nunique() == 1
    trial = exploited["trial_id"].iloc[0]
    (event,) = json.loads(exploited["restarts"].iloc[0])
    donor = (set(population["trial_id"]) - {trial}).pop()
    assert (event["donor"], event["epoch"], event["trial_epoch"]) == (donor, 1, 1)
    assert event["score"] <= event["donor_score"]
    # the trial's settings are the donor's, perturbed; its last epoch trained on from the donor's epoch 1
    donor_lr = population.loc[population["trial_id"] == donor, "config.model.lr"].iloc[0]
    assert 1e-4 <= donor_lr <= 1e-2 and event["donor_settings"]["model.lr"] == donor_lr
    assert event["after"]["model.lr"] == exploited["config.model.lr"].iloc[0] != donor_lr
    mine = history[history["trial_id"] == trial].set_index("epoch")
    assert list(mine.index) == [1, 2]
    train_runs = sorted(os.listdir(os.path.join(outcome.run_dir, "train")))
    assert f"{trial}-x1" in train_runs and any(n.startswith("checkpoint_") for n in os.listdir(
        os.path.join(outcome.run_dir, "train", f"{trial}-x1")))
    epoch2 = json.load(open(os.path.join(outcome.run_dir, "artifacts", trial, "history", "epoch_0002.json")))
    assert epoch2["resumed_from_epoch"] == 1
    assert "Population-based training" in report and "1 exploit" in report
    section = report.split("Population-based training")[1].split("<h2>")[0]
    assert trial in section and donor in section


def test_one_run_over_a_fer2013_csv_and_an_image_folder_reads_budgets_off_one_run_and_searches_with_optuna(
        ray_local, tmp_path):
    """The command line a user types, for one run of three experiments over two datasets with a class
    subset: a CSV in FER2013's format and an image folder (the same faces exported), each with its own
    evaluation reference, each dataset's summary (FER2013's PublicTest rows as a validation split) in the
    run directory, the results and the report's leaderboard holding them apart.

    - folded (FER2013): train.epochs [1, 2] under a constant learning rate, one run of 2 epochs standing
      for both budgets, both finalists; every figure of its 1-epoch budget, during the sweep and as a
      finalist scored from the kept epoch-1 checkpoint, equals a separate 1-epoch trial's to the last digit;
    - separate (FER2013): that 1-epoch trial, its finalist also scored under a sampling sweep (one bound);
    - optuna (the image folder): 2 points drawn by Optuna from loguniform(1e-4, 1e-2), searching accuracy on
      samples and training FLOPs at once: the rows mark the front, and the finalist is on it."""
    from condgen_bench.datasets import FER_EMOTIONS
    from condgen_bench.datasets.export import synthetic_rows, write_class_folders, write_fer2013_csv
    from condgen_bench.harness.cli import run_experiment
    from condgen_bench.reports.catalog import lookup
    from condgen_bench.reports.inputs import metric_columns

    images, labels, identity = synthetic_rows(12)
    usages = ["Training" if i < 8 else "PublicTest" if i < 10 else "PrivateTest" for i in identity]
    write_fer2013_csv(str(tmp_path / "fer2013.csv"), images, labels, usages)
    write_class_folders(str(tmp_path / "folder"), images, labels, list(FER_EMOTIONS))
    base = tiny_experiment(tmp_path, space={"train.epochs": [1, 2]}, max_concurrent_trials=2)
    base.cluster.workers_per_trial = 1  # Optuna's two points at once
    base.train.eval_every = 0
    base.eval = dataclasses.replace(base.eval, finalists=2, cas=False, augment=False)
    fer = dataclasses.replace(base.data, name="fer2013", data_root=str(tmp_path))
    folded = dataclasses.replace(base, name="folded", data=fer)
    separate = dataclasses.replace(
        base, name="separate", data=fer, sweep=dataclasses.replace(base.sweep, space={"train.epochs": [1]}),
        eval=dataclasses.replace(base.eval, finalists=1, cas=True, sampling_sweep={"steps": [2, 4], "guidance": [1]}))
    optuna = dataclasses.replace(
        base, name="optuna", data=dataclasses.replace(base.data, name="imagefolder", data_root=str(tmp_path / "folder")),
        train=dataclasses.replace(base.train, epochs=1), eval=dataclasses.replace(base.eval, finalists=1, bpd_images=0),
        sweep=dataclasses.replace(base.sweep, search="optuna", num_samples=2, space={"model.lr": "loguniform(1e-4, 1e-2)"},
                                  objectives={"sample_accuracy": "max", "train_flops": "min"}))
    assert run_experiment([folded, separate, optuna], [{}] * 3, name="two-datasets",
                          argv=["--classes", "happy,sad,neutral", "--set", "train.batch_size=8"]) == 0
    [run_dir] = [d for d in (tmp_path / "two-datasets").iterdir() if d.is_dir()]
    summaries = json.loads((run_dir / "dataset_summary.json").read_text())["datasets"]
    assert [s["name"] for s in summaries] == ["fer2013", "imagefolder"]
    assert summaries[0]["counts"] == {split: {"happy": n, "sad": n, "neutral": n}
                                      for split, n in (("train", 8), ("validation", 2), ("test", 2))}
    assert sum(summaries[1]["counts"]["test"].values()) > 0
    frame = pd.read_parquet(run_dir / "results.parquet")
    assert sorted(frame["dataset"].unique()) == ["fer2013", "imagefolder"] and frame["sample_accuracy.neutral"].notna().all()
    for dataset in ("fer2013", "imagefolder"):
        assert set(frame.loc[frame["dataset"] == dataset, "dataset_fingerprint"]) == {
            next(s["fingerprint"] for s in summaries if s["name"] == dataset)}
    assert json.loads(frame["config.data.classes"].iloc[0]) == ["happy", "sad", "neutral"]
    report = (run_dir / "report.html").read_text()
    board = report[report.index("<h1>Leaderboard</h1>"):report.index("<h1>Dataset")]
    assert "<h2>fer2013</h2>" in board and "<h2>imagefolder</h2>" in board
    assert "<h1>Dataset fer2013</h1>" in report and "<h1>Dataset imagefolder</h1>" in report
    assert "validation" in report and "neutral" in report

    runs = frame[frame["config.name"] == "folded"]
    [trial] = runs["budget_of"].dropna().unique()  # one training run
    assert sorted(runs["trial_id"].unique()) == sorted([trial, f"{trial}@1"])
    assert sorted(runs.loc[runs["stage"] == "finalist", "trial_id"]) == sorted([trial, f"{trial}@1"])
    assert (run_dir / "artifacts" / trial / "budget_0001" / "state.pt").exists()
    assert runs.groupby("trial_id")["config.train.epochs"].first().to_dict() == {trial: 2, f"{trial}@1": 1}
    figures = [m for m in metric_columns(frame) if not (lookup(m) and lookup(m).wall_clock)
               and runs[m].notna().any() and not m.endswith("_seconds")]
    assert {"sample_accuracy", "fid_domain", "kid_domain", "bpd", "fid_intra_domain"} <= set(figures)
    [twin] = frame.loc[frame["config.name"] == "separate", "trial_id"].unique()
    for stage in ("trial_final", "finalist"):
        a = frame[(frame["trial_id"] == f"{trial}@1") & (frame["stage"] == stage)]
        b = frame[(frame["trial_id"] == twin) & (frame["stage"] == stage)
                  & (frame["sampling_setting"] == "default")]
        assert len(a) == len(b) == 1 and a["epoch"].iloc[0] == 1 and a["status"].iloc[0] == "completed", stage
        assert a[figures].iloc[0].equals(b[figures].iloc[0]), (stage, a[figures].iloc[0].compare(b[figures].iloc[0]))
    history = pd.read_parquet(run_dir / "history.parquet").set_index(["trial_id", "epoch"])
    assert history.loc[(f"{trial}@1", 1), "loss"] == history.loc[(trial, 1), "loss"] == history.loc[(twin, 1), "loss"]
    assert (f"{trial}@1", 2) not in history.index

    # the separate trial's finalist under its own sampler and the two swept settings: one bound
    rows = frame[frame["trial_id"] == twin]
    finalist = rows[rows["stage"] == "finalist"]
    assert sorted(finalist["sampling_setting"]) == ["default", "steps2-guidance1", "steps4-guidance1"]
    assert sorted(finalist["network_evaluations"]) == [2, 4, 6]  # the model's own: 3 steps, guidance 2
    # one bound per split: the trial's on the validation split, its finalist's (every setting) on the test split
    assert rows.groupby("protocol.bpd_split")["bpd"].nunique().to_dict() == {"test": 1, "validation": 1}
    assert rows["bpd"].notna().all() and rows["protocol.bpd_timesteps"].eq(50).all()
    assert finalist.loc[finalist["sampling_setting"] != "default", "cas"].isna().all()  # own sampler only
    assert finalist.loc[finalist["sampling_setting"] == "default", "cas"].notna().all()

    drawn = frame[frame["config.name"] == "optuna"]
    assert drawn["trial_id"].nunique() == 2 and set(drawn["status"]) == {"completed"}
    assert drawn["config.model.lr"].between(1e-4, 1e-2).all() and drawn["config.model.lr"].nunique() == 2
    front = drawn[drawn["on_front"].eq(True)]
    assert len(front) >= 1 and drawn["train_flops"].gt(0).all() and drawn["train_images_seen"].gt(0).all()
    assert set(drawn.loc[drawn["stage"] == "finalist", "trial_id"]) <= set(front["trial_id"])
    assert frame.loc[frame["config.name"] != "optuna", "on_front"].isna().all()  # one objective: no front
