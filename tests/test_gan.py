"""What every GAN family shares (models/gan.py) and the DCGAN's networks: the losses, the method interface
for dcgan, fastgan and ddgan alike (training steps, seeded sampling, checkpoints, no likelihood), and the
divergence rules the worker applies."""

import io
import math

import pytest
import torch

from condgen_bench.harness.config import EvalConfig
from condgen_bench.harness.evaluation.scoring import likelihood_metrics
from condgen_bench.harness.steps import DivergenceWatch, StepStats
from condgen_bench.models.dcgan import DCGANDiscriminator, DCGANGenerator
from condgen_bench.models.gan import get_loss, discriminator_wins, upsampling_plan
from families import GAN_FAMILIES, tiny_method

FAMILIES = GAN_FAMILIES  # every registered family built on models/gan.py


def tiny(family: str, channels: int = 1, size: int = 24, seed: int = 0, **overrides):
    """A tiny GAN of ``family`` (its registered tiny config) for 3 classes of 24 px images by default."""
    return tiny_method(family, size=size, channels=channels, seed=seed, **overrides)[0]


def toy_batch(channels: int = 1, size: int = 24, n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8), torch.arange(n) % 3


# ---------------------------------------------------------------- shared pieces


def test_losses_against_hand_computed_values():
    real, fake = torch.tensor([2.0]), torch.tensor([-1.0])
    ns, hinge = get_loss("nonsaturating"), get_loss("hinge")
    assert ns.d(real, fake).item() == pytest.approx(math.log1p(math.exp(-2)) + math.log1p(math.exp(-1)))
    assert ns.g(fake).item() == pytest.approx(math.log1p(math.exp(1)))
    assert hinge.d(real, fake).item() == 0.0 and hinge.d(torch.tensor([0.5]), torch.tensor([0.0])).item() == 1.5
    assert hinge.g(fake).item() == 1.0
    with pytest.raises(ValueError, match="hinge"):
        get_loss("wasserstein")


def test_discriminator_wins_only_when_every_image_is_told_apart():
    assert discriminator_wins(torch.tensor([5.0, 6.0]), torch.tensor([-5.0, -7.0]), 4.6)
    assert not discriminator_wins(torch.tensor([5.0, 3.0]), torch.tensor([-5.0, -7.0]), 4.6)
    assert not discriminator_wins(torch.tensor([5.0, 6.0]), torch.tensor([-5.0, 0.0]), 4.6)


def test_upsampling_plan():
    assert [upsampling_plan(s) for s in (24, 28, 32, 48, 64)] == [(3, 3), (7, 2), (4, 3), (3, 4), (4, 4)]
    with pytest.raises(ValueError, match="27"):
        upsampling_plan(27)


