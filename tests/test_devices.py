"""The accelerator path, proven without a GPU (tests/devices.py): every family samples, takes its likelihood
and has its samples' features extracted on a simulated CUDA device and hands back CPU tensors; every family's
training step runs on ``meta`` with no copy between host and device; one code path for every device (no
branch on a device's type outside models/accel.py); checkpoints cross device types; and the GPU-only
mistakes a first reading found, each pinned."""

import ast
import os

import pytest
import torch

from condgen_bench.harness.steps import DivergenceWatch, StepStats, noise_seed, restore_noise
from condgen_bench.models import get_method
from condgen_bench.models.accel import (PEAK_TFLOPS, evaluation_math, gpu_model, peak_tflops, resolve_precision,
                                        set_training_math, training_generator)
from condgen_bench.models.diffusion import DiffusionConfig, GaussianDiffusion
from devices import REPO, is_fake, simulated_cuda, transfers
from families import FAMILIES, LIKELIHOOD_FAMILIES, tiny_method

# families whose likelihood needs autograd's vector-Jacobian products: the engine asks the CUDA driver for a
# context, which a simulated device has not, so their likelihood runs on ``meta`` (values unknown there too)
AUTOGRAD_LIKELIHOOD = {"flow"}
tiny = tiny_method  # a tiny method of any registered family, and its image size (tests/families.py)


def batch(size: int, n: int = 8, device: str = "cpu"):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, size, size), generator=g, dtype=torch.uint8)
    return images.to(device), (torch.arange(n) % 3).to(device)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_registered_family_has_a_tiny_config_that_builds(family):
    entry = get_method(family)
    assert isinstance(entry.tiny(), entry.config_cls) and entry.tiny() is not entry.tiny()  # a fresh one each call
    method, size = tiny(family)
    assert size == entry.tiny_image_size and method.name == family


# ---------------------------------------------------------------- sampling, likelihood, features on a GPU


def _outside_the_noise(seen: list[str]) -> list[str]:
    """The transfers other than the per-sample noise's (models/noise.py draws each sample's noise from its own
    seeded host generator and copies it over: by design, one copy a draw)."""
    return [t for t in seen if "models/noise.py" not in t]


@pytest.mark.parametrize("family", FAMILIES)
def test_sampling_on_a_simulated_gpu_hands_back_cpu_images_and_copies_nothing_per_network_call(family, monkeypatch):
    method, size = tiny(family)
    labels, seeds = torch.arange(4) % 3, torch.arange(4) + 100
    steps = [{"steps": 1}, {"steps": 2}] if any(a.name == "steps" for a in method.sampler_axes) else [{}]
    with simulated_cuda():
        method.to("cuda")
        for settings in steps:  # each sampler setting once first: what is made once per setting is made
            method.sample(labels, seeds, **settings)
        counts = []
        for settings in steps:
            with transfers(monkeypatch) as seen:
                images = method.sample(labels, seeds, batch_size=2, **settings)
            assert images.device.type == "cpu" and images.dtype == torch.uint8 and is_fake(images)
            assert images.shape == (4, 1, size, size)
            counts.append(len(_outside_the_noise(seen)))
    # twice the network calls, the same copies: labels there, images back, per batch, and nothing per call
    assert len(set(counts)) == 1, (counts, _outside_the_noise(seen))


@pytest.mark.parametrize("family", FAMILIES)
def test_sampling_flops_are_counted_on_a_simulated_gpu_as_on_the_cpu(family):
    """The sampling cost the results record (models/flops.py sampling_flops_per_image) counts the same
    operators on a CUDA device as on the CPU: shapes are all it needs."""
    from condgen_bench.models.flops import sampling_flops_per_image

    method, _ = tiny(family)
    settings = {"steps": 2} if any(a.name == "steps" for a in method.sampler_axes) else {}  # counting is slow
    on_cpu = sampling_flops_per_image(method, settings)
    with simulated_cuda():
        method.to("cuda")
        on_gpu = sampling_flops_per_image(method, settings)
    assert on_cpu > 0 and on_gpu == on_cpu


