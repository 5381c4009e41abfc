"""Networks' shapes, the DDPM method's interface, the registry, the classifier, EMA."""

import dataclasses
import io

import pytest
import torch

from condgen_bench.datasets import DatasetSpec, FER_EMOTIONS
from condgen_bench.models import build_method, get_method
from condgen_bench.models.classifier import ClassifierConfig, ResNetClassifier, random_shift, train_classifier, predict
from condgen_bench.models.ddpm import DDPMConfig
from condgen_bench.models.diffusion import DiffusionConfig
from condgen_bench.models.ema import EMA
from condgen_bench.models.unet import UNet, UNetConfig

SMALL_UNET = UNetConfig(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(7, 8),
                        num_heads=2)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [28, 32, 48])
def test_unet_maps_to_input_shape(channels, size):
    net = UNet(channels, channels, 7, size, UNetConfig(base_channels=8, channel_mult=(1, 2, 2), num_res_blocks=1,
                                                      attention_resolutions=(size // 4,), num_heads=2))
    x = torch.randn(2, channels, size, size)
    out = net(x, torch.tensor([0, 999]), torch.tensor([3, 7]))  # 7 = the null class
    assert out.shape == x.shape


def test_unet_output_depends_on_label_and_time():
    torch.manual_seed(0)
    net = UNet(1, 1, 3, 8, SMALL_UNET)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.2)
        x = torch.randn(1, 1, 8, 8)
        a = net(x, torch.tensor([5]), torch.tensor([0]))
        assert not torch.allclose(a, net(x, torch.tensor([5]), torch.tensor([1])))
        assert not torch.allclose(a, net(x, torch.tensor([6]), torch.tensor([0])))


@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32), (1, 48)])
def test_classifier_shapes(channels, size):
    net = ResNetClassifier(channels, 7, ClassifierConfig(width=8))
    x = torch.randn(4, channels, size, size)
    assert net(x).shape == (4, 7) and net.features(x).shape == (4, 32)


