"""The typed config: round trips, overrides, the command line, --dry-run."""

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from condgen_bench.harness.cli import build_parser, resolve
from condgen_bench.harness.config import (ExperimentConfig, SweepConfig, TrainConfig, apply_overrides, config_hash,
                                          experiment_from_dict, flatten, from_dict, to_dict)
from condgen_bench.models.ddpm import DDPMConfig
from condgen_bench.models.unet import UNetConfig

from scripts import ROOT, SCRIPTS, run_main


def test_round_trip_through_a_plain_dict():
    config = ExperimentConfig(model=DDPMConfig(unet=UNetConfig(channel_mult=(1, 2, 4)), lr=3e-3))
    values = json.loads(json.dumps(to_dict(config)))
    again = experiment_from_dict(values)
    assert again == config
    assert again.model.unet.channel_mult == (1, 2, 4)  # tuples come back as tuples
    assert config_hash(again) == config_hash(config)


def test_a_saved_config_with_the_old_name_of_classifier_tasks_still_loads():
    """eval.augment_study_tasks (before it covered CAS and the augmentation gain) reads as classifier_tasks:
    a run saved before the rename resumes and its finalists score."""
    values = to_dict(ExperimentConfig())
    values["eval"] = {("augment_study_tasks" if k == "classifier_tasks" else k): v for k, v in values["eval"].items()}
    values["eval"]["augment_study_tasks"] = False
    assert experiment_from_dict(values).eval.classifier_tasks is False


def test_hash_ignores_the_cluster_but_not_the_model():
    config = ExperimentConfig()
    assert config_hash(apply_overrides(config, {"cluster.workers_per_trial": 4})) == config_hash(config)
    assert config_hash(apply_overrides(config, {"model.lr": 1.0})) != config_hash(config)


def test_unknown_fields_fail_with_the_valid_names():
    with pytest.raises(ValueError, match="base_channels"):
        from_dict(UNetConfig, {"base_channel": 3})
    with pytest.raises(KeyError, match="model.unet.widht"):
        apply_overrides(ExperimentConfig(), {"model.unet.widht": 3})


def test_flatten_uses_dotted_paths():
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": 2}) == {"a.b": 1, "a.c.d": [1, 2], "e": 2}


def test_command_line_flags_smoke_profile_and_set_overrides():
    base = ExperimentConfig()
    args = build_parser("x").parse_args(["--smoke-test", "--lr", "0.1", "0.2", "--epochs", "1", "3",
                                         "--workers-per-trial", "2", "--cpus-per-worker", "0.5",
                                         "--set", "model.unet.base_channels=4", "--set", "data.image_size=20"])
    config = resolve(args, base, smoke={"train.batch_size": 3})
    assert config.sweep.space == {"model.lr": [0.1, 0.2], "train.epochs": [1, 3]}
    assert config.cluster.workers_per_trial == 2 and config.cluster.cpus_per_worker == 0.5
    assert config.model.unet.base_channels == 4 and config.data.image_size == 20
    assert config.train.batch_size == 3


def test_bad_override_exits_with_a_message():
    args = build_parser("x").parse_args(["--set", "model.nope=1"])
    with pytest.raises(SystemExit, match="model.nope"):
        resolve(args, ExperimentConfig(), smoke={})


