"""Where every file of a run lives: the one place that builds paths inside a run directory and the cache.

    <storage_path>/<name>/<timestamp>/        the run directory (run_dir)
        config.json                           the resolved configs (a benchmark: one per experiment)
        dataset_summary.json                  images per class per split, the fingerprint
        results.parquet, history.parquet      the results (harness/results.py), then report.html
        results_manifest.json                 written after both: their sizes and digests, so a reader
                                              knows the two files are from the same write
        artifacts/<trial>/epoch_NNNN/         an evaluation during the sweep: eval.json, samples.png,
                                              per_sample.npz (what the report's paired tests resample)
        artifacts/<trial>/diverged.json       why a trial stopped as diverged
        artifacts/<trial>/budget_NNNN/state.pt   the checkpoint of a smaller epoch budget read off the
                                              trial (harness/budgets.py), kept for the finalist stage
        artifacts/<trial>/scheduler/          what the sweep's scheduler keeps of the trial (epoch_NNNN/
                                              state.pt) and its restarts of it (restart_NN.json, the
                                              record; restart_NN/state.pt, the copy it starts from)
        artifacts/<trial>/history/epoch_NNNN.json  an epoch's training figures (the loss curves; kept
                                              across restarts, so a resumed trial's earlier epochs stay)
        train/<trial>/checkpoint_*/state.pt   Ray Train's checkpoints of the trial (the latest are kept)
        finalists/<trial>/                    the finalist stage's evaluation of the trial's last checkpoint
                                              (or failed.json: why it could not be scored)
        .../sampling/<setting>/               the same checkpoint under another sampler setting
    <cache_dir>/classifiers/, features/       the evaluation reference, shared by runs (default
                                              <storage_path>/cache)

Used by the harness, which writes these files, and by the report, which reads them; it imports nothing
of either.
"""

from __future__ import annotations

import os

from condgen_bench.reports.run_folder import storage

CONFIG = "config.json"
DATASET_SUMMARY = "dataset_summary.json"
ORIGIN = "origin.json"  # where the run's folder was made: {"folder": path}
RESULTS = "results.parquet"
HISTORY = "history.parquet"
REFERENCE = "reference.json"  # the evaluation reference the run scores with, by dataset (harness/sweep.py pin_references)
INVOCATIONS = "invocations.json"  # every driver of the run: start, code version, cluster, changes (harness/resume.py)
MANIFEST = "results_manifest.json"  # {file name: {"bytes", "sha256", "rows"}} of RESULTS and HISTORY
REPORT = "report.html"
EVAL_RECORD = "eval.json"  # one evaluation: {"metrics", "missing", "protocol", "stage", "epoch", ...}
SAMPLE_GRID = "samples.png"
AUGMENT_STUDY = "augment_study.json"  # a finalist's augmentation study: one entry per arm (harness/evaluation/augment_study.py)
AUGMENT_STUDY_GRID = "augment_study.png"  # its real images above the selected generated ones, per class
MEMORIZATION_GRID = "memorization.png"  # a finalist's closest sample / training image pairs (harness/evaluation/scoring.py)
PER_SAMPLE = "per_sample.npz"  # beside eval.json: what the paired tests need (reports/paired.py)
DIVERGED = "diverged.json"  # {"epoch", "step", "reason"}
FINALIST_FAILED = "failed.json"  # in a finalist's folder when its scoring raised: {"error"}; retried on --resume
CHECKPOINT_FILE = "state.pt"  # inside each Ray Train checkpoint folder
CHECKPOINT_PREFIX = "checkpoint_"  # Ray Train names its checkpoint folders checkpoint_<timestamp>
SAMPLING = "sampling"
TRAIN_SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray Train's record of a run's checkpoints, in its folder


def experiment_dir(storage_root: str, name: str) -> str:
    """Where the runs of one name live: a run folder per run in it (reports/run_folder/runs.py)."""
    return storage.join(storage_root, name)


def tune_dir(run_dir: str, experiment: str, experiments: int) -> str:
    """Where an experiment's Tune state lives: the run folder itself (one experiment), or a folder per
    experiment in it (a benchmark)."""
    return run_dir if experiments == 1 else storage.join(run_dir, experiment)


def record_file(run_dir: str, relative) -> str:
    """A file of a record (results' sample_grid / per_sample): relative to ``run_dir``, or as it is when
    absolute or a URI (a report over several runs)."""
    relative = str(relative)
    return relative if os.path.isabs(relative) or "://" in relative else storage.join(run_dir, relative)


def run_file(run_dir: str, name: str) -> str:
    """A file at the top of the run directory (one of the names above)."""
    return storage.join(run_dir, name)


def trial_dir(run_dir: str, trial_id: str) -> str:
    """The trial's evaluation records and its divergence note."""
    return storage.join(run_dir, "artifacts", trial_id)


