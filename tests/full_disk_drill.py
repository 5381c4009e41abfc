"""Run by tests/test_drills.py inside a mount namespace, with a small tmpfs over each of two folders (a real
full disk): the results write, and Ray Train's copy of a checkpoint into its storage, each run out of
space. Prints one JSON object: what each left behind and what the harness made of it.

argv: the results disk's folder, the checkpoint disk's folder."""

import json
import os
import sys
import tempfile

import pandas as pd
import pyarrow.fs as pafs
import torch
from ray.train import Checkpoint
from ray.train.v2._internal.execution.storage import _pyarrow_fs_copy_files

from condgen_bench.harness.results import write_results
from condgen_bench.harness.worker import train_checkpoint
from condgen_bench.reports.run_folder import layout
from condgen_bench.reports.inputs import load_inputs
from condgen_bench.reports.run_folder.checkpoint import newest_readable, trial_checkpoints

results_disk, checkpoint_disk = sys.argv[1:3]
out = {}

# the results: the first write fits, the second (incompressible text, larger than the disk) does not
run_dir = os.path.join(results_disk, "run")
write_results(pd.DataFrame({"trial_id": ["t0"], "epoch": [1], "loss": [0.5]}),
              pd.DataFrame({"trial_id": ["t0"], "epoch": [1]}), run_dir)
big = pd.DataFrame({"trial_id": [f"t{i}" for i in range(600)], "epoch": 1, "loss": 0.25,
                    "note": [os.urandom(1200).hex() for _ in range(600)]})  # ~1.4 MB of random hex
try:
    write_results(big, pd.DataFrame({"trial_id": ["t0"], "epoch": [2]}), run_dir)
    out["results_error"] = None
except OSError as error:
    out["results_error"], out["results_errno"] = str(error), error.errno
out["results_rows"] = len(load_inputs(run_dir).results)
out["run_files"] = sorted(os.listdir(run_dir))

# a checkpoint: Ray Train's copy of a worker's folder into storage (StorageContext.persist_current_checkpoint:
# create the folder, then pyarrow's copy_files, file by file, in place: not atomic)
trial_dir = os.path.join(checkpoint_disk, "train", "t0")


def persist(state: dict, name: str) -> str:
    local = tempfile.mkdtemp()
    torch.save(state, os.path.join(local, layout.CHECKPOINT_FILE))
    destination = os.path.join(trial_dir, name)
    pafs.LocalFileSystem().create_dir(destination)
    _pyarrow_fs_copy_files(source=local, destination=destination, source_filesystem=pafs.LocalFileSystem(),
                           destination_filesystem=pafs.LocalFileSystem())
    return destination


persist({"epoch": 1, "method": {"step": 4, "w": torch.zeros(16)}, "config": {}}, "checkpoint_2026-12-03_10-00-00.000000")
try:  # 2 MB of weights on a 1 MB disk
    half = persist({"epoch": 2, "method": {"step": 8, "w": torch.randn(500_000)}, "config": {}},
                   "checkpoint_2026-12-03_10-01-00.000000")
    out["copy_error"] = None
except OSError as error:
    out["copy_error"] = str(error)
    half = os.path.join(trial_dir, "checkpoint_2026-12-03_10-01-00.000000")
state_file = os.path.join(half, layout.CHECKPOINT_FILE)
out["half_copied_bytes"] = os.path.getsize(state_file) if os.path.exists(state_file) else None
lines = []
out["restart_epoch"] = train_checkpoint(Checkpoint(half)).load_or_older(log=lines.append)["epoch"]  # what a restart takes
out["restart_log"] = lines
lines = []
newest, state = newest_readable(trial_checkpoints(checkpoint_disk, "t0"), log=lines.append)
out["newest_readable"], out["newest_epoch"], out["newest_log"] = newest.folder, state["epoch"], lines
print(json.dumps(out))
