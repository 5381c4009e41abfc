"""The command line every experiment script shares: cluster flags, sweep flags, --set overrides,
--smoke-test, --dry-run, --resume. A script passes its default config and its smoke-test overrides."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time

from condgen_bench.datasets import DatasetError
from condgen_bench.harness.config import ExperimentConfig, apply_overrides, to_dict
from condgen_bench.harness.search import extreme_values


def _value(text: str):
    """Parse a --set value as JSON where possible ("3", "1e-3", "[1, 2]", "null"), else keep the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """--help: the script's docstring as written (its example commands keep their lines), and "(default: X)"
    after a flag's help only where X is a real default: not None, not False (a flag not given), not an empty
    list or string."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("%(default)" in text or default is argparse.SUPPRESS or default is None or default is False
                or (isinstance(default, (str, list, tuple, dict)) and not default)):
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return text + " (default: %(default)s)"
        return text


def build_parser(description: str, presets: dict[str, dict] | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    if presets:
        p.add_argument("--preset", choices=sorted(presets), default=None,
                       help="a named study of this script (overrides applied before every other flag)")
    cluster = p.add_argument_group("cluster")
    cluster.add_argument("--address", default=None,
                         help="Ray address to join ('auto' or host:port; also RAY_ADDRESS); none: start a local Ray")
    cluster.add_argument("--storage-path", default=None,
                         help="where runs are written: a local folder, NFS, s3:// or gs:// (shared for multi-node); default ./runs")
    cluster.add_argument("--cache-dir", default=None,
                         help="the evaluation reference's cache (classifier, real features), shared by runs; "
                              "default <storage-path>/cache")
    cluster.add_argument("--workers-per-trial", type=int, default=None, help="Ray Train workers (DDP ranks) per trial")
    cluster.add_argument("--cpus-per-worker", type=float, default=None,
                         help="logical CPUs per worker (default: local: the machine shared out; cluster: 1)")
    cluster.add_argument("--gpus-per-worker", type=float, default=None,
                         help="GPUs per worker (0: CPU training; a fraction below 1 packs workers on one GPU: 0.25, "
                              "four small trials a GPU)")
    cluster.add_argument("--max-concurrent-trials", type=int, default=None, help="trials running at once")
    data = p.add_argument_group("data (docs/datasets.md)")
    data.add_argument("--dataset", default=None, help="synthetic_faces, fer2013, ckplus or imagefolder (data.name)")
    data.add_argument("--data-root", default=None,
                      help="the dataset's file or folder: fer2013.csv or FER2013's train/ test/ folders, the CK+48 "
                           "folder, an image folder root")
    data.add_argument("--classes", default=None, help="comma-separated class names to keep, e.g. neutral,fear,angry")
    data.add_argument("--shots-per-class", type=int, default=None,
                      help="keep K training images a class (seeded) for few-shot runs; test stays whole")
    data.add_argument("--image-size", type=int, default=None, help="resize images to this many px a side")
    evaluation = p.add_argument_group("evaluation (docs/evaluation.md)")
    evaluation.add_argument("--inception-weights", default=None, metavar="PATH",
                            help="torch-fidelity's Inception weights (weights-inception-2015-12-05-6726825d.pth) for "
                                 "Inception FID/KID/IS/precision-recall; default: the torch hub cache, else the "
                                 "offline network of the [fid] extra, else those metrics are recorded as missing")
    evaluation.add_argument("--inception-download", action="store_true", default=None,
                            help="let torch-fidelity download its Inception weights when they are not found")
    sweep = p.add_argument_group("sweep")
    sweep.add_argument("--name", default=None, help="experiment name: runs go to <storage-path>/<name>/<start time>-<hex>")
    sweep.add_argument("--lr", type=float, nargs="+", default=None, help="learning rates to sweep (model.lr)")
    sweep.add_argument("--epochs", type=int, nargs="+", default=None, help="epoch budgets to sweep (train.epochs)")
    sweep.add_argument("--search", choices=["grid", "random", "optuna"], default=None,
                       help="how points of sweep.space are drawn: every combination (grid), random draws, or "
                            "Optuna's TPE (the [optuna] extra); distributions such as "
                            "'loguniform(1e-4,1e-2)' need random or optuna")
    sweep.add_argument("--num-samples", type=int, default=None,
                       help="grid: repeats of every point, each with its own train.seed; random / optuna: points drawn")
    sweep.add_argument("--scheduler", choices=["fifo", "asha", "pbt"], default=None,
                       help="asha stops poor trials early on the sweep metric; pbt (population-based training) "
                            "has the worse trials take the better ones' weights and perturbed settings every "
                            "sweep.perturbation_interval epochs")
    sweep.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override any config field by its dotted path, e.g. --set model.unet.base_channels=32")
    run = p.add_argument_group("run")
    run.add_argument("--resume", nargs="?", const="latest", default=None, metavar="RUN_DIR",
                     help="continue an interrupted run in place, wherever its folder now is (default: the latest run of "
                          "this experiment)")
    run.add_argument("--allow-changes", nargs="+", default=None, metavar="KEY",
                     help="with --resume: apply these changed settings (model.*, train.*, eval.*; dotted paths, as "
                          "the refusal lists them) to every trial from its next epoch, recorded with that epoch")
    run.add_argument("--smoke-test", action="store_true", help="a seconds-long run: tiny data, network and budget")
    run.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    return p


def _merge(base: dict, extra: dict) -> dict:
    """Overrides ``extra`` on top of ``base``; their search spaces (sweep.space) are merged key by key."""
    out = {**base, **extra}
    if "sweep.space" in base and "sweep.space" in extra:
        out["sweep.space"] = {**base["sweep.space"], **extra["sweep.space"]}
    return out


def resolve(args: argparse.Namespace, config: ExperimentConfig, smoke: dict,
            presets: dict[str, dict] | None = None) -> ExperimentConfig:
    """Apply, in order: the preset, the smoke-test profile, the named flags, the --set overrides."""
    preset = getattr(args, "preset", None)
    overrides: dict = dict((presets or {})[preset]) if preset else {}
    if args.smoke_test:
        overrides = _merge(overrides, smoke)
    named = {
        "cluster.address": args.address, "cluster.storage_path": args.storage_path,
        "cluster.cache_dir": (os.path.abspath(os.path.expanduser(args.cache_dir))
                              if args.cache_dir and "://" not in args.cache_dir else args.cache_dir),
        "cluster.workers_per_trial": args.workers_per_trial, "cluster.cpus_per_worker": args.cpus_per_worker,
        "cluster.gpus_per_worker": args.gpus_per_worker, "sweep.max_concurrent_trials": args.max_concurrent_trials,
        "sweep.num_samples": args.num_samples, "sweep.scheduler": args.scheduler, "name": args.name,
        "sweep.search": args.search,
        "data.name": args.dataset, "data.shots_per_class": args.shots_per_class, "data.image_size": args.image_size,
        # absolute: the saved config must still find the data when resumed from another directory
        "data.data_root": os.path.abspath(os.path.expanduser(args.data_root)) if args.data_root else None,
        "data.classes": [name.strip() for name in args.classes.split(",") if name.strip()] if args.classes else None,
        "eval.inception_weights": (os.path.abspath(os.path.expanduser(args.inception_weights))
                                   if args.inception_weights else None),
        "eval.inception_download": args.inception_download,
    }
    overrides.update({k: v for k, v in named.items() if v is not None})
    space = dict(overrides.get("sweep.space", config.sweep.space))
    if args.lr:
        space["model.lr"] = args.lr
    if args.epochs:
        space["train.epochs"] = args.epochs
    overrides["sweep.space"] = space
    for item in args.overrides:
        if "=" not in item:
            raise SystemExit(f"--set takes KEY=VALUE, got {item!r}")
        key, text = item.split("=", 1)
        overrides[key.strip()] = _value(text)
    try:
        return apply_overrides(config, overrides)
    except (KeyError, ValueError, TypeError) as e:
        raise SystemExit(f"bad configuration: {e}") from None


def grid_points(config: ExperimentConfig) -> list[ExperimentConfig]:
    """Every point of the config's search space as a whole config (each distribution at its two ends),
    each checked as the trial will build it (a misspelt value in sweep.space fails here, not in a worker)."""
    keys = list(config.sweep.space)
    points = []
    # a distribution's two ends stand for it (harness/search.py)
    for values in itertools.product(*(extreme_values(config.sweep.space[k]) for k in keys)):
        point = dict(zip(keys, values))
        try:
            points.append(apply_overrides(config, point))
        except (KeyError, ValueError, TypeError) as e:
            raise SystemExit(f"bad configuration: the sweep.space point {point}: {e}") from None
    return points or [config]


def trial_count(config: ExperimentConfig) -> int:
    """Tune trials the sweep starts: a grid's points (epoch budgets read off one run count once) times its
    seeded repeats; num_samples draws for random and Optuna searches."""
    from condgen_bench.harness.budgets import folded_budgets

    if config.sweep.search != "grid":
        return config.sweep.num_samples
    folded = "train.epochs" if folded_budgets(config) else None
    points = 1
    for path, values in config.sweep.space.items():
        points *= 1 if path == folded else len(values)
    return points * config.sweep.num_samples


def describe_trials(config: ExperimentConfig, gpus: float | None = None) -> str:
    """One line for --dry-run: how many trials, and how many run at once; with GPU training, how many fit on
    ``gpus`` GPUs at once (the cluster's, where the dry run could count them; None: per GPU)."""
    from condgen_bench.harness.budgets import folded_budgets

    budgets = folded_budgets(config)
    concurrent = config.sweep.max_concurrent_trials
    at_once = (f"{concurrent} at a time" if concurrent else
               "on a cluster as many at a time as its CPUs and GPUs hold (sized when it starts), locally 1 at a time")
    line = (f"{config.name}: {trial_count(config)} trials ({config.sweep.search} search"
            + (f"; epoch budgets {budgets} read off one run each" if budgets else "") + f"), {at_once}")
    return line + (f"; {gpu_fit(config, gpus)}" if config.cluster.gpus_per_worker > 0 else "")


def gpu_fit(config: ExperimentConfig, gpus: float | None) -> str:
    """How many trials the GPUs hold at once: each trial takes workers_per_trial x gpus_per_worker GPUs (Ray
    packs fractions of a GPU onto one device), so ``gpus`` GPUs hold floor(gpus / that) trials (CPUs and
    max_concurrent_trials may hold fewer)."""
    per_trial = config.cluster.workers_per_trial * config.cluster.gpus_per_worker
    share = f"each trial takes {per_trial:g} GPU ({config.cluster.workers_per_trial} x {config.cluster.gpus_per_worker:g})"
    if gpus is None:
        per_gpu = int(1 / per_trial + 1e-9)
        return share + (f": {per_gpu} trials share a GPU" if per_gpu > 1 else ": a trial per GPU or more")
    return share + f": the cluster's {gpus:g} GPUs hold {int(gpus / per_trial + 1e-9)} at once"


def cluster_gpus(config: ExperimentConfig) -> float | None:
    """The GPUs of the cluster at ``cluster.address`` (joined for a moment, read-only), or of this machine
    for a local run; None where they cannot be counted."""
    if not config.cluster.address:
        from condgen_bench.models.accel import gpu_count

        return float(gpu_count()) or None
    try:
        import ray

        ray.init(address=config.cluster.address, logging_level="ERROR", log_to_driver=False)
        try:
            return float(ray.cluster_resources().get("GPU", 0.0))
        finally:
            ray.shutdown()
    except Exception:  # noqa: BLE001 - an unreachable cluster: the dry run says it per GPU instead
        return None


def check_all(config: ExperimentConfig, measure: bool = False) -> dict:
    """check_builds for every distinct network and data setting of the search space; with ``measure``, each
    one's costs on this machine (harness/estimate.py; else None), by point_key."""
    from condgen_bench.harness import estimate

    from condgen_bench.harness.evaluation.plan import sweep_metric_problem

    problem = sweep_metric_problem(config)
    if problem:
        raise SystemExit(f"{config.name}: {problem}")
    costs, measured = {}, {}
    for point in grid_points(config):
        key = point_key(point)
        if key not in costs:
            method, channels, classes = check_builds(point)
            # points whose networks are alike in size and sampler (learning rates, say) cost alike: measured once
            shape = json.dumps([point.method, tensor_elements(method.state_dict()), method.sampling_settings(),
                                point.train.batch_size, point.eval.batch_size], sort_keys=True, default=str)
            if measure and shape not in measured:
                measured[shape] = estimate.measure(method, point, channels, classes)
            costs[key] = measured.get(shape)
    return costs


def tensor_elements(state) -> int:
    """The number of tensor elements in a (nested) state dict: a network's size, weights and optimizer."""
    if isinstance(state, dict):
        return sum(tensor_elements(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(tensor_elements(v) for v in state)
    return state.numel() if hasattr(state, "numel") else 0


def point_key(point: ExperimentConfig) -> str:
    """What makes a point's network, data and costs differ from another's."""
    return json.dumps([point.method, to_dict(point.model), to_dict(point.data), point.train.seed,
                       point.train.batch_size, point.eval.sampling_sweep], sort_keys=True)


def check_builds(config: ExperimentConfig):
    """Build the method on a stand-in of the data (the config's channels, image size and classes; 7 classes
    where it names none) and take one training step on 2 random images, on the CPU: a misnamed setting or a
    network that does not fit the image size fails here, before Ray starts or anything is written; so does
    a sampling sweep over axes the method's sampler lacks. Returns (the method, channels, classes)."""
    import torch

    from condgen_bench.datasets.base import DatasetSpec
    from condgen_bench.harness.evaluation.scoring import sampling_grid
    from condgen_bench.models import build_method

    data = config.data
    channels = data.channels or (3 if data.name == "imagefolder" else 1)
    classes = tuple(data.classes or (f"class{i}" for i in range(7)))
    spec = DatasetSpec("stand-in", channels, data.image_size, classes, "stand-in")
    try:
        method = build_method(config.method, config.model, spec, device="cpu", seed=config.train.seed)
        images = torch.randint(0, 256, (2, channels, data.image_size, data.image_size), dtype=torch.uint8)
        method.train_step(images, torch.tensor([0, len(classes) - 1]))
        sampling_grid(method, config.eval.sampling_sweep)
        return method, channels, len(classes)
    except Exception as e:  # noqa: BLE001 - any failure here is a configuration the run could not use
        raise SystemExit(f"bad configuration: {config.name} ({config.method}) does not build and train on "
                         f"{channels}x{data.image_size}x{data.image_size} images: {type(e).__name__}: {e}") from None


def estimated_time(config: ExperimentConfig, costs: dict) -> str:
    """The --dry-run line of harness/estimate.py: the trials the sweep starts, each priced by its network's
    measured costs (``costs``: check_all's). Budgets read off one run count once, as that run; a random or
    Optuna draw is priced as the mean over the points its ranges' ends make."""
    from condgen_bench.harness import estimate
    from condgen_bench.harness.budgets import folded_budgets

    points = grid_points(config)
    if config.sweep.search != "grid":
        mean = estimate.Costs(*(sum(getattr(costs[point_key(p)], f) for p in points) / len(points)
                                for f in ("step_seconds", "sample_seconds")))
        trials = [(points[0], mean)] * config.sweep.num_samples
    else:
        budgets = folded_budgets(config)
        if budgets:  # one run per remaining point, to the largest budget, reading the smaller ones off it
            points = [p for p in points if p.train.epochs == budgets[-1]]
            for p in points:
                p.train.budgets = budgets[:-1]
        trials = [(p, costs[point_key(p)]) for p in points] * config.sweep.num_samples
    return estimate.describe(config, trials)


def run_experiment(config: ExperimentConfig | list[ExperimentConfig], smoke: dict | list[dict],
                   description: str = "", argv=None, presets: dict[str, dict] | None = None,
                   name: str | None = None) -> int:
    """Parse the command line, then print the config (--dry-run) or run the sweep. Returns an exit code.
    A list of configs (with a smoke-test profile each) is a benchmark: every flag applies to each, and
    they run into one run directory called ``name``. presets: {name: dotted overrides}, offered as --preset NAME."""
    args = build_parser(description, presets).parse_args(argv)
    if args.allow_changes and not args.resume:
        raise SystemExit("--allow-changes applies to --resume only: a new run takes any settings")
    if args.address is None and os.environ.get("RAY_ADDRESS"):
        args.address = os.environ["RAY_ADDRESS"]
    several = isinstance(config, list)
    configs, smokes = (config, smoke) if several else ([config], [smoke])
    resolved = [resolve(args, c, s, presets) for c, s in zip(configs, smokes)]
    costs = [check_all(c, measure=args.dry_run) for c in resolved]
    if args.dry_run:
        values = [to_dict(c) for c in resolved]
        print(json.dumps(values if several else values[0], indent=2))
        gpus = cluster_gpus(resolved[0]) if resolved[0].cluster.gpus_per_worker > 0 else None
        for c, measured in zip(resolved, costs):  # beside the config (stdout stays JSON)
            print(describe_trials(c, gpus), file=sys.stderr)
            print(f"{c.name}: {estimated_time(c, measured)}", file=sys.stderr)
        return 0
    from condgen_bench.harness.resume import ResumeChangeError
    from condgen_bench.harness.sweep import run_sweep  # imports Ray; not needed for --dry-run

    t0 = time.time()
    try:
        outcome = run_sweep(resolved if several else resolved[0], resume=args.resume, name=name,
                            allow_changes=args.allow_changes)
    except (DatasetError, ResumeChangeError) as e:  # bad input data, a refused resume: say what, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"\n{outcome.num_rows} result rows in {outcome.results_path}")
    print(f"report: {outcome.report_path}")
    print(f"wall time: {time.time() - t0:.0f} s")
    return 0