@pytest.mark.parametrize("family", LIKELIHOOD_FAMILIES)
def test_the_likelihood_on_a_gpu_comes_back_as_cpu_tensors(family, monkeypatch):
    method, size = tiny(family)
    images, labels = batch(size, n=3)
    seeds = torch.arange(3) + 7
    if family in AUTOGRAD_LIKELIHOOD:
        # meta cannot copy to the host: a copy back stands for one (its values unknown, as the device's are)
        original = torch.Tensor.cpu
        monkeypatch.setattr(torch.Tensor, "cpu", lambda t: torch.empty_like(t, device="cpu")
                            if t.device.type == "meta" else original(t))
        method.to("meta")
        parts = method.bits_per_dim(images, labels, seeds, t_samples=3)
    else:
        with simulated_cuda():
            method.to("cuda")
            parts = method.bits_per_dim(images, labels, seeds, t_samples=3)
            assert all(is_fake(v) for v in parts.values())
    assert "total" in parts
    for key, value in parts.items():
        assert value.device.type == "cpu" and value.shape == (3,), (key, value.device)


def test_evaluation_features_of_samples_on_a_gpu_come_back_as_cpu_tensors():
    from condgen_bench.harness.evaluation import extractors
    from condgen_bench.models.classifier import ClassifierConfig, ResNetClassifier

    domain = extractors.register_classifier(ResNetClassifier(1, 3, ClassifierConfig(width=8)), "simulated0001")
    images = torch.randint(0, 256, (5, 1, 16, 16), dtype=torch.uint8)
    try:
        with simulated_cuda():
            features = extractors.extract_features(images, domain, batch_size=2, device="cuda")
    finally:  # no extractor holding fake tensors may outlive the simulation
        extractors._INSTANCES.pop((domain.key, "cuda"), None)
    assert {k: (v.device.type, v.dtype, tuple(v.shape)) for k, v in features.items()} == {
        "pool": ("cpu", torch.float64, (5, 32)), "logits": ("cpu", torch.float64, (5, 3))}


def test_a_diffusion_put_on_a_gpu_gathers_there_with_no_copy_and_keeps_no_cache():
    d = GaussianDiffusion(DiffusionConfig(timesteps=40, variance="learned", t_sampling="importance"))
    with simulated_cuda():
        d.to("cuda")
        x0, noise = torch.zeros(4, 1, 6, 6, device="cuda"), torch.zeros(4, 1, 6, 6, device="cuda")
        t = torch.zeros(4, dtype=torch.long, device="cuda")
        x_prev, x_t = d.q_sample_pair(x0, t, noise, noise)
        mean, var, logvar = d.q_mean_variance(x0, t)
        assert {v.device.type for v in (x_prev, x_t, mean, var, logvar, d.prior_kl(x0), d.q_step(x0, t, noise))} == {"cuda"}
        t_drawn, weights = d.draw_timesteps(4, training_generator("cuda", 0), "cuda")
        d.t_sampler.update(t_drawn, weights)
        assert t_drawn.device.type == weights.device.type == d.t_sampler.ring.device.type == "cuda"
    assert not any(isinstance(v, dict) and any(isinstance(k, tuple) for k in v) for v in vars(d).values())


def test_the_schedule_gathers_match_their_closed_forms_however_often_they_run():
    """What a cache keyed by id() got wrong once an array was freed and its id reused: many calls, each checked."""
    d = GaussianDiffusion(DiffusionConfig(timesteps=30, schedule="cosine"))
    abar, betas = d.alphas_cumprod, d.betas
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        t = torch.randint(0, 30, (5,), generator=g)
        x0, e1, e2 = (torch.randn(5, 1, 2, 2, generator=g, dtype=torch.float64) for _ in range(3))
        prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])[t].view(-1, 1, 1, 1)
        x_prev, x_t = d.q_sample_pair(x0, t, e1, e2)
        assert torch.allclose(x_prev, prev.sqrt() * x0 + (1 - prev).sqrt() * e1, atol=1e-6)
        b = betas[t].view(-1, 1, 1, 1)
        assert torch.allclose(x_t, (1 - b).sqrt() * x_prev + b.sqrt() * e2, atol=1e-6)
        _, var, logvar = d.q_mean_variance(x0, t)
        assert torch.allclose(var.flatten(), 1 - abar[t], atol=1e-7)
        assert torch.allclose(logvar.flatten(), torch.log(1 - abar[t]), atol=1e-5)


# ---------------------------------------------------------------- training steps on meta


@pytest.mark.parametrize("family,extra", [*((f, {}) for f in FAMILIES),
                                          ("ddpm", {"diffusion": DiffusionConfig(timesteps=50, variance="learned",
                                                                                 t_sampling="importance")})],
                         ids=[*FAMILIES, "ddpm-importance-learned"])
def test_a_training_step_on_a_device_makes_no_host_transfer(family, extra, monkeypatch):
    method, size = tiny(family, device="meta", **extra)
    images, labels = batch(size, device="meta")  # the split lives on the device (harness/steps.py)
    stats, watch = StepStats("meta"), DivergenceWatch(3, "meta")
    with transfers(monkeypatch) as seen:
        for _ in range(3):
            out = method.train_step(images, labels)
            stats.add(out)
            watch.observe(out, method.step)
    assert seen == []
    assert all(v.device.type == "meta" for v in out.values() if isinstance(v, torch.Tensor))