def test_random_shift_moves_content_and_keeps_shape():
    x = torch.zeros(3, 1, 8, 8)
    x[:, :, 4, 4] = 1
    out = random_shift(x, 2, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and torch.all(out.sum(dim=(1, 2, 3)) == 1)
    assert not torch.equal(out, x)


def test_classifier_learns_a_separable_toy_problem():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(2).repeat(128)
    images = torch.randint(0, 60, (256, 1, 8, 8), generator=g, dtype=torch.uint8)
    images[labels == 1, :, :4] += 150  # class 1: bright top half
    # enough steps (64) for batch-norm running statistics to settle before eval mode
    net = train_classifier(images, labels, 2, ClassifierConfig(width=8, epochs=8, batch_size=32, max_shift=0))
    assert (predict(net, images).argmax(1) == labels).float().mean() > 0.95


def test_ema_warms_up_and_follows():
    net = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(net.weight)
    ema = EMA(net, decay=0.9)
    with torch.no_grad():
        net.weight.fill_(1.0)
    ema.update(net)  # decay min(0.9, 2/11): mostly the new weight
    assert ema.shadow.weight.item() == pytest.approx(1 - 2 / 11)
    for _ in range(200):
        ema.update(net)
    assert ema.shadow.weight.item() == pytest.approx(1.0, abs=1e-6)


def test_registry_lists_valid_methods():
    assert get_method("ddpm").config_cls is DDPMConfig
    with pytest.raises(ValueError, match="ddpm"):
        get_method("vae")


def tiny_ddpm(channels=1, size=8, seed=0, lr=2e-3):
    spec = DatasetSpec("toy", channels, size, FER_EMOTIONS[:3], "fp")
    config = DDPMConfig(unet=SMALL_UNET, diffusion=DiffusionConfig(timesteps=50), lr=lr, warmup_steps=1,
                        sampling_steps=4, eta=1.0)
    return build_method("ddpm", config, spec, seed=seed)


def test_ddpm_training_steps_change_weights_and_lower_the_loss():
    method = tiny_ddpm()
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(16, 1, 8, 8, generator=g) > 0.5).to(torch.uint8) * 255
    labels = torch.arange(16) % 3
    before = {k: v.clone() for k, v in method.net.state_dict().items()}
    losses = [float(method.train_step(images, labels)["loss"]) for _ in range(40)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10
    assert any(not torch.equal(before[k], v) for k, v in method.net.state_dict().items())
    assert method.step == 40 and method.ema.step == 40


def test_ddpm_sample_and_bits_per_dim_interface():
    method = tiny_ddpm(channels=3)
    labels, seeds = torch.tensor([0, 1, 2]), torch.tensor([1, 2, 3])
    samples = method.sample(labels, seeds)
    assert samples.shape == (3, 3, 8, 8) and samples.dtype == torch.uint8
    assert torch.equal(samples, method.sample(labels, seeds, batch_size=1))
    assert method.network_evaluations() == 8  # 4 DDIM steps, guidance 2 doubles each
    assert method.network_evaluations(guidance=1.0) == 4
    assert method.network_evaluations(sampler="ddpm", steps=4) == 8  # ancestral on 4 respaced steps
    assert method.network_evaluations(sampler="ddpm", steps=1000, guidance=1.0) == 50  # all T = 50
    bpd = method.bits_per_dim(samples, labels, seeds, t_samples=3)
    assert bpd["total"].shape == (3,) and torch.isfinite(bpd["total"]).all() and (bpd["total"] > 0).all()


def test_ddpm_state_dict_round_trip_resumes_exactly():
    images = torch.randint(0, 256, (8, 1, 8, 8), dtype=torch.uint8)
    labels = torch.arange(8) % 3
    a = tiny_ddpm()
    for _ in range(3):
        a.train_step(images, labels)
    buffer = io.BytesIO()  # through a file, as a checkpoint goes (state_dict() holds live tensors)
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    b = tiny_ddpm(seed=123)
    b.load_state_dict(torch.load(buffer, weights_only=True))
    # the same next step from the same state, noise generator included
    assert float(a.train_step(images, labels)["loss"]) == pytest.approx(float(b.train_step(images, labels)["loss"]), rel=1e-6)
    for (k, va), vb in zip(a.net.state_dict().items(), b.net.state_dict().values()):
        assert torch.allclose(va, vb, atol=1e-6), k


@pytest.mark.parametrize("size,to", [(4, 8), (6, 12), (7, 13)])
def test_upsampling_convolution_equals_a_convolution_of_the_nearest_upsampling(size, to):
    from condgen_bench.models.unet import _UPSAMPLE_TAPS, upsample_conv

    conv = torch.nn.Conv2d(5, 3, 3, padding=1)
    x = torch.randn(2, 5, size, size)
    expected = conv(torch.nn.functional.interpolate(x, size=(to, to), mode="nearest"))
    assert torch.allclose(upsample_conv(x, conv, (to, to), torch.tensor(_UPSAMPLE_TAPS)), expected, atol=1e-5)


def test_cpu_attention_equals_the_fused_kernel():
    from condgen_bench.models.unet import attention

    q, k, v = torch.randn(3, 2, 4, 36, 8).unbind(0)
    assert torch.allclose(attention(q, k, v), torch.nn.functional.scaled_dot_product_attention(q, k, v), atol=1e-5)


def test_every_registered_family_offers_the_whole_method_interface():
    """models/interface.py's Method is what the harness uses: each family has every member."""
    import inspect

    from condgen_bench.datasets.base import DatasetSpec
    from condgen_bench.models import METHODS, LikelihoodMethod, Method, build_method

    members = {cls: [n for n, _ in inspect.getmembers(cls) if not n.startswith("_")] + ["name", "has_likelihood", "step", "sampler_axes"]
               for cls in (Method, LikelihoodMethod)}
    spec = DatasetSpec("x", 1, 16, tuple("abc"), "x")
    for family, entry in METHODS.items():
        method = build_method(family, entry.tiny(), spec)
        interface = LikelihoodMethod if method.has_likelihood else Method
        assert isinstance(method, interface), family
        assert not [m for m in members[interface] if not hasattr(method, m)], family
        # its sampler axes: what sampling_settings accepts (a setting of each at its default changes nothing),
        # at most one of them the cost axis; anything else is refused
        own = method.sampling_settings()
        for axis in method.sampler_axes:
            assert method.sampling_settings(**{axis.name: own[axis.name]}) == own, (family, axis)
        assert sum(axis.cost for axis in method.sampler_axes) <= 1, family
        with pytest.raises(ValueError):
            method.sampling_settings(no_such_axis=1)
        # lr_schedule cosine: the learning rate falls to ~0 at the trial's last step (set_training_length)
        config = entry.tiny()
        no_warmup = {"warmup_steps": 0} if hasattr(config, "warmup_steps") else {}
        cosine = build_method(family, dataclasses.replace(config, lr_schedule="cosine", **no_warmup), spec)
        cosine.set_training_length(3)
        optimizer = cosine.opt if hasattr(cosine, "opt") else cosine.opt_d
        peak = optimizer.param_groups[0]["lr"]  # the family's (or its discriminator's) peak learning rate
        assert peak == pytest.approx(getattr(config, "d_lr", None) or config.lr), family
        images, labels = torch.randint(0, 256, (2, 1, 16, 16), dtype=torch.uint8), torch.tensor([0, 2])
        rates = []
        for _ in range(3):
            cosine.train_step(images, labels)
            rates.append(optimizer.param_groups[0]["lr"])
        assert rates[0] == pytest.approx(peak) and rates[1] < rates[0] and rates[2] < 0.3 * peak, (family, rates)
    assert "bits_per_dim" in members[LikelihoodMethod] and "bits_per_dim" not in members[Method]


def _family_branches(path: str, families: set[str], class_names: set[str]) -> list[str]:
    """Where the module at ``path`` asks which family it runs: a comparison, membership test, dict key or
    match case with a registered family's name, or isinstance / issubclass with a family's class."""
    import ast

    found = []

    def names_in(node) -> set[str]:
        return {n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and n.value in families}

    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
        where = f"{path}:{getattr(node, 'lineno', None) or getattr(getattr(node, 'pattern', None), 'lineno', '?')}"
        if isinstance(node, ast.Compare) and names_in(node):
            found.append(f"{where} compares with {sorted(names_in(node))}")
        elif isinstance(node, ast.Dict) and any(k is not None and names_in(k) for k in node.keys):
            found.append(f"{where} keys a dict by family")
        elif isinstance(node, ast.match_case) and names_in(node.pattern):
            found.append(f"{where} matches a family")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("isinstance", "issubclass")
              and {n.id if isinstance(n, ast.Name) else getattr(n, "attr", None)
                   for n in ast.walk(node)} & class_names):
            found.append(f"{where} {node.func.id} with a family's class")
    return found