def epoch_dir(run_dir: str, trial_id: str, epoch: int) -> str:
    """The record of the trial's evaluation after ``epoch``."""
    return storage.join(trial_dir(run_dir, trial_id), f"epoch_{epoch:04d}")


def finalist_dir(run_dir: str, trial_id: str) -> str:
    """The record of the trial's finalist evaluation."""
    return storage.join(run_dir, "finalists", trial_id)


def finalist_failed_file(run_dir: str, trial_id: str) -> str:
    """Why the trial's finalist scoring failed ({"error"}); retried on --resume."""
    return storage.join(finalist_dir(run_dir, trial_id), FINALIST_FAILED)


def sampling_dir(record_dir: str, setting: str) -> str:
    """The record of the same checkpoint under another sampler setting (harness.evaluation.setting_key)."""
    return storage.join(record_dir, SAMPLING, setting)


def history_file(run_dir: str, trial_id: str, epoch: int) -> str:
    """One epoch's training figures of a trial (what it reported to Tune that epoch)."""
    return storage.join(history_dir(run_dir, trial_id), f"epoch_{epoch:04d}.json")


def history_dir(run_dir: str, trial_id: str) -> str:
    """The trial's per-epoch training records."""
    return storage.join(trial_dir(run_dir, trial_id), "history")


def history_files(run_dir: str, trial_id: str) -> list[str]:
    """The trial's per-epoch training records, by epoch."""
    folder = history_dir(run_dir, trial_id)
    return [storage.join(folder, name) for name in storage.list_dir(folder) if name.endswith(".json")]


def trial_changes_file(run_dir: str, trial_id: str) -> str:
    """The settings changes a resume made that the trial trained under, each from its epoch (harness/resume.py)."""
    return storage.join(trial_dir(run_dir, trial_id), "changes.json")


def diverged_file(run_dir: str, trial_id: str) -> str:
    return storage.join(trial_dir(run_dir, trial_id), DIVERGED)


def train_storage(run_dir: str) -> str:
    """Ray Train's storage_path: each trial's TorchTrainer runs under train/<trial id>."""
    return storage.join(run_dir, "train")


def train_run_dir(train_storage_dir: str, run_name: str) -> str:
    """One Ray Train run's folder (its checkpoints and Train's snapshot of them) under train_storage."""
    return storage.join(train_storage_dir, run_name)


def train_checkpoint_dir(train_storage_dir: str, run_name: str, folder: str) -> str:
    """One of a Ray Train run's checkpoint folders (``folder``: the name Train gave it)."""
    return storage.join(train_run_dir(train_storage_dir, run_name), folder)


def train_snapshot(train_storage_dir: str, run_name: str) -> str:
    """Ray Train's record of a run's checkpoints, in its folder."""
    return storage.join(train_run_dir(train_storage_dir, run_name), TRAIN_SNAPSHOT)


def record_dirs(run_dir: str, trial_id: str) -> list[str]:
    """Every whole evaluation record folder of a trial during the sweep (one with its eval.json: a write cut
    short by a crash or a full disk leaves none), by epoch, each followed by its sampling settings' folders
    (relative to the run directory, "/"-separated)."""
    out = []
    for name in storage.list_dir(trial_dir(run_dir, trial_id)):
        relative = f"artifacts/{trial_id}/{name}"
        if name.startswith("epoch_") and storage.exists(storage.join(run_dir, relative, EVAL_RECORD)):
            out.append(relative)
            out += [f"{relative}/{SAMPLING}/{s}" for s in storage.list_dir(storage.join(run_dir, relative, SAMPLING))
                    if storage.exists(storage.join(run_dir, relative, SAMPLING, s, EVAL_RECORD))]
    return out


def record_epoch(relative: str) -> int:
    """The epoch of a record folder from record_dirs ("artifacts/<trial>/epoch_0002[/sampling/...]" -> 2)."""
    return int(relative.split("/")[2].removeprefix("epoch_"))


def finalist_records(run_dir: str, trial_id: str) -> list[str]:
    """The finalist record folders of a trial (its own sampler first, then the sampling sweep), relative to
    the run directory; [] if the trial was not scored as a finalist (or its scoring did not finish)."""
    relative = f"finalists/{trial_id}"
    if not storage.exists(storage.join(run_dir, relative, EVAL_RECORD)):
        return []
    return [relative] + [f"{relative}/{SAMPLING}/{s}"
                         for s in storage.list_dir(storage.join(run_dir, relative, SAMPLING))]


def budget_checkpoint(run_dir: str, trial_id: str, epoch: int) -> str:
    """The kept checkpoint folder of a smaller epoch budget read off the trial (harness/budgets.py), holding
    CHECKPOINT_FILE like Ray Train's (whose folders rotate)."""
    return storage.join(trial_dir(run_dir, trial_id), f"budget_{epoch:04d}")


