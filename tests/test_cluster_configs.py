"""The cluster examples in docs/cluster/ stay usable: the cluster-launcher config passes Ray's own schema (the
one `ray up` checks), and the KubeRay RayJob's entrypoint is an experiment script whose flags its parser takes.
The GPU settings they use: fractions of a GPU, and the dry run's count of trials that fit on the GPUs."""

import copy
import shlex
import sys
from pathlib import Path

import pytest
import yaml

from condgen_bench.harness.cli import build_parser, describe_trials, resolve
from condgen_bench.harness.config import ClusterConfig, ExperimentConfig, apply_overrides

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "docs" / "cluster"


def _validated(config: dict) -> dict:
    """The config as `ray up` prepares it (defaults of its provider filled in), validated by Ray's schema."""
    from ray.autoscaler._private.commands import prepare_config
    from ray.autoscaler._private.util import validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_the_cluster_launcher_config_passes_rays_schema_and_installs_the_project_on_gpu_workers():
    import jsonschema

    config = yaml.safe_load((CLUSTER / "aws-gpu.yaml").read_text())
    prepared = _validated(config)
    workers = {name: node for name, node in prepared["available_node_types"].items() if name != prepared["head_node_type"]}
    assert any(node["node_config"]["InstanceType"].startswith(("g", "p")) for node in workers.values())  # GPU types
    assert any("pip install" in c and "condgen-bench" in c for c in prepared["setup_commands"])
    assert "." in prepared["file_mounts"].values()  # this checkout travels to every node
    broken = copy.deepcopy(config)
    broken["available_node_types"]["gpu_worker"]["node_confg"] = broken["available_node_types"]["gpu_worker"].pop("node_config")
    with pytest.raises(jsonschema.ValidationError, match="node_config"):
        _validated(broken)


def test_the_rayjobs_entrypoint_is_an_experiment_script_whose_parser_takes_its_flags(monkeypatch):
    job = yaml.safe_load((CLUSTER / "rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    python, script, *argv = shlex.split(job["spec"]["entrypoint"])
    local = ROOT / "experiments" / Path(script).name
    assert python == "python" and script.endswith(f"experiments/{local.name}") and local.exists()
    monkeypatch.syspath_prepend(str(local.parent))  # the script's own imports (laptop.py)
    namespace = {}
    exec(compile(local.read_text().replace('if __name__ == "__main__":', "if False:"), str(local), "exec"), namespace)
    args = build_parser(namespace["__doc__"], namespace.get("PRESETS")).parse_args(argv)
    config = resolve(args, namespace["local_profile"](), namespace["SMOKE_TEST"], namespace.get("PRESETS"))
    assert config.cluster.gpus_per_worker == 1 and config.cluster.storage_path.startswith("s3://")
    groups = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert any("nvidia.com/gpu" in c["resources"]["limits"] for g in groups for c in g["template"]["spec"]["containers"])


def test_fractions_of_a_gpu_and_how_many_trials_fit_at_once():
    quarter = apply_overrides(ExperimentConfig(), {"cluster.gpus_per_worker": 0.25})
    assert "each trial takes 0.25 GPU (1 x 0.25): 4 trials share a GPU" in describe_trials(quarter)
    assert "the cluster's 8 GPUs hold 32 at once" in describe_trials(quarter, gpus=8.0)
    two = apply_overrides(ExperimentConfig(), {"cluster.gpus_per_worker": 1.0, "cluster.workers_per_trial": 2})
    assert "each trial takes 2 GPU (2 x 1): the cluster's 8 GPUs hold 4 at once" in describe_trials(two, gpus=8.0)
    assert "each trial takes" not in describe_trials(ExperimentConfig())  # CPU training: no GPU count
    for bad in (1.5, -1.0):
        with pytest.raises(ValueError, match="gpus_per_worker"):
            ClusterConfig(gpus_per_worker=bad)
    assert ClusterConfig(gpus_per_worker=2.0).gpus_per_worker == 2.0


def test_the_gpu_acceptance_run_skips_without_cuda_and_its_machinery_runs_on_a_cpu(capsys):
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = gpu_check  # its dataclasses look their module up
    spec.loader.exec_module(gpu_check)
    if not torch.cuda.is_available():
        assert gpu_check.main([]) == 0
        assert "SKIP: no CUDA device here" in capsys.readouterr().out
    # part 1's checks on the CPU, tiny: a broken check fails here, before a GPU machine is lent
    assert gpu_check.main(["--device", "cpu", "--steps", "2", "--sync-every", "1", "--no-compile", "--part", "1",
                           "--families", "ddpm", "dcgan", "--precisions", "fp32"]) == 0
    out = capsys.readouterr().out
    assert "6 of 6 passed" in out and "FAIL" not in out
