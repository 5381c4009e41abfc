"""Benchmark every generator family on one or more datasets: each family's best local configuration (or,
with --sweeps, its script's whole search space) on the same data, scored by one shared evaluation per
dataset, into one results file and one report with a leaderboard per dataset.

    python experiments/benchmark.py                       # every family on 24 px faces
    python experiments/benchmark.py --smoke-test          # every family for seconds
    python experiments/benchmark.py --dataset fer2013 --data-root ~/data/fer2013.csv --image-size 32
    python experiments/benchmark.py --dataset synthetic_faces --dataset imagefolder --data-root ~/data/folder
    python experiments/benchmark.py --families dcgan,ddgan --sweeps   # each family's own sweep

--dataset may be repeated, each followed by its own --data-root (synthetic_faces needs none): every family
runs on each dataset, as experiments named <family>-<dataset>. Every other flag (--set, --epochs,
--image-size, cluster flags, ...) applies to each experiment; the data settings and the evaluation are
those of the DDPM profile, for all. The default fits a 2-core laptop: one trial a family at a shortened
budget (each script's BENCHMARK), evaluated at three epochs along it (the points of the report's
Pareto front and of its leaderboard at equal training compute), its finalist scored at the best of them
with the whole suite except the Inception metrics, whose 700 real and 700 generated images a family would
cost minutes more on the CPU (--set eval.inception_at=finalists adds them). A family joins by registering
in models/ and having its experiments/sweep_<family>.py with a BENCHMARK setting.
"""

import argparse
import dataclasses
import importlib
import os
import sys
from pathlib import Path

from condgen_bench.harness.cli import run_experiment
from condgen_bench.harness.config import apply_overrides
from condgen_bench.models import METHODS

# Every registered family with a script beside this one (experiments/sweep_<family>.py), in the registry's
# order. Each script's BENCHMARK holds its best setting in its own measured sweep at a shortened budget
# (the five with three evaluations each: 19.4 minutes on 2 cores, nothing cached, between two runs of the
# code before the front's evaluations that took 21.8 and 24.2 minutes; docs/families.md; the scripts' own
# budgets reach further).
SCRIPTS = {family: importlib.import_module(f"sweep_{family}") for family in METHODS
           if (Path(__file__).resolve().parent / f"sweep_{family}.py").exists()}


def profiles(families: list[str], sweeps: bool = False):
    """Each family's local profile with the data and the evaluation made common (and, unless ``sweeps``,
    its script's BENCHMARK setting as the only trial), and its smoke test."""
    shared = SCRIPTS["ddpm"].local_profile()
    configs, smokes = [], []
    for family in families:
        config = SCRIPTS[family].local_profile()
        if sweeps:
            if config.data.shots_per_class:  # a tenth of the few-shot epochs on ten times the images
                config.train.epochs = max(1, config.train.epochs // 10)
        else:
            config = apply_overrides(config, {**SCRIPTS[family].BENCHMARK, "sweep.space": {}, "sweep.scheduler": "fifo"})
        # three evaluated checkpoints along each family's budget (sweeps: one, at the end): the points of the
        # Pareto front and of the leaderboard at equal training compute (a DDPM or flow evaluation, 224
        # samples at 30 network calls each, costs ~8 s on 2 cores)
        config.train.eval_every = 0 if sweeps else max(1, round(config.train.epochs / 3))
        config.data, config.eval = shared.data, shared.eval
        if not sweeps:
            config.eval.inception_at = "never"
        config.eval.sampling_sweep = {}  # a sampler sweep is each family's own study (its --preset sampling)
        configs.append(config)
        smoke = dict(SCRIPTS[family].SMOKE_TEST)
        smoke.pop("data.shots_per_class", None)  # one dataset for every family
        smokes.append({**smoke, "sweep.space": {"train.epochs": [1]}})
    return configs, smokes


class DatasetList(argparse.Action):
    """--dataset NAME appends a dataset; --data-root PATH sets the root of the last one named."""

    def __call__(self, parser, namespace, value, option_string=None):
        found = getattr(namespace, self.dest) or []
        if option_string == "--dataset":
            found.append({"data.name": value})
        elif not found or "data.data_root" in found[-1]:
            parser.error(f"--data-root {value}: give it after the --dataset it belongs to")
        else:
            found[-1]["data.data_root"] = os.path.abspath(os.path.expanduser(value))
        setattr(namespace, self.dest, found)


def on_datasets(configs, smokes, datasets: list[dict]):
    """Each (family) config once per dataset ({"data.name", "data.data_root"}), named <family>-<dataset>;
    the smoke profiles likewise."""
    out, out_smokes = [], []
    for entry in datasets:
        for config, smoke in zip(configs, smokes):
            data = dataclasses.replace(config.data, name=entry["data.name"],
                                       data_root=entry.get("data.data_root"))
            out.append(dataclasses.replace(config, name=f"{config.name}-{entry['data.name']}", data=data))
            out_smokes.append(smoke)
    return out, out_smokes


if __name__ == "__main__":
    pick = argparse.ArgumentParser(add_help=False)
    pick.add_argument("--families", default=",".join(SCRIPTS), help="comma-separated, from " + ", ".join(SCRIPTS))
    pick.add_argument("--sweeps", action="store_true", help="each family's whole search space from its script")
    pick.add_argument("--dataset", "--data-root", dest="datasets", action=DatasetList, default=None)
    known, rest = pick.parse_known_args()
    families = [f.strip() for f in known.families.split(",") if f.strip()]
    unknown = sorted(set(families) - set(SCRIPTS))
    if unknown:
        sys.exit(f"unknown families {unknown}; valid: {sorted(SCRIPTS)}")
    configs, smokes = profiles(families, known.sweeps)
    if known.datasets and len(known.datasets) > 1:
        configs, smokes = on_datasets(configs, smokes, known.datasets)
    elif known.datasets:  # one dataset: the experiments keep the families' names
        rest += [arg for key, flag in (("data.name", "--dataset"), ("data.data_root", "--data-root"))
                 if key in known.datasets[0] for arg in (flag, known.datasets[0][key])]
    sys.exit(run_experiment(configs, smokes, description=__doc__, argv=rest, name="benchmark"))
