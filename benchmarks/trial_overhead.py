"""What a Tune trial costs before and after its training: Ray's start of the trial's processes.

    python benchmarks/trial_overhead.py [--trials 3] [--cpus 2]

Runs ``--trials`` Tune trials one after another on a fresh local Ray, each a function that builds a
TorchTrainer (one worker) whose loop reports once and returns: the sweep's structure (harness/trial.py)
with no training. Printed per trial: from the start of the Tuner's run (the first trial) or the end of the
previous trial's fit to this trial's driver running, from the driver to the worker's loop (Ray Train's
controller, placement group and worker processes, each importing torch and Ray Train), and from the
worker's report to the fit returning; then the mean per trial, which harness/estimate.py uses as
TRIAL_START_SECONDS. Measured on the 2-core reference machine (2026-11-30):

| trial | to its driver | driver to worker loop | report to fit returned |
|---|---|---|---|
| 0 | 2.8 | 8.0 | 5.0 |
| 1 | 3.0 | 6.8 | 5.0 |
| 2 | 3.1 | 7.0 | 5.0 |

per trial 15.4 s. (The last column is Ray Train's controller noticing the loop's end: it looks every 2 s,
RAY_TRAIN_HEALTH_CHECK_INTERVAL_S; the tests set 0.2 s.)
"""

import argparse
import os
import tempfile
import time


import ray  # noqa: E402
import ray.train  # noqa: E402
import ray.tune  # noqa: E402
from ray.tune.integration.ray_train import TuneReportCallback  # noqa: E402

from condgen_bench.harness.sweep import start_local_ray  # noqa: E402
from condgen_bench.harness.trial import Trainer  # noqa: E402  (the sweep's TorchTrainer)


def worker(config: dict) -> None:
    """The training loop: note when it starts (in a file the driver reads), report once."""
    with open(config["note"], "w") as f:
        f.write(str(time.time()))
    ray.train.report({"epoch": 1})


def driver(config: dict) -> None:
    """The trial: note when it starts, run a one-worker TorchTrainer (the sweep's), note when its fit returns."""
    started = time.time()
    trial = ray.tune.get_context().get_trial_id()
    note = os.path.join(config["storage"], f"{trial}.started")
    trainer = Trainer(worker, train_loop_config={"note": note},
                      scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
                      run_config=ray.train.RunConfig(name=trial, storage_path=config["storage"],
                                                     callbacks=[TuneReportCallback()]))
    trainer.fit()
    with open(note) as f:
        worker_started = float(f.read())
    ray.tune.report({"driver_started": started, "worker_started": worker_started, "fit_done": time.time()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()
    start_local_ray(args.cpus, log_to_driver=False)
    folder = tempfile.mkdtemp(prefix="trial-overhead-")
    os.makedirs(os.path.join(folder, "train"))
    t0 = time.time()
    tuner = ray.tune.Tuner(ray.tune.with_resources(driver, {"CPU": 0.25}),
                           param_space={"storage": os.path.join(folder, "train"),
                                        "i": ray.tune.grid_search(list(range(args.trials)))},
                           tune_config=ray.tune.TuneConfig(max_concurrent_trials=1),
                           run_config=ray.tune.RunConfig(storage_path=os.path.join(folder, "tune"), name="overhead"))
    grid = tuner.fit()
    total = time.time() - t0
    rows = sorted((r.metrics for r in grid), key=lambda m: m["driver_started"])
    print(f"{args.trials} trials, {args.cpus} CPUs, one worker each; seconds\n")
    print("| trial | to its driver | driver to worker loop | report to fit returned |")
    print("|---|---|---|---|")
    previous = t0
    for i, m in enumerate(rows):
        print(f"| {i} | {m['driver_started'] - previous:.1f} | {m['worker_started'] - m['driver_started']:.1f} | "
              f"{m['fit_done'] - m['worker_started']:.1f} |")
        previous = m["fit_done"]
    print(f"\nper trial: {total / args.trials:.1f} s (the Tuner's run, {total:.1f} s, over the trials)")


if __name__ == "__main__":
    main()
