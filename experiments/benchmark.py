"""Benchmark every generator family on one dataset: each family's sweep (its own search space, from its
sweep_*.py profile) on the same data, scored by one shared evaluation, into one results file and one
report that compares them.

    python experiments/benchmark.py                       # ddpm, dcgan, fastgan and ddgan on 24 px faces
    python experiments/benchmark.py --smoke-test          # every family for seconds
    python experiments/benchmark.py --dataset fer2013 --data-root ~/data/fer2013.csv --image-size 32
    python experiments/benchmark.py --families dcgan,ddgan

Every flag (--dataset, --set, --epochs, cluster flags, ...) applies to each family's experiment; the
data and the evaluation are those of the DDPM profile, for all.
"""

import argparse
import sys

import sweep_dcgan
import sweep_ddgan
import sweep_ddpm
import sweep_fastgan
from harness.cli import run_experiment

SCRIPTS = {"ddpm": sweep_ddpm, "dcgan": sweep_dcgan, "fastgan": sweep_fastgan, "ddgan": sweep_ddgan}


def profiles(families: list[str]):
    """Each family's local profile, with the data and the evaluation made common, and its smoke test."""
    shared = sweep_ddpm.local_profile()
    configs, smokes = [], []
    for family in families:
        config = SCRIPTS[family].local_profile()
        if config.data.shots_per_class:
            # a few-shot profile (fastgan: 50 a class, 100 epochs) on the whole shared split (3,500 faces, ten
            # times as many): a tenth of the epochs takes as many optimizer steps
            config.train.epochs = max(1, config.train.epochs // 10)
            config.train.eval_every = 0
        config.data, config.eval = shared.data, shared.eval
        config.eval.sampling_sweep = {}  # a sampler sweep is a DDPM study (sweep_ddpm.py --preset sampling)
        configs.append(config)
        smoke = dict(SCRIPTS[family].SMOKE_TEST)
        smoke.pop("data.shots_per_class", None)  # one dataset for every family
        smokes.append({**smoke, "sweep.space": {"train.epochs": [1]}})
    return configs, smokes


if __name__ == "__main__":
    pick = argparse.ArgumentParser(add_help=False)
    pick.add_argument("--families", default=",".join(SCRIPTS), help="comma-separated, from " + ", ".join(SCRIPTS))
    known, rest = pick.parse_known_args()
    families = [f.strip() for f in known.families.split(",") if f.strip()]
    unknown = sorted(set(families) - set(SCRIPTS))
    if unknown:
        sys.exit(f"unknown families {unknown}; valid: {sorted(SCRIPTS)}")
    configs, smokes = profiles(families)
    sys.exit(run_experiment(configs, smokes, description=__doc__, argv=rest, name="benchmark"))