def test_step_statistics_take_a_float_without_a_copy(monkeypatch):
    stats = StepStats("meta")
    with transfers(monkeypatch) as seen:
        for _ in range(3):
            stats.add({"loss": torch.ones((), device="meta"), "lr": 1e-3})
    assert seen == []
    cpu = StepStats()
    for lr in (1e-3, 3e-3):
        cpu.add({"loss": torch.tensor(2.0), "lr": lr})
    assert cpu.means() == {"loss": 2.0, "lr": pytest.approx(2e-3)}


@pytest.mark.parametrize("flip,jitter", [(False, 0.0), (True, 0.1)], ids=["plain", "flip-jitter"])
def test_a_classifier_trains_on_a_device_reading_nothing_back_a_step(flip, jitter, monkeypatch):
    """The evaluation classifier's recipe, and the augmentation study's with flips and jitter
    (models/classifier.py): its batches go to the device (the split stays on the host), but no step reads a
    value back, and the augmented batch stays where the network is."""
    from condgen_bench.models.classifier import ClassifierConfig, random_flip_jitter, train_classifier

    images, labels = batch(8, n=12)
    recipe = ClassifierConfig(width=4, epochs=2, batch_size=4, flip=flip, jitter=jitter)
    with transfers(monkeypatch) as seen:
        net = train_classifier(images, labels, 3, recipe, device="meta")
        out = random_flip_jitter(torch.zeros(4, 1, 8, 8, device="meta"), flip, jitter, torch.Generator())
    assert [s for s in seen if "read" in s] == []
    assert next(net.parameters()).device.type == "meta" and out.device.type == "meta" and out.shape == (4, 1, 8, 8)


# ---------------------------------------------------------------- one code path