def test_sweep_script_dry_run_prints_the_resolved_config():
    out = subprocess.run([sys.executable, str(ROOT / "experiments" / "sweep_ddpm.py"), "--dry-run",
                          "--set", "train.epochs=7"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    config = json.loads(out.stdout)
    assert config["method"] == "ddpm" and config["train"]["epochs"] == 7
    assert "model.lr" in config["sweep"]["space"] and "train.epochs" in config["sweep"]["space"]
    # beside the config: the trials and the wall time priced with what the dry run measured (harness/estimate.py)
    assert "ddpm: 2 trials" in out.stderr and "ddpm: estimated wall time about " in out.stderr


def test_data_flags(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = build_parser("x").parse_args(["--dataset", "fer2013", "--data-root", "data/fer2013.csv",
                                         "--classes", "neutral, fear,angry", "--shots-per-class", "10",
                                         "--image-size", "32"])
    data = resolve(args, ExperimentConfig(), {}).data
    assert data.name == "fer2013" and data.data_root == str(tmp_path / "data" / "fer2013.csv")
    assert data.classes == ["neutral", "fear", "angry"] and data.shots_per_class == 10 and data.image_size == 32


def test_cache_dir_flag_is_absolute_and_a_uri_is_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = build_parser("x").parse_args(["--cache-dir", "shared/cache"])
    assert resolve(args, ExperimentConfig(), {}).cluster.cache_dir == str(tmp_path / "shared" / "cache")
    args = build_parser("x").parse_args(["--cache-dir", "s3://bucket/cache"])
    assert resolve(args, ExperimentConfig(), {}).cluster.cache_dir == "s3://bucket/cache"


def test_reports_import_nothing_of_the_harness():
    """The run folder (reports/run_folder/) lives in reports/, below the harness that writes runs: no
    harness -> reports -> harness cycle."""
    import ast

    paths = sorted((ROOT / "reports").rglob("*.py"))
    assert ROOT / "reports" / "run_folder" / "checkpoint.py" in paths
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n == "condgen_bench.harness" or n.startswith("condgen_bench.harness.") or
                           (n == "condgen_bench" and "harness" in [a.name for a in node.names]) for n in names), path


def test_bad_data_fails_before_anything_is_written(tmp_path, capsys):
    from condgen_bench.harness.cli import run_experiment

    runs = tmp_path / "runs"
    code = run_experiment(ExperimentConfig(), {}, argv=["--dataset", "ckplus", "--data-root", str(tmp_path / "ck"),
                                                       "--storage-path", str(runs)])
    assert code == 2
    assert f"error: {tmp_path / 'ck'}: no such file or folder" in capsys.readouterr().err
    assert not runs.exists()


def test_resume_refuses_changed_data(tmp_path):
    from condgen_bench import datasets
    from condgen_bench.harness.sweep import check_same_data

    data = datasets.load(datasets.DataConfig(image_size=16, num_train=14, num_test=14))
    (tmp_path / "dataset_summary.json").write_text(json.dumps({"fingerprint": data.fingerprint}))
    check_same_data(data, str(tmp_path), None)
    other = datasets.load(datasets.DataConfig(image_size=16, num_train=14, num_test=14, seed=1))
    with pytest.raises(datasets.DatasetError, match="the data changed since"):
        check_same_data(other, str(tmp_path), None)
    # a run over several datasets: each is checked against its own entry
    (tmp_path / "dataset_summary.json").write_text(json.dumps({"datasets": [
        {"name": "fer2013", "fingerprint": "x"}, {"name": data.name, "fingerprint": data.fingerprint}]}))
    check_same_data(data, str(tmp_path), None)
    with pytest.raises(datasets.DatasetError, match="the data changed since"):
        check_same_data(other, str(tmp_path), None)
    (tmp_path / "dataset_summary.json").write_text(json.dumps({"datasets": [{"name": "fer2013", "fingerprint": "x"}]}))
    with pytest.raises(datasets.DatasetError, match=f"has no dataset {data.name}"):
        check_same_data(data, str(tmp_path), None)


def test_sampling_sweep_grid_and_names():
    """The grid runs over the method's own sampler axes: DDPM's four, a GAN's none."""
    from condgen_bench.datasets.base import DatasetSpec
    from condgen_bench.harness.evaluation.scoring import sampling_grid, setting_key
    from condgen_bench.models import build_method
    from condgen_bench.models.dcgan import DCGANConfig
    from condgen_bench.models.ddpm import DDPMConfig

    spec = DatasetSpec("x", 1, 16, tuple("abc"), "x")
    ddpm = build_method("ddpm", DDPMConfig(unet=UNetConfig(base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                                                          attention_resolutions=())), spec)
    grid = sampling_grid(ddpm, {"eta": [0.0, 1.0], "steps": [5, 50], "sampler": ["ddim", "ddpm"]})
    # the method's axis order; ancestral sampling has no eta: its two eta settings are one, named without it
    assert len(grid) == 4 + 2 and {"sampler": "ddpm", "steps": 5} in grid
    assert list(grid[0]) == ["sampler", "steps", "eta"]
    assert setting_key(grid[0]) == "ddim-steps5-eta0"
    assert setting_key({"sampler": "ddim", "steps": 10, "guidance": 2.0}) == "ddim-steps10-guidance2"
    assert setting_key({}) == "default" and sampling_grid(ddpm, {}) == [{}]
    with pytest.raises(ValueError, match=r"unknown sampling sweep axes \['step'\] for ddpm"):
        sampling_grid(ddpm, {"step": [5]})
    dcgan = build_method("dcgan", DCGANConfig(ngf=4, ndf=4), spec)
    assert sampling_grid(dcgan, {}) == [{}]
    with pytest.raises(ValueError, match="for dcgan; its sampler's axes: none"):
        sampling_grid(dcgan, {"steps": [5]})


def test_presets_apply_first_and_merge_with_the_smoke_test():
    presets = {"study": {"sweep.space": {"model.diffusion.prediction": ["eps", "v"]}, "eval.bpd_at": "every"}}
    args = build_parser("x", presets).parse_args(["--preset", "study", "--smoke-test", "--set", "eval.bpd_images=3"])
    config = resolve(args, ExperimentConfig(), {"sweep.space": {"train.epochs": [1]}, "eval.bpd_images": 8}, presets)
    assert config.sweep.space == {"model.diffusion.prediction": ["eps", "v"], "train.epochs": [1]}
    assert config.eval.bpd_at == "every" and config.eval.bpd_images == 3
    with pytest.raises(SystemExit, match="bpd_at"):
        resolve(build_parser("x").parse_args(["--set", "eval.bpd_at=sometimes"]), ExperimentConfig(), {})


def test_inception_flags_reach_the_eval_config_with_an_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = build_parser("x").parse_args(["--inception-weights", "w.pth", "--inception-download"])
    config = resolve(args, ExperimentConfig(), {})
    assert config.eval.inception_weights == str(tmp_path / "w.pth") and config.eval.inception_download is True
    plain = resolve(build_parser("x").parse_args([]), ExperimentConfig(), {})
    assert plain.eval.inception_weights is None and plain.eval.inception_download is False
    with pytest.raises(SystemExit, match="inception_at"):
        resolve(build_parser("x").parse_args(["--set", "eval.inception_at=sometimes"]), ExperimentConfig(), {})


def test_max_failures_defaults_to_three_on_a_cluster_and_zero_locally():
    from condgen_bench.harness.config import ClusterConfig
    from condgen_bench.harness.sweep import default_max_failures

    assert default_max_failures(ClusterConfig()) == 0
    assert default_max_failures(ClusterConfig(address="auto")) == 3
    assert default_max_failures(ClusterConfig(address="auto", max_failures=0)) == 0


def test_a_resume_names_the_cluster_settings_it_changes():
    from condgen_bench.harness.config import ClusterConfig, to_dict
    from condgen_bench.harness.sweep import cluster_changes

    saved = to_dict(ClusterConfig(workers_per_trial=1, max_failures=0))
    now = to_dict(ClusterConfig(workers_per_trial=2, max_failures=3))
    assert cluster_changes(saved, now) == ["workers_per_trial: 1 -> 2", "max_failures: 0 -> 3"]
    assert cluster_changes(saved, saved) == []


def _dry_run(script: Path, *argv: str, capsys=None) -> str:
    """Run an experiment script's main with ``--dry-run`` in this process; returns what it printed (raises
    SystemExit where it exits with a failure)."""
    code = run_main(script, ["--dry-run", *argv])
    if code:
        raise SystemExit(code)
    return capsys.readouterr().out if capsys else ""


def _presets():
    import runpy

    cases = [(script, None) for script in SCRIPTS]
    sys.path.insert(0, str(ROOT / "experiments"))  # benchmark.py imports the other scripts
    try:
        for script in SCRIPTS:
            cases += [(script, name) for name in runpy.run_path(str(script)).get("PRESETS", {})]
    finally:
        sys.path.remove(str(ROOT / "experiments"))
    return cases


@pytest.mark.parametrize("script,preset", _presets(), ids=lambda v: getattr(v, "stem", v))
def test_dry_run_of_every_script_and_preset_builds_every_point_of_its_space(script, preset, capsys):
    out = _dry_run(script, *(["--preset", preset] if preset else []), capsys=capsys)
    values = json.loads(out)
    for config in values if isinstance(values, list) else [values]:
        assert config["method"] and config["sweep"]["space"] is not None


BAD_SETTINGS = [  # (--set, the message it must give)
    ("train.epochs=abc", "train.epochs: expected int, got 'abc' (str)"),
    ("model.lr=fast", "model.lr: expected float, got 'fast' (str)"),
    ("train.compile=1", "train.compile: expected bool, got 1 (int)"),
    ('model.unet.channel_mult=[1, "x"]', "model.unet.channel_mult[1]: expected int, got 'x' (str)"),
    ("cluster.max_failures=1.5", "cluster.max_failures: expected int | None, got 1.5 (float)"),
    ("model.sampler=euler", "model: unknown sampler 'euler'; valid: ['ddim', 'ddpm']"),
    ("model.diffusion.prediction=noise", "unknown diffusion.prediction 'noise'; valid: ['eps', 'x0', 'v']"),
    ("model.diffusion.schedule=sigmoid", "unknown diffusion.schedule 'sigmoid'"),
    ("sweep.mode=maximum", "sweep: unknown mode 'maximum'; valid: ['max', 'min']"),
    ("sweep.scheduler=hyperband", "sweep: unknown scheduler 'hyperband'"),
    ("data.crop=square", "data: unknown crop 'square'"),
    ("data.name=cifar", "data: unknown dataset 'cifar'"),
    ("eval.inception_at=sometimes", "unknown eval.inception_at 'sometimes'"),
    ("train.precision=fp8", "unknown train.precision 'fp8'"),
    ("model.nonsense=1", "no config field 'model.nonsense'"),
    ('sweep.space={"model.sampler": ["ddim", "eular"]}', "the sweep.space point {'model.sampler': 'eular'}"),
    ("data.image_size=25 --family dcgan", "does not build and train on 1x25x25 images: ValueError: image size 25"),
    ('eval.sampling_sweep={"step": [5]}', "unknown sampling sweep axes ['step'] for ddpm"),
    ('eval.sampling_sweep={"steps": [5]} --family dcgan', "for dcgan; its sampler's axes: none"),
]


@pytest.mark.parametrize("setting,message", BAD_SETTINGS, ids=[s for s, _ in BAD_SETTINGS])
def test_a_bad_setting_fails_the_dry_run_with_its_key_value_and_type(setting, message):
    setting, _, family = setting.partition(" --family ")
    script = ROOT / "experiments" / f"sweep_{family or 'ddpm'}.py"
    with pytest.raises(SystemExit) as end:
        _dry_run(script, "--set", setting)
    assert message in str(end.value.code), end.value.code


def test_benchmark_takes_several_datasets_each_with_its_root(tmp_path, capsys):
    """--dataset repeated, each followed by its --data-root: every family on each dataset, named
    <family>-<dataset>; a --data-root before any --dataset is refused."""
    script = ROOT / "experiments" / "benchmark.py"
    out = _dry_run(script, "--families", "dcgan,ddpm", "--dataset", "synthetic_faces", "--dataset", "imagefolder",
                   "--data-root", str(tmp_path / "folder"), capsys=capsys)
    configs = json.loads(out)
    assert [c["name"] for c in configs] == ["dcgan-synthetic_faces", "ddpm-synthetic_faces", "dcgan-imagefolder",
                                            "ddpm-imagefolder"]
    assert [c["data"]["data_root"] for c in configs] == [None, None, str(tmp_path / "folder"), str(tmp_path / "folder")]
    one = json.loads(_dry_run(script, "--families", "dcgan", "--dataset", "imagefolder", "--data-root",
                              str(tmp_path), capsys=capsys))  # one dataset: the families' own names
    assert [(c["name"], c["data"]["name"], c["data"]["data_root"]) for c in one] == [("dcgan", "imagefolder",
                                                                                     str(tmp_path))]
    with pytest.raises(SystemExit):
        _dry_run(script, "--data-root", str(tmp_path), "--dataset", "imagefolder")
    assert "give it after the --dataset it belongs to" in capsys.readouterr().err


def test_the_benchmark_evaluates_each_family_along_its_budget(capsys):
    """The default benchmark evaluates each family at three epochs of its budget (the front's points and the
    equal-compute view's), and scores its finalist at the best of them; --sweeps at the end only."""
    script = ROOT / "experiments" / "benchmark.py"
    for config in json.loads(_dry_run(script, capsys=capsys)):
        epochs, every = config["train"]["epochs"], config["train"]["eval_every"]
        assert len(set(range(every, epochs + 1, every)) | {epochs}) == 3, (config["name"], epochs, every)
        assert config["eval"]["keep_best"] >= 1
    swept = json.loads(_dry_run(script, "--families", "dcgan", "--sweeps", capsys=capsys))
    assert [c["train"]["eval_every"] for c in swept] == [0]


def test_a_run_shares_the_cluster_and_holds_each_dataset_once():
    """Experiments of one run may differ in data (a benchmark over datasets), each dataset once; those on
    one dataset share the evaluation classifier; all share the cluster; names differ."""
    from condgen_bench.harness.sweep import check_shared, dataset_groups

    faces = ExperimentConfig(name="a")
    folder = dataclasses.replace(faces, name="b", data=dataclasses.replace(faces.data, name="imagefolder",
                                                                           data_root="/x"))
    check_shared([faces, folder])
    assert [[c.name for c in g] for g in dataset_groups([faces, folder, dataclasses.replace(faces, name="c")])] == \
        [["a", "c"], ["b"]]
    other_folder = dataclasses.replace(folder, name="d", data=dataclasses.replace(folder.data, data_root="/y"))
    with pytest.raises(ValueError, match="one run holds each dataset once"):
        check_shared([faces, folder, other_folder])
    with pytest.raises(ValueError, match="differ in cluster"):
        check_shared([faces, dataclasses.replace(folder, cluster=dataclasses.replace(faces.cluster, num_cpus=3))])
    with pytest.raises(ValueError, match="names must differ"):
        check_shared([faces, dataclasses.replace(folder, name="a")])


def test_search_spaces_take_distributions_and_say_what_is_wrong():
    from condgen_bench.harness.search import Distribution, check_space, parse

    assert parse("loguniform(1e-4, 1e-2)") == Distribution("loguniform", 1e-4, 1e-2)
    assert parse(" randint(2,8) ").ends() == [2, 7] and parse([1, 2]) == [1, 2]
    for text, message in [("lognormal(1, 2)", "unknown distribution 'lognormal'"),
                          ("uniform(2, 1)", "low < high"), ("loguniform(0, 1)", "loguniform needs low > 0"),
                          ("randint(1.5, 4)", "integer bounds"), ("uniform(a, 1)", "bounds must be numbers"),
                          ("1e-3", "expected a list of values or a distribution")]:
        with pytest.raises(ValueError, match=re.escape(message)):
            parse(text, "sweep.space.model.lr")
    with pytest.raises(ValueError, match="a distribution needs sweep.search random or optuna"):
        check_space({"model.lr": "uniform(0.1, 0.2)"}, "grid")
    args = build_parser("x").parse_args(["--search", "random", "--num-samples", "4", "--set",
                                         'sweep.space={"model.lr": "loguniform(1e-4,1e-2)"}'])
    config = resolve(args, ExperimentConfig(), {})
    assert (config.sweep.search, config.sweep.num_samples) == ("random", 4)
    with pytest.raises(SystemExit, match="a distribution needs sweep.search random"):
        resolve(build_parser("x").parse_args(["--set", 'sweep.space={"model.lr": "uniform(0.1,0.2)"}']),
                ExperimentConfig(), {})


def test_the_tune_space_of_each_search_and_seeded_repeats_of_a_grid():
    from ray.tune.search.sample import Categorical, Float

    from condgen_bench.harness.schedulers import scheduler_of
    from condgen_bench.harness.search import search_algorithm
    from condgen_bench.harness.sweep import param_space, tune_samples

    grid = ExperimentConfig(train=TrainConfig(seed=7), sweep=SweepConfig(space={"model.lr": [1e-3, 2e-3]},
                                                                        num_samples=3))
    values = param_space(grid)  # 2 learning rates x 3 seeds, one Tune sample
    assert values["model"]["lr"] == {"grid_search": [1e-3, 2e-3]} and values["train"]["seed"] == {"grid_search": [7, 8, 9]}
    assert tune_samples(grid) == 1 and search_algorithm(grid.sweep, 1) is None
    drawn = ExperimentConfig(sweep=SweepConfig(space={"model.lr": "loguniform(1e-4,1e-2)", "model.warmup_steps": [0, 10]},
                                               search="random", num_samples=4))
    values = param_space(drawn)
    assert isinstance(values["model"]["lr"], Float) and isinstance(values["model"]["warmup_steps"], Categorical)
    assert tune_samples(drawn) == 4 and values["train"]["seed"] == 0
    # it keeps the concurrency itself (Tune ignores TuneConfig's)
    generator = search_algorithm(drawn.sweep, scheduler_of(drawn).trial_cap(drawn.sweep))
    assert type(generator).__name__ == "BasicVariantGenerator" and generator.max_concurrent == 1
    optuna = dataclasses.replace(drawn.sweep, search="optuna", metric="fid_domain", mode="min")
    searcher = search_algorithm(optuna, 1)
    assert type(searcher).__name__ == "OptunaSearch" and (searcher.metric, searcher.mode) == ("fid_domain", "min")


def test_trials_and_concurrency_follow_the_space_and_the_cluster(capsys):
    from condgen_bench.harness.cli import describe_trials, trial_count
    from condgen_bench.harness.config import ClusterConfig
    from condgen_bench.harness.sweep import concurrency

    default = ExperimentConfig(sweep=SweepConfig(space={"model.lr": [1e-3, 2e-3], "train.epochs": [2, 13]},
                                                 num_samples=2))
    assert trial_count(default) == 4  # 2 learning rates x 2 seeds; the budgets read off one run each
    unfolded = dataclasses.replace(default, sweep=dataclasses.replace(default.sweep, fold_budgets=False))
    assert trial_count(unfolded) == 8
    assert "4 trials (grid search; epoch budgets [2, 13] read off one run each), on a cluster as many" in \
        describe_trials(default)
    assert concurrency(default, {"CPU": 2.0}) == 1  # locally one trial at a time
    cluster = ClusterConfig(address="auto", workers_per_trial=4, cpus_per_worker=1.0)
    assert concurrency(dataclasses.replace(default, cluster=cluster), {"CPU": 16.0}) == 3  # 4.25 CPUs a trial
    gpus = dataclasses.replace(cluster, gpus_per_worker=1.0)
    assert concurrency(dataclasses.replace(default, cluster=gpus), {"CPU": 64.0, "GPU": 8.0}) == 2
    assert concurrency(dataclasses.replace(default, cluster=gpus), {"CPU": 64.0, "GPU": 2.0}) == 1


@pytest.mark.parametrize("metric, where", [("cas", "finalists only (eval.finalists)"),
                                           ("fid_inception", "finalists only (eval.inception_at)"),
                                           ("memorized_share", "finalists only (eval.finalists)")])
def test_a_metric_only_the_finalists_compute_cannot_be_the_sweep_metric(metric, where, capsys):
    """The sweep decides on the validation split; a figure computed for the finalists only is on the test
    split, so --dry-run (and a run) refuses it as sweep.metric, saying why; a trial-stage metric passes."""
    with pytest.raises(SystemExit, match=rf"sweep.metric {metric} cannot decide the sweep: it is computed for the "
                                         rf"{re.escape(where)}, so it would be read off the test split"):
        _dry_run(ROOT / "experiments" / "sweep_ddpm.py", "--set", f"sweep.metric={metric}",
                 "--set", "eval.inception_at=finalists")
    if metric == "cas":  # once: a dry run that passes measures the network (seconds)
        assert '"metric": "kid_domain"' in _dry_run(ROOT / "experiments" / "sweep_ddpm.py", "--set",
                                                    "sweep.metric=kid_domain", "--set", "sweep.mode=min", capsys=capsys)