def test_the_harness_and_the_report_never_branch_on_the_family():
    """The harness (training loop, trials, sweeps, evaluation) and the report talk to the method interface
    only: no module of theirs compares with, keys by or matches a registered family's name, or checks for a
    family's class. (A default such as ``method: str = "ddpm"`` is not a branch.) Every registered family is
    looked for, so a new one is covered once it is registered."""
    import glob
    import os

    from condgen_bench.models import METHODS

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    families = set(METHODS)
    class_names = {c.__name__ for entry in METHODS.values() for c in (entry.cls, entry.config_cls)}
    files = sorted(glob.glob(os.path.join(root, "harness", "**", "*.py"), recursive=True)
                   + glob.glob(os.path.join(root, "reports", "**", "*.py"), recursive=True))
    assert len(files) > 20 and any(f.endswith("worker.py") for f in files)
    assert any(f.endswith(os.path.join("evaluation", "scoring.py")) for f in files)
    found = [line for path in files for line in _family_branches(path, families, class_names)]
    assert not found, "\n".join(found)


def test_the_branch_finder_finds_each_kind_of_branch(tmp_path):
    """The finder above on a module that branches every way it looks for (so that its silence means something)."""
    module = tmp_path / "branchy.py"
    module.write_text('''
if config.method == "dcgan":
    pass
if name in ("ddpm", "flow"):
    pass
LR = {"fastgan": 1e-3}
match family:
    case "ddgan":
        pass
if isinstance(method, DDPMMethod):
    pass
method: str = "ddpm"  # a default, not a branch
''')
    found = _family_branches(str(module), {"ddpm", "dcgan", "fastgan", "ddgan", "flow"}, {"DDPMMethod"})
    assert [line.split(":")[1].split()[0] for line in found] == ["2", "4", "6", "8", "10"], found
