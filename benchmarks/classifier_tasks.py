"""A finalist's downstream classifiers (CAS over its seeds and the augmentation gain's real and mixed ones,
harness/evaluation/downstream.py) trained one after another in the scoring process against as one-CPU Ray
tasks beside each other (harness/finalists.py ClassifiersAsRayTasks, eval.classifier_tasks), in one process,
alternating, on the default local profile's data and recipe.

    python benchmarks/classifier_tasks.py [--repeats 2] [--cpus 2]

The pool stands in for generated images with real training images (no part's cost depends on them). The
first Ray call starts the task workers (they import torch); it is run once before the timing, so the table
is the tasks' best case. Measured on 2 cores (2026-12-04): CAS 26.6 s in the process against 28.2 s as
tasks, the gain 39.5 s against 33.1 s; in the default run, where a finalist's scoring starts the workers,
the gain took 41.9 s as tasks against 33.9 s in the process. The scoring keeps both in the process; the
augmentation study's 96 classifiers pay the start once and run as tasks (eval.classifier_tasks).
"""

import argparse
import time

import ray
import torch

from condgen_bench import datasets
from condgen_bench.harness.evaluation.downstream import augmentation_gain, classification_accuracy_score, pool_labels
from condgen_bench.harness.finalists import ClassifiersAsRayTasks
from eval_costs import load_profile  # beside this script: the default local DDPM profile


def pool(data, config) -> tuple[torch.Tensor, torch.Tensor]:
    """A stand-in pool: pool_labels' counts of real training images a class -> ([N, C, H, W] uint8, [N])."""
    labels = pool_labels(data, config)
    train = data.train
    picks = torch.cat([torch.nonzero(train.labels == c).flatten()[: int((labels == c).sum())]
                       for c in range(data.num_classes)])
    return train.images[picks], train.labels[picks]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cpus", type=int, default=2, help="Ray's CPUs (tasks at once)")
    args = parser.parse_args(argv)
    config = load_profile()
    data = datasets.load(config.data)
    x, y = pool(data, config.eval)
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    runners = {"in the process": None, "Ray tasks": ClassifiersAsRayTasks()}
    classification_accuracy_score(x[:70], y[:70], data, config.eval, runner=runners["Ray tasks"])  # start workers
    seconds = {name: {"cas": [], "aug": []} for name in runners}
    for _ in range(args.repeats):
        for name, runner in runners.items():
            t0 = time.time()
            classification_accuracy_score(x, y, data, config.eval, runner=runner)
            t1 = time.time()
            augmentation_gain(x, y, data, config.eval, runner=runner)
            seconds[name]["cas"].append(t1 - t0)
            seconds[name]["aug"].append(time.time() - t1)
    ray.shutdown()
    print(f"torch threads {torch.get_num_threads()}, Ray CPUs {args.cpus}, CAS seeds {config.eval.cas_seeds}, "
          f"augmentation seeds {config.eval.augment_seeds}")
    print("| runner | CAS s | augmentation gain s | both s |\n| --- | --- | --- | --- |")
    base = None
    for name, parts in seconds.items():
        cas, aug = min(parts["cas"]), min(parts["aug"])
        base = base or cas + aug
        print(f"| {name} | {cas:.1f} | {aug:.1f} | {cas + aug:.1f} ({base / (cas + aug):.2f}x) |")


if __name__ == "__main__":
    main()
