"""A sixth family defined in this module and registered, nothing else: each class's mean image, learnt by a
running average, plus seeded noise. The config, the worker loop, the evaluation plan and scoring, the
results, the finalist stage and the report take it with no change anywhere else (issue 28: a new family
costs its module and its registration)."""

import json
import shutil
from dataclasses import dataclass

import pandas as pd
import torch

from condgen_bench import datasets
from condgen_bench.datasets.base import generated_to_uint8
from condgen_bench.harness.config import experiment_from_dict, to_dict
from condgen_bench.harness.finalists import score_finalist
from condgen_bench.harness.results import write_results
from condgen_bench.models import METHODS, MethodEntry
from condgen_bench.models.interface import CheckedSampling, Method
from condgen_bench.reports import build_report
from condgen_bench.reports.run_folder import layout, storage
import test_worker_loop
from test_ray_sweep import tiny_experiment
from test_worker_loop import rows_of

train_in_process = test_worker_loop.train_in_process  # the fixture: the worker loop in this process


@dataclass
class MeanConfig:
    rate: float = 0.2  # how far each step moves a class's mean towards the batch's images of the class
    noise: float = 0.3  # std of the seeded noise added to the mean at sampling, on the [-1, 1] scale


class MeanImages(torch.nn.Module):
    """The family's network: one image per class, [K, C, H, W] on the [-1, 1] scale."""

    def __init__(self, classes: int, channels: int, size: int, generator: torch.Generator):
        super().__init__()
        self.means = torch.nn.Parameter(0.01 * torch.randn(classes, channels, size, size, generator=generator),
                                        requires_grad=False)


class MeanMethod(CheckedSampling):
    """The Method interface (models/interface.py) in the fewest lines: no likelihood, no sampler axes."""

    name = "mean"
    has_likelihood = False
    sampler_axes = ()

    def __init__(self, config: MeanConfig, spec, device="cpu", wrap=None, seed: int = 0, accel=None):
        self.config, self.step = config, 0
        self.net = MeanImages(spec.num_classes, spec.channels, spec.image_size, torch.Generator().manual_seed(seed))
        self.wrap = wrap
        self.noise = torch.Generator()
        self.to(device)

    def to(self, device):
        self.device = torch.device(device)
        self.net.to(self.device)
        if self.wrap is not None:
            self.wrap(self.net)
        return self

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> dict:
        x = images.to(self.device).float() / 127.5 - 1  # [B, C, H, W]
        labels = labels.to(self.device)
        means = self.net.means.data
        loss = ((x - means[labels]) ** 2).mean()
        for c in labels.unique():
            means[c] += self.config.rate * (x[labels == c].mean(0) - means[c])
        self.step += 1
        return {"loss": loss.detach()}

    def set_training_length(self, total_steps: int) -> None:
        pass

    def sample_checked(self, labels, seeds, batch_size=256, **settings):
        self.sampling_settings(**settings)
        noise = torch.stack([torch.randn(self.net.means.shape[1:], generator=torch.Generator().manual_seed(int(s)))
                             for s in seeds])
        return generated_to_uint8((self.net.means.data.cpu()[labels] + self.config.noise * noise).clamp(-1, 1))

    def sampling_settings(self, **settings) -> dict:
        if settings:
            raise ValueError(f"unknown sampler settings {sorted(settings)}; the mean family has none")
        return {}

    def network_evaluations(self, **settings) -> int:
        return 1

    def state_dict(self) -> dict:
        return {"means": self.net.means.data, "step": self.step, "noise": self.noise.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.net.means.data.copy_(state["means"])
        self.step = state["step"]
        self.noise.set_state(state["noise"])

    def seed_noise(self, seed: int) -> None:
        self.noise.manual_seed(seed)

    def noise_state(self) -> torch.Tensor:
        return self.noise.get_state()

    def noise_kind(self) -> str:
        return "cpu"

    def load_noise_state(self, state: torch.Tensor) -> bool:
        self.noise.set_state(state)
        return True


def test_a_family_defined_in_a_test_runs_through_every_stage_with_only_its_registration(train_in_process, tmp_path,
                                                                                       monkeypatch):
    import ray.train

    monkeypatch.setitem(METHODS, "mean", MethodEntry(MeanConfig, MeanMethod, MeanConfig, 8))
    run_dir = str(tmp_path / "run")
    saved = []

    def report(metrics, checkpoint=None):  # Ray Train's storage of the checkpoint, as a folder of the run
        if checkpoint is not None:
            folder = layout.train_run_dir(layout.train_storage(run_dir), "t_mean")
            shutil.copytree(checkpoint.path, f"{folder}/{layout.CHECKPOINT_PREFIX}{len(saved):06d}")
            saved.append(metrics["epoch"])

    monkeypatch.setattr(ray.train, "report", report)
    config = tiny_experiment(tmp_path)
    config.method, config.model = "mean", MeanConfig()
    config.eval.cas, config.eval.cas_seeds, config.eval.augment = True, 1, False
    assert experiment_from_dict(to_dict(config)).model == MeanConfig()  # the config reads it from the registry
    assert isinstance(MeanMethod(MeanConfig(), datasets.load(config.data).spec()), Method)

    train_in_process(config, "t_mean")
    assert saved == [1, 2]
    rows = rows_of(run_dir, config, "t_mean", type("Result", (), {"error": None, "metrics": {"epoch": 2}})())
    assert [(r["stage"], r["epoch"], r["status"]) for r in rows] == [("tracking", 1, "completed"),
                                                                    ("trial_final", 2, "completed")]
    final = rows[-1]
    assert final["method"] == "mean" and 0 <= final["sample_accuracy"] <= 1 and final["fid_domain"] > 0
    assert json.loads(final["missing"])["bpd"] == "mean has no likelihood"  # the plan's reason, from the class

    data = datasets.load(config.data)
    from condgen_bench.harness.evaluation.reference import prepare_reference

    reference = prepare_reference(data, config.eval, str(tmp_path / "cache"), log=lambda *_: None)
    score_finalist("t_mean", 1, run_dir, data, reference, threads=1, device="cpu")
    rows = rows_of(run_dir, config, "t_mean", type("Result", (), {"error": None, "metrics": {"epoch": 2}})())
    finalist = rows[-1]
    assert finalist["stage"] == "finalist" and finalist["protocol.reference_split"] == "test"
    assert 0 <= finalist["cas"] <= 1 and "aug_gain" in json.loads(finalist["missing"])

    storage.write_bytes(layout.run_file(run_dir, layout.CONFIG), json.dumps(to_dict(config)).encode())
    storage.write_bytes(layout.run_file(run_dir, layout.DATASET_SUMMARY), json.dumps(
        {"name": data.name, "fingerprint": data.fingerprint, "options": data.options, "counts": data.summary()}).encode())
    write_results(pd.DataFrame(rows), pd.DataFrame([{"trial_id": "t_mean", "epoch": e} for e in (1, 2)]), run_dir)
    page = open(build_report(run_dir)).read()
    assert "t_mean" in page and ">mean<" in page