def _device_branches(path: str) -> list[str]:
    """Lines of ``path`` that branch on a device's type: a comparison with a device type's name or with a
    ``.type`` / ``.device`` attribute, ``is_cuda`` / ``is_cpu``, or any call into torch.cuda."""
    names = {"cpu", "cuda", "meta", "mps", "xpu"}
    found = []

    def text(node) -> str:
        return ast.unparse(node)

    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Compare):
            parts = [node.left, *node.comparators]
            if any(isinstance(p, ast.Constant) and p.value in names for p in parts) or any(
                    isinstance(p, ast.Attribute) and (p.attr == "device" or p.attr == "type" and "device" in text(p))
                    for p in parts):
                found.append(f"{node.lineno}: {text(node)}")
        elif isinstance(node, ast.Attribute) and node.attr in ("is_cuda", "is_cpu", "is_meta"):
            found.append(f"{node.lineno}: {text(node)}")
        elif isinstance(node, ast.Attribute) and text(node).startswith("torch.cuda."):
            found.append(f"{node.lineno}: {text(node)}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "id":
            found.append(f"{node.lineno}: {text(node)} (an object's identity, e.g. a cache key)")
    return found


def test_no_code_outside_accel_branches_on_a_devices_type():
    offenders = {}
    for package in ("models", "harness", "datasets", "reports"):
        for name in sorted(os.listdir(os.path.join(REPO, package))):
            path = os.path.join(REPO, package, name)
            if name.endswith(".py") and path != os.path.join(REPO, "models", "accel.py"):
                if branches := _device_branches(path):
                    offenders[f"{package}/{name}"] = branches
    assert offenders == {}


def test_the_branch_reader_finds_the_branches_it_looks_for(tmp_path):
    path = tmp_path / "branchy.py"
    path.write_text("import torch\n"
                    "def f(x, arr, device):\n"
                    "    if x.device.type == 'cuda':\n"
                    "        return 1\n"
                    "    if arr.device != x.device:\n"
                    "        key = (id(arr), x.device)\n"
                    "    return torch.cuda.is_available() or x.is_cuda or device == 'cpu'\n")
    assert sorted(int(line.split(":")[0]) for line in _device_branches(str(path))) == [3, 5, 6, 7, 7, 7]


# ---------------------------------------------------------------- checkpoints across device types


def _cuda_generator_state(seed: int = 5, offset: int = 12) -> torch.Tensor:
    """What a CUDA generator's get_state() returns: its seed and Philox offset, 16 bytes."""
    return torch.tensor([seed, offset], dtype=torch.int64).view(torch.uint8)


class CudaLikeGenerator:
    """Stands in for a CUDA generator where no GPU is: a 16-byte state, set_state refusing any other size (as
    torch's CUDA generator does)."""

    device = torch.device("cuda")

    def __init__(self):
        self.state = _cuda_generator_state(0, 0)

    def manual_seed(self, seed: int):
        self.state = _cuda_generator_state(seed, 0)
        return self

    def get_state(self) -> torch.Tensor:
        return self.state.clone()

    def set_state(self, state: torch.Tensor) -> None:
        if state.numel() != 16:
            raise RuntimeError(f"Expected a CUDA generator state of 16 bytes, got {state.numel()}")
        self.state = state.clone()


@pytest.mark.parametrize("family", FAMILIES)
def test_a_checkpoint_written_on_a_gpu_restores_on_a_cpu_and_reseeds_the_noise(family):
    written, size = tiny(family)
    written.train_step(*batch(size))
    state = written.state_dict()
    state["generator"] = _cuda_generator_state()  # as a GPU worker saves it
    restored, _ = tiny(family)
    restored.load_state_dict(state)  # no crash on the foreign generator state ...
    for a, b in zip(written.state_dict()["ema"]["shadow"].values(), restored.state_dict()["ema"]["shadow"].values()):
        assert torch.equal(a, b)  # ... and the weights are the checkpoint's
    before = restored.noise_state().clone()
    note = restore_noise(restored, [_cuda_generator_state()], rank=0, world=1, seed=0, epoch=4, saved_kind="cuda")
    assert "drawn on a cuda device" in note and "draws on a cpu device" in note and "(seed, rank, epoch 4)" in note
    fresh, _ = tiny(family)
    fresh.seed_noise(noise_seed(0, 0) + 7919 * 4)
    assert torch.equal(restored.noise_state(), fresh.noise_state()) and not torch.equal(before, fresh.noise_state())


@pytest.mark.parametrize("family", FAMILIES)
def test_a_checkpoint_written_on_a_cpu_restores_on_a_gpu(family):
    written, size = tiny(family)
    written.train_step(*batch(size))
    state = written.state_dict()
    on_gpu, _ = tiny(family)
    on_gpu.generator = CudaLikeGenerator()  # a GPU worker's method (its networks' device is not what is tested)
    on_gpu.load_state_dict(state)
    note = restore_noise(on_gpu, [state["generator"]], rank=0, world=1, seed=0, epoch=2, saved_kind="cpu")
    assert "drawn on a cpu device" in note and "draws on a cuda device" in note
    assert torch.equal(on_gpu.noise_state(), _cuda_generator_state(noise_seed(0, 0) + 7919 * 2, 0))
    # an old checkpoint that did not record its device type: the state's format tells
    on_gpu.generator = CudaLikeGenerator()
    assert "fresh noise streams" in restore_noise(on_gpu, [state["generator"]], 0, 1, seed=0, epoch=2)


def test_the_same_device_type_continues_the_stream():
    method, size = tiny("ddpm")
    method.train_step(*batch(size))
    saved = method.noise_state().clone()
    other, _ = tiny("ddpm")
    assert restore_noise(other, [saved], 0, 1, seed=0, epoch=1, saved_kind="cpu") == "continued this rank's noise stream"
    assert torch.equal(other.noise_state(), saved)


# ---------------------------------------------------------------- precisions, math modes, peaks


def test_auto_precision_follows_the_compute_capability():
    assert resolve_precision("auto", "cuda", capability=(9, 0)) == "bf16"  # H100
    assert resolve_precision("auto", "cuda", capability=(8, 0)) == "bf16"  # A100
    assert resolve_precision("auto", "cuda", capability=(7, 5)) == "fp16"  # T4: no native bf16
    assert resolve_precision("auto", "cuda", capability=(7, 0)) == "fp16"  # V100
    assert resolve_precision("auto", "cuda", capability=(6, 1)) == "fp32"  # no tensor cores
    assert resolve_precision("auto", "cpu") == "fp32" and resolve_precision("bf16", "cuda", (7, 0)) == "bf16"


def test_gpu_models_are_matched_by_whole_name_and_their_peaks_read_by_math():
    names = {"NVIDIA L4": "L4", "NVIDIA L40": "L40", "NVIDIA L40S": "L40S", "NVIDIA H100 NVL": "H100 NVL",
             "NVIDIA H100 80GB HBM3": "H100", "NVIDIA H100 PCIe": "H100 PCIe", "NVIDIA H200": "H200",
             "NVIDIA A100-SXM4-80GB": "A100", "Tesla V100-SXM2-16GB": "V100", "Tesla T4": "T4",
             "NVIDIA A10G": None, "NVIDIA A10": "A10", "NVIDIA GeForce RTX 4090": "RTX 4090", "cpu": None}
    assert {name: gpu_model(name) for name in names} == names
    assert peak_tflops("NVIDIA H100 80GB HBM3", "bf16") == 989.0 and peak_tflops("NVIDIA H100 80GB HBM3", "tf32") == 494.5
    assert peak_tflops("NVIDIA L40", "bf16") != peak_tflops("NVIDIA L4", "bf16")
    assert peak_tflops("cpu") is None and all(len(v) == 3 for v in PEAK_TFLOPS.values())


def test_evaluation_math_turns_tf32_off_for_its_block_and_restores_the_trainings():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        assert set_training_math("cuda", True) == "tf32"
        with evaluation_math() as mode:
            assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
            assert "no TF32" in mode
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert set_training_math("cpu", True) == "fp32" and not torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_r1_under_fp16_keeps_gradients_that_float16_would_flush_to_zero():
    from condgen_bench.models.ddgan import r1_penalty

    torch.manual_seed(0)
    net = torch.nn.Sequential(*(torch.nn.Conv2d(c, d, 3, padding=1, bias=False) for c, d in ((1, 8), (8, 8), (8, 1))))
    for p in net.parameters():
        torch.nn.init.constant_(p, 1e-4)  # each layer shrinks the gradient: ~1e-7 per pixel at the input
    x = torch.randn(8, 1, 6, 6, requires_grad=True)
    exact = r1_penalty(net(x).flatten(1).sum(1), x)  # float32

    def fp16(scale):
        with torch.autocast("cpu", dtype=torch.float16):
            logits = net(x).flatten(1).sum(1).float()
        return r1_penalty(logits, x, scale)

    assert torch.all(fp16(1.0) == 0)  # unscaled, the float16 backward flushes it to zero
    assert torch.allclose(fp16(torch.tensor(2.0 ** 16)), exact, rtol=0.02)  # GradScaler's initial scale


# ---------------------------------------------------------------- the worker's epoch end


def test_the_other_ranks_wait_for_rank_0s_evaluation_in_no_collective(monkeypatch):
    import torch.distributed as dist

    from condgen_bench.harness.worker import finish_epoch

    events = []
    monkeypatch.setattr(dist, "all_gather", lambda out, local: events.append("collective") or
                        [o.copy_(local) for o in out])
    method, _ = tiny("ddpm")
    finish_epoch(method, 2, "cpu", evaluate_epoch=lambda: events.append("rank 0 evaluates") or {"epoch": 1},
                 save_and_report=lambda metrics, states: events.append(f"report {len(states)} states"))
    assert events == ["collective", "rank 0 evaluates", "report 2 states"]


# ---------------------------------------------------------------- the evaluation reference's task


def test_the_reference_task_asks_only_for_what_some_node_has():
    from condgen_bench.harness.nodes import reference_options

    gpu_node = {"Alive": True, "Resources": {"CPU": 8.0, "GPU": 1.0}}
    spot_cpu_node = {"Alive": True, "Resources": {"CPU": 4.0, "spot": 4.0}}  # the workers' custom resource
    assert reference_options(2.0, [gpu_node, spot_cpu_node]) == {"num_cpus": 2.0, "num_gpus": 1, "resources": {}}
    assert reference_options(2.0, [spot_cpu_node])["num_gpus"] == 0
    assert reference_options(16.0, [gpu_node, spot_cpu_node])["num_cpus"] == 8.0  # no node has 16
    dead = {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}}
    assert reference_options(2.0, [dead, spot_cpu_node])["num_gpus"] == 0


@pytest.mark.ray
def test_a_task_no_node_can_take_is_named_within_the_patience(ray_local):
    from condgen_bench.harness.nodes import await_placed

    class Said(Exception):
        pass

    def log(line):
        raise Said(line)

    task = ray_local.remote(num_gpus=1)(lambda: 1).options(name="evaluation reference").remote()
    try:
        with pytest.raises(Said, match=r"1 evaluation reference task\(s\) have waited 2 s for a node with "
                                       r"\{'num_gpus': 1\}.*free in the cluster: \{.*'CPU'"):
            await_placed([task], "evaluation reference", {"num_gpus": 1}, log, patience_s=2.0)
    finally:
        ray_local.cancel(task, force=True)
    done = ray_local.remote(num_cpus=0.1)(lambda: 7).remote()
    assert await_placed([done], "evaluation reference", {}, log, patience_s=2.0) == [7]
