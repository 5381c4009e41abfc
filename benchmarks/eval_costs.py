"""What each evaluation stage costs, and that the per-trial stages do not grow with the training split.

    python benchmarks/eval_costs.py [--sizes 3500 28709] [--device cuda] [--threads 2] [--repeats 1]

For each training-split size, under the default local DDPM profile (experiments/sweep_ddpm.py): 3,500 is the
profile's own synthetic faces; any other size is the synthetic faces written as a FER2013 CSV by the export
tool (datasets/export.py) with that many Training rows, read back by the FER2013 loader at the profile's
image size. The network is built from the profile but not trained: no part's cost depends on the weights.

Printed per size: the one-off reference of a run (the evaluation classifier on the whole training split,
CAS's real ceiling, the real test features; once per dataset, then cached), and one evaluation at each stage
of harness/evaluation/plan.py: "tracking" (every evaluation epoch and ASHA rung of every trial), "trial_final" (each
trial's last epoch) and "finalist" (the best trial of each experiment, after the sweep), with the finalist's
parts. A run pays tracking x (evaluations) + trial_final x (trials) + finalist x (experiments x
eval.finalists) + the reference once.
"""

import argparse
import importlib.util
import math
import os
import sys
import tempfile
import time

import torch

from condgen_bench import datasets  # noqa: E402
from condgen_bench.datasets import DataConfig  # noqa: E402
from condgen_bench.datasets.base import FER_EMOTIONS  # noqa: E402
from condgen_bench.datasets.export import export  # noqa: E402
from condgen_bench.harness.evaluation.scoring import evaluate  # noqa: E402
from condgen_bench.harness.evaluation.plan import Capabilities, finalist_plan, trial_plan  # noqa: E402
from condgen_bench.harness.evaluation.reference import prepare_reference  # noqa: E402
from condgen_bench.models import build_method  # noqa: E402

FINALIST_PARTS = [  # (column, the record's metric that times it)
    ("sampling", "sample_seconds_per_image"),  # x the number of samples
    ("domain", "domain_metrics_seconds"),
    ("inception", "inception_metrics_seconds"),
    ("bpd", "bpd_seconds"),
    ("pool", "pool_sample_seconds"),
    ("cas", "cas_seconds"),
    ("aug", "aug_seconds"),
]
PROFILE_TRAIN = 3500  # the profile's own training split


def load_profile():
    experiments = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments")
    sys.path.insert(0, experiments)  # the scripts import their shared laptop profile, as when run
    spec = importlib.util.spec_from_file_location("sweep_ddpm", os.path.join(experiments, "sweep_ddpm.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.local_profile()


def load_data(config, train_images: int, folder: str):
    """The profile's data for its own size; else a FER2013 CSV of about ``train_images`` Training rows."""
    if train_images == PROFILE_TRAIN:
        return datasets.load(config.data)
    # the export puts 80% of the identities in Training (7 faces each), 10% in each test split
    identities = math.ceil(train_images / len(FER_EMOTIONS) / 0.8)
    path = os.path.join(folder, f"fer2013-{train_images}.csv")
    export("fer2013-csv", path, identities)
    return datasets.load(DataConfig(name="fer2013", data_root=path, image_size=config.data.image_size))


def seconds(record: dict, key: str) -> float:
    value = record["metrics"].get(key, float("nan"))
    return value * record["protocol"]["num_samples"] if key == "sample_seconds_per_image" else value


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[PROFILE_TRAIN, 28709],
                        help="training-split sizes (the FER2013 CSV's Training rows has 28,709)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_profile()
    ev = config.eval
    print(f"profile: ddpm local, {config.data.image_size} px; samples a class: {ev.samples_per_class} "
          f"(tracking, trial final), {ev.final_samples_per_class} (finalist); CAS pool cap {ev.cas_pool_per_class} a "
          f"class; bpd on {ev.bpd_images} images ({ev.bpd_t_samples} t draws); Inception at {ev.inception_at!r}; "
          f"device {args.device}, {args.threads} threads; seconds")
    print()
    header = ["training images", "test images", "reference (once)", "tracking", "trial final", "finalist",
              *(f"finalist: {name}" for name, _ in FINALIST_PARTS), "CAS pool"]
    print("| " + " | ".join(header) + " |")
    print("|---" * len(header) + "|")
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes:
            data = load_data(config, size, folder)
            t0 = time.time()
            ref = prepare_reference(data, ev, os.path.join(folder, f"cache-{size}"), log=lambda *_: None)
            once = time.time() - t0
            method = build_method(config.method, config.model, data.spec(), device=args.device)
            method.seed_noise(1)
            epochs = config.train.epochs
            caps = Capabilities.of(method, ref, data)
            plans = {"tracking": trial_plan(config, 2, caps), "trial_final": trial_plan(config, epochs, caps),
                     "finalist": finalist_plan(config, caps)}
            assert [p.stage for p in plans.values()] == list(plans), "the profile no longer tracks epoch 2"
            for _ in range(args.repeats):
                records = {name: evaluate(method, data, ref, ev, plan, device=args.device)[0]
                           for name, plan in plans.items()}
                final = records["finalist"]
                cells = [len(data.train), len(data.test), once,
                         *(r["metrics"]["eval_seconds"] for r in records.values()),
                         *(seconds(final, key) for _, key in FINALIST_PARTS)]
                print("| " + " | ".join(f"{c:.1f}" if isinstance(c, float) else str(c) for c in cells)
                      + f" | {final['protocol'].get('pool_samples')} |", flush=True)
    print()
    print("reference: the evaluation classifier (10 epochs on the whole training split), CAS's real ceiling and "
          "the real test split's domain and Inception features; cached by the dataset's fingerprint")


if __name__ == "__main__":
    main()
