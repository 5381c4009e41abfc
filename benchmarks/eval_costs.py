"""What one evaluation costs: the time of each part of scoring one checkpoint under the default local
DDPM profile (experiments/sweep_ddpm.py), on this machine.

    python benchmarks/eval_costs.py [--device cuda] [--threads 2] [--repeats 2]

The network is built from the profile but not trained: no part's cost depends on the weights. The
one-off costs of a run (the evaluation classifier, the real test split's features per extractor) are
timed first, from an empty cache; then ``--repeats`` final-epoch evaluations (every metric, CAS and the
augmentation gain included) print one row each, so the spread of the times shows. A mid-training
evaluation costs the first four parts only (and the bound where eval.bpd_at is "every").
"""

import argparse
import importlib.util
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import datasets  # noqa: E402
from harness.evaluation import evaluate, likelihood_metrics, prepare_reference  # noqa: E402
from models import build_method  # noqa: E402

PARTS = [  # (column, the record's metric that times it, what it is)
    ("sampling", "sample_seconds_per_image", "the scored samples (seconds per image x count)"),
    ("domain", "domain_metrics_seconds", "domain classifier features + FID/KID/IS/PR + bootstrap"),
    ("inception", "inception_metrics_seconds", "Inception features + FID/KID/(IS)/PR + bootstrap"),
    ("bpd", "bpd_seconds", "bits/dim on the test images"),
    ("pool", "pool_sample_seconds", "the CAS / augmentation pool"),
    ("cas", "cas_seconds", "CAS classifier: train + test"),
    ("aug", "aug_seconds", "augmentation gain: 2 classifiers x seeds"),
    ("total", "eval_seconds", "the whole evaluation"),
]


def load_profile():
    spec = importlib.util.spec_from_file_location("sweep_ddpm", os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments", "sweep_ddpm.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.local_profile()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_profile()
    data = datasets.load(config.data)
    ev = config.eval
    print(f"profile: ddpm local, {data.channels}x{data.image_size}x{data.image_size}, {len(data.train)} train / "
          f"{len(data.test)} test, {ev.samples_per_class} samples a class, bpd on {ev.bpd_images} images "
          f"({ev.bpd_t_samples} t draws), device {args.device}, {args.threads} threads")
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.time()
        ref = prepare_reference(data, ev, cache, log=lambda *_: None)
        once = time.time() - t0
    inception = ref.inception.description if ref.inception else f"missing ({ref.inception_missing})"
    print(f"once per run: evaluation classifier + real features ({len(data.test)} test images, domain and "
          f"Inception) {once:.1f} s; Inception: {inception}")
    method = build_method(config.method, config.model, data.spec(), device=args.device)
    method.seed_noise(1)
    print()
    print("| repeat | " + " | ".join(name for name, _, _ in PARTS) + " |")
    print("|---" * (len(PARTS) + 1) + "|")
    for r in range(args.repeats):
        bound = likelihood_metrics(method, data, ev)
        record, _ = evaluate(method, data, ref, ev, device=args.device, likelihood=bound, final=True)
        m = record["metrics"]
        seconds = {name: m.get(key, float("nan")) for name, key, _ in PARTS}
        seconds["sampling"] *= record["protocol"]["num_samples"]
        seconds["total"] += bound[0].get("bpd_seconds", 0.0)  # the bound was computed outside evaluate
        print(f"| {r + 1} | " + " | ".join(f"{seconds[name]:.1f}" for name, _, _ in PARTS) + " |")
    print()
    for name, _, what in PARTS:
        print(f"{name}: {what}")
    print(f"pool: {record['protocol'].get('pool_samples')} images; CAS trains on {record['protocol'].get('cas_train_images')}")


if __name__ == "__main__":
    main()