def best_dir(run_dir: str, trial_id: str) -> str:
    """The trial's best evaluated checkpoints (harness/best.py): their copies and their index."""
    return storage.join(trial_dir(run_dir, trial_id), "best")


def best_index(run_dir: str, trial_id: str) -> str:
    """Which of the trial's evaluated epochs are kept as its best, and the best epoch of each budget:
    {"metric", "mode", "kept": [{"epoch", "value"}] best first, "budgets": {epoch budget: {"epoch", "value"}}}."""
    return storage.join(best_dir(run_dir, trial_id), "best.json")


def best_checkpoint(run_dir: str, trial_id: str, epoch: int) -> str:
    """The copy of the trial's checkpoint after ``epoch``, kept while it is among its best evaluated."""
    return storage.join(best_dir(run_dir, trial_id), f"epoch_{epoch:04d}")


def checkpoint_folders(run_dir: str, trial_id: str) -> list[str]:
    """The trial's checkpoint folders (each holding CHECKPOINT_FILE), in no meaningful order: those of its
    current Ray Train run (after a restart, the run that started from the restart's copy), else the copy it
    starts from; [] if none. Which is newest is read from inside them (run_folder/checkpoint.py): Train names
    its folders by the writing node's local time."""
    restarts = len(restart_records(run_dir, trial_id))
    folder = train_run_dir(train_storage(run_dir), train_run_name(trial_id, restarts))
    found = [storage.join(folder, n) for n in storage.list_dir(folder) if n.startswith(CHECKPOINT_PREFIX)
             and storage.exists(storage.join(folder, n, CHECKPOINT_FILE))]
    return found or ([restart_dir(run_dir, trial_id, restarts)] if restarts else [])


def train_run_name(trial_id: str, restarts: int) -> str:
    """The Ray Train run name (its folder under train_storage) of a trial after ``restarts`` restarts: the
    trial id, then "<trial id>-x<N>" for the run that starts from the N-th restart's copy (Train would
    otherwise resume the trial's own run)."""
    return trial_id if restarts == 0 else f"{trial_id}-x{restarts}"


def scheduler_dir(run_dir: str, trial_id: str) -> str:
    """What the sweep's scheduler keeps of a trial and does to it (harness/schedulers.py): the checkpoints it
    needs kept, and the trial's restarts (their records and the checkpoint copies they start from)."""
    return storage.join(trial_dir(run_dir, trial_id), "scheduler")


def scheduler_checkpoint(run_dir: str, trial_id: str, epoch: int) -> str:
    """The checkpoint folder the trial keeps at an epoch the scheduler asks for (what a restart of another
    trial may copy)."""
    return storage.join(scheduler_dir(run_dir, trial_id), f"epoch_{epoch:04d}")


def restart_dir(run_dir: str, trial_id: str, number: int) -> str:
    """The copy of a checkpoint (CHECKPOINT_FILE) the trial's ``number``-th restart starts from."""
    return storage.join(scheduler_dir(run_dir, trial_id), f"restart_{number:02d}")


def restart_record(run_dir: str, trial_id: str, number: int) -> str:
    """The record of the trial's ``number``-th restart, written after its copy is whole: {"after": {dotted
    path: value}, the settings the trial trains under from then; "epoch": the epoch of the copied
    checkpoint; "why": a line for the log; and the scheduler's own fields (what the report shows)}."""
    return storage.join(scheduler_dir(run_dir, trial_id), f"restart_{number:02d}.json")


def restart_records(run_dir: str, trial_id: str) -> list[str]:
    """The trial's restart records, oldest first."""
    folder = scheduler_dir(run_dir, trial_id)
    return [storage.join(folder, n) for n in storage.list_dir(folder) if n.startswith("restart_") and n.endswith(".json")]


def trials_holding(run_dir: str, name: str) -> list[str]:
    """The ids of the trials whose artifacts folder holds an entry ``name`` (finding folders older code made)."""
    artifacts = storage.join(run_dir, "artifacts")
    return [t for t in storage.list_dir(artifacts) if storage.exists(storage.join(artifacts, t, name))]


def default_cache_dir(storage_root: str) -> str:
    """The reference cache beside the runs."""
    return storage.join(storage_root, "cache")


def classifier_cache(cache_dir: str, data_name: str, fingerprint: str, config_key: str) -> str:
    """The evaluation classifier trained on one dataset with one recipe."""
    return storage.join(cache_dir, "classifiers", f"{data_name}-{fingerprint}-{config_key}.pt")


def features_cache(cache_dir: str, data_name: str, fingerprint: str, split: str, extractor_key: str) -> str:
    """One split's features in one extractor."""
    return storage.join(cache_dir, "features", f"{data_name}-{fingerprint}-{split}-{extractor_key}.pt")