@pytest.mark.parametrize("conditioning", ["projection", "concat"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [28, 32, 48, 64])
def test_dcgan_network_shapes(conditioning, channels, size):
    G = DCGANGenerator(z_dim=8, num_classes=3, channels=channels, image_size=size, ngf=4, embed_dim=4)
    D = DCGANDiscriminator(num_classes=3, channels=channels, image_size=size, ndf=4, conditioning=conditioning)
    y = torch.tensor([0, 2])
    x = G(torch.randn(2, 8), y)
    assert x.shape == (2, channels, size, size) and x.abs().max() <= 1
    assert D(x, y).shape == (2,)


def test_dcgan_discriminator_depends_on_the_label():
    for conditioning in ("projection", "concat"):
        D = DCGANDiscriminator(num_classes=3, channels=1, image_size=32, ndf=4, conditioning=conditioning).eval()
        x = torch.randn(1, 1, 32, 32)
        assert D(x, torch.tensor([0])).item() != D(x, torch.tensor([1])).item(), conditioning


# ---------------------------------------------------------------- the method interface, every family


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("channels,size", [(1, 24), (3, 32)])
def test_training_steps_change_both_networks_and_keep_losses_finite(family, channels, size):
    method = tiny(family, channels, size)
    g_before = [p.detach().clone() for p in method.G.parameters()]
    d_before = [p.detach().clone() for p in method.D.parameters()]
    images, labels = toy_batch(channels, size)
    for _ in range(3):
        stats = method.train_step(images, labels)
        assert {"loss", "loss_d", "d_real", "d_fake", "d_wins"} <= set(stats)
        assert all(math.isfinite(v) for k, v in stats.items() if k.startswith("loss"))
        assert stats["d_wins"] in (0.0, 1.0)
    assert any(not torch.equal(a, b) for a, b in zip(g_before, method.G.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(d_before, method.D.parameters()))
    assert method.step == 3 and method.g_steps == 3


def test_n_critic_updates_the_generator_every_nth_batch():
    method = tiny("dcgan", n_critic=2)
    images, labels = toy_batch()
    first = method.train_step(images, labels)
    assert "loss" not in first and method.g_steps == 0  # no generator loss before its first update
    assert "loss" in method.train_step(images, labels) and method.g_steps == 1 and method.step == 2


@pytest.mark.parametrize("family", FAMILIES)
def test_sample_is_uint8_seeded_per_image_and_has_no_settings(family):
    method = tiny(family, channels=3, size=28 if family != "ddgan" else 24)
    method.train_step(*toy_batch(3, method.spec.image_size))  # batch-norm statistics off their initial values
    torch.manual_seed(0)
    with torch.no_grad():  # weights far from the near-constant initial generator, so seeds show
        for p in method.ema.shadow.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    labels, seeds = torch.tensor([0, 1, 2, 1, 0]), torch.arange(5) + 100
    samples = method.sample(labels, seeds)
    size = method.spec.image_size
    assert samples.dtype == torch.uint8 and samples.shape == (5, 3, size, size)
    # the same images in batches of 2: equal up to a rounding level (convolutions on other batch shapes
    # may sum in another order)
    assert (samples.int() - method.sample(labels, seeds, batch_size=2).int()).abs().max() <= 1
    assert not torch.equal(samples, method.sample(labels, seeds + 10))
    with pytest.raises(ValueError, match="no sampler settings"):
        method.sample(labels, seeds, steps=2)


@pytest.mark.parametrize("family", FAMILIES)
def test_state_dict_round_trip_resumes_exactly(family):
    images, labels = toy_batch()
    a = tiny(family)
    for _ in range(3):
        a.train_step(images, labels)
    buffer = io.BytesIO()  # through a file, as a checkpoint goes
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    b = tiny(family, seed=123)  # other initial weights and noise: everything must come from the state
    b.load_state_dict(torch.load(buffer, weights_only=True))
    for _ in range(2):
        sa, sb = a.train_step(images, labels), b.train_step(images, labels)
        assert sa.keys() == sb.keys()
        for key in sa:
            assert float(sa[key]) == pytest.approx(float(sb[key]), rel=1e-5, abs=1e-6), key
    seeds = torch.arange(3)
    assert torch.equal(a.sample(labels[:3], seeds), b.sample(labels[:3], seeds))


@pytest.mark.parametrize("family", FAMILIES)
def test_a_gan_has_no_bits_per_dim_and_says_so(family):
    """The plan takes the family's capability: no stage of a GAN computes bits/dim, whatever eval.bpd_at says,
    and every record says why."""
    from types import SimpleNamespace

    from condgen_bench.harness.config import ExperimentConfig
    from condgen_bench.harness.evaluation.plan import Capabilities, finalist_plan, trial_plan

    method = tiny(family)
    assert not method.has_likelihood
    reference = SimpleNamespace(inception=None, inception_missing="no weights")
    caps = Capabilities.of(method, reference, SimpleNamespace(validation=range(3), train_full=None))
    config = ExperimentConfig(eval=EvalConfig(bpd_images=8, bpd_at="every"))
    config.train.eval_every = 1
    for plan in (trial_plan(config, 1, caps), trial_plan(config, config.train.epochs, caps), finalist_plan(config, caps)):
        assert plan.stage and not plan.computes("bpd") and plan.bpd_from is None
        scores = likelihood_metrics(method, None, config.eval, skip=plan.skip.get("bpd"))
        assert math.isnan(scores.metrics["bpd"]) and scores.missing["bpd"] == f"{family} has no likelihood"


def test_a_frozen_generator_loses_completely():
    """With the generator's learning rate at 0 the discriminator soon tells every image apart: the
    statistic the divergence rule watches."""
    method = tiny("dcgan", lr=0.0, d_lr=1e-2, ngf=8, ndf=8)
    images, labels = toy_batch(n=16)
    wins = [method.train_step(images, labels)["d_wins"] for _ in range(60)]
    assert wins[0] == 0.0 and wins[-1] == 1.0


# ---------------------------------------------------------------- the worker's divergence rules


def _verdicts(watch: DivergenceWatch, steps: list[dict]) -> list[str | None]:
    """The watch's verdict read after each step (as if sync_every were 1)."""
    out = []
    for i, s in enumerate(steps):
        watch.observe(s, step=i + 1)
        out.append(watch.verdict())
    return out


def test_divergence_watch_rules():
    assert _verdicts(DivergenceWatch(patience=3), [{"loss": 1.0, "vb": math.nan}]) == [None]  # only losses must be finite
    reasons = _verdicts(DivergenceWatch(patience=3), [{"loss": torch.tensor(1.0)}, {"loss_d": torch.tensor(math.inf)},
                                                      {"loss_d": 1.0}])
    assert reasons[0] is None and reasons[1] == reasons[2] == "loss_d became inf at step 2"  # the first firing is kept
    steps = [{"d_wins": 1.0}, {"d_wins": 1.0}, {"d_wins": 0.0}, {"d_wins": 1.0}, {"d_wins": 1.0}, {"d_wins": 1.0}]
    reasons = _verdicts(DivergenceWatch(patience=3), steps)
    assert reasons[:5] == [None] * 5  # the streak restarts after a step the generator held its own
    assert reasons[5] == "the discriminator won completely on 3 steps in a row (to step 6)"
    assert _verdicts(DivergenceWatch(0), [{"d_wins": torch.tensor(1.0)}] * 10) == [None] * 10
    # read only every few steps (sync_every > 1): the verdict still names the step the rule fired at
    watch = DivergenceWatch(patience=2)
    for i, s in enumerate([{"d_wins": 1.0}, {"d_wins": 1.0}, {"d_wins": 1.0}, {"loss": math.nan}]):
        watch.observe(s, step=i + 1)
    assert watch.verdict() == "the discriminator won completely on 2 steps in a row (to step 2)"


def test_step_stats_average_each_key_over_the_steps_that_had_it():
    stats = StepStats()
    stats.add({"loss_d": torch.tensor(1.0)})
    stats.add({"loss_d": 3.0, "loss": torch.tensor(2.0)})
    assert stats.means() == {"loss": 2.0, "loss_d": 2.0} and stats.steps == 2
