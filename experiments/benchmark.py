"""Benchmark every generator family on one dataset: each family's best local configuration (or, with
--sweeps, its script's whole search space) on the same data, scored by one shared evaluation, into one
results file and one report that compares them.

    python experiments/benchmark.py                       # ddpm, dcgan, fastgan and ddgan on 24 px faces
    python experiments/benchmark.py --smoke-test          # every family for seconds
    python experiments/benchmark.py --dataset fer2013 --data-root ~/data/fer2013.csv --image-size 32
    python experiments/benchmark.py --families dcgan,ddgan --sweeps   # each family's own sweep

Every flag (--dataset, --set, --epochs, cluster flags, ...) applies to each family's experiment; the
data and the evaluation are those of the DDPM profile, for all. The default fits a 2-core laptop: one
trial a family at a shortened budget (BEST below), its finalist scored with the whole suite except the
Inception metrics, whose 700 real and 4 x 700 generated images would cost 5 minutes more on the CPU
(--set eval.inception_at=finalists adds them).
"""

import argparse
import sys

import sweep_dcgan
import sweep_ddgan
import sweep_ddpm
import sweep_fastgan
from condgen_bench.harness.cli import run_experiment
from condgen_bench.harness.config import apply_overrides

SCRIPTS = {"ddpm": sweep_ddpm, "dcgan": sweep_dcgan, "fastgan": sweep_fastgan, "ddgan": sweep_ddgan}
# Each family's best setting in its script's measured sweep, at a budget that lets the four fit 15 minutes
# on 2 cores (the scripts' own budgets reach further: DDPM 69% at 13 epochs, DCGAN 76% at 30, FastGAN
# 72% at 100 epochs of 50 shots, DDGAN 39% at 12)
BEST = {
    "ddpm": {"model.lr": 2e-3, "train.epochs": 8},
    "dcgan": {"model.discriminator": "projection", "train.epochs": 20},
    # the few-shot profile on the whole shared split (3,500 faces, ten times its 50 shots a class)
    "fastgan": {"model.policy": "", "train.epochs": 6},
    "ddgan": {"model.x0_weight": 50.0, "train.epochs": 6},
}


def profiles(families: list[str], sweeps: bool = False):
    """Each family's local profile with the data and the evaluation made common (and, unless ``sweeps``,
    its BEST setting as the only trial), and its smoke test."""
    shared = sweep_ddpm.local_profile()
    configs, smokes = [], []
    for family in families:
        config = SCRIPTS[family].local_profile()
        if sweeps:
            if config.data.shots_per_class:  # a tenth of the few-shot epochs on ten times the images
                config.train.epochs = max(1, config.train.epochs // 10)
        else:
            config = apply_overrides(config, {**BEST[family], "sweep.space": {}, "sweep.scheduler": "fifo"})
        config.train.eval_every = 0
        config.data, config.eval = shared.data, shared.eval
        if not sweeps:
            config.eval.inception_at = "never"
        config.eval.sampling_sweep = {}  # a sampler sweep is a DDPM study (sweep_ddpm.py --preset sampling)
        configs.append(config)
        smoke = dict(SCRIPTS[family].SMOKE_TEST)
        smoke.pop("data.shots_per_class", None)  # one dataset for every family
        smokes.append({**smoke, "sweep.space": {"train.epochs": [1]}})
    return configs, smokes


if __name__ == "__main__":
    pick = argparse.ArgumentParser(add_help=False)
    pick.add_argument("--families", default=",".join(SCRIPTS), help="comma-separated, from " + ", ".join(SCRIPTS))
    pick.add_argument("--sweeps", action="store_true", help="each family's whole search space from its script")
    known, rest = pick.parse_known_args()
    families = [f.strip() for f in known.families.split(",") if f.strip()]
    unknown = sorted(set(families) - set(SCRIPTS))
    if unknown:
        sys.exit(f"unknown families {unknown}; valid: {sorted(SCRIPTS)}")
    configs, smokes = profiles(families, known.sweeps)
    sys.exit(run_experiment(configs, smokes, description=__doc__, argv=rest, name="benchmark"))
