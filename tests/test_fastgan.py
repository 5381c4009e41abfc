"""FastGAN: network shapes, DiffAugment, training steps, seeded sampling, checkpoint round trip."""

import pytest
import torch

from condgen_bench.datasets.base import DatasetSpec
from condgen_bench.models.diffaugment import diff_augment
from condgen_bench.models.fastgan import FastGANConfig, FastGANDiscriminator, FastGANGenerator, FastGANMethod

CLASSES = ("a", "b", "c")


def tiny_config(**overrides) -> FastGANConfig:
    settings = dict(ngf=4, ndf=4, z_dim=8, embed_dim=4, policy="color,translation,cutout")
    settings.update(overrides)
    return FastGANConfig(**settings)


def tiny_method(channels: int = 3, size: int = 24, seed: int = 0, **overrides) -> FastGANMethod:
    return FastGANMethod(tiny_config(**overrides), DatasetSpec("toy", channels, size, CLASSES, "fp"), seed=seed)


def toy_batch(channels: int, size: int, n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)
    return images, torch.arange(n) % len(CLASSES)


# --- networks ------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [24, 28, 32, 48, 64])
def test_network_shapes(channels, size):
    G = FastGANGenerator(z_dim=8, num_classes=3, channels=channels, image_size=size, ngf=4, embed_dim=4)
    D = FastGANDiscriminator(num_classes=3, channels=channels, image_size=size, ndf=4)
    y = torch.tensor([0, 2])
    x = G(torch.randn(2, 8), y)
    assert x.shape == (2, channels, size, size) and x.abs().max() <= 1
    assert D(x, y).shape == (2,)
    maps = D.features(x)
    assert maps[-1].shape[-1] == size // 2 ** len(maps)
    whole, part = D.decode(maps, torch.tensor([0, 3]))
    base = maps[-1].shape[-1]
    assert whole.shape == (2, channels, min(4 * base, size), min(4 * base, size))
    assert part.shape == (2, channels, min(4 * base, size // 2), min(4 * base, size // 2))


@pytest.mark.parametrize("batch_norm", [True, False])
def test_discriminator_batch_norm_is_optional_and_keeps_shapes(batch_norm):
    D = FastGANDiscriminator(num_classes=3, channels=1, image_size=32, ndf=4, batch_norm=batch_norm)
    norms = [m for block in D.down for m in block if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == (len(D.down) - 1 if batch_norm else 0)  # never on the first block
    assert D(torch.zeros(2, 1, 32, 32), torch.tensor([0, 1])).shape == (2,)


def test_a_single_doubling_has_no_quarter_decoder():
    D = FastGANDiscriminator(num_classes=3, channels=1, image_size=26, ndf=4)  # 26 = 13 * 2
    whole, part = D.decode(D.features(torch.zeros(2, 1, 26, 26)), torch.tensor([0, 1]))
    assert whole.shape == (2, 1, 26, 26) and part is None


# --- DiffAugment ---------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["", "color", "translation", "cutout", "color,translation,cutout"])
@pytest.mark.parametrize("channels", [1, 3])
def test_diff_augment_keeps_shapes(policy, channels):
    x = torch.rand(4, channels, 12, 12) * 2 - 1
    (out,) = diff_augment(x, policy=policy, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    if policy == "":
        assert torch.equal(out, x)


def test_diff_augment_transforms_a_pair_alike_and_samples_differently():
    a, b = torch.rand(2, 6, 3, 16, 16) * 2 - 1
    a2, b2 = diff_augment(a, b, generator=torch.Generator().manual_seed(1))
    (a_alone,) = diff_augment(a, generator=torch.Generator().manual_seed(1))
    (b_alone,) = diff_augment(b, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a2, a_alone) and torch.equal(b2, b_alone)  # the same draws, whatever is passed with it
    same, again = diff_augment(a, a, generator=torch.Generator().manual_seed(2))
    assert torch.equal(same, again)
    # one image repeated: every sample gets its own transform
    copies = a[:1].expand(6, -1, -1, -1)
    for policy in ("color", "translation", "cutout"):
        (out,) = diff_augment(copies, policy=policy, generator=torch.Generator().manual_seed(3))
        assert len({tuple(o.flatten().tolist()) for o in out}) > 1, policy


def test_translation_moves_content_and_cutout_zeroes_a_square():
    x = -torch.ones(8, 1, 16, 16)
    x[:, :, 8, 8] = 1.0  # one white pixel: a shift of at most 2 keeps it in the image
    (moved,) = diff_augment(x, policy="translation", generator=torch.Generator().manual_seed(0))
    assert torch.all((moved == 1).sum(dim=(1, 2, 3)) == 1)
    rows, cols = torch.nonzero(moved[:, 0] == 1)[:, 1:].T
    assert (rows - 8).abs().max() <= 2 and (cols - 8).abs().max() <= 2 and not torch.equal(moved, x)
    (cut,) = diff_augment(torch.ones(8, 1, 16, 16), policy="cutout", generator=torch.Generator().manual_seed(0))
    zeros = (cut == 0).sum(dim=(1, 2, 3))
    assert torch.all(zeros > 0) and torch.all(zeros <= 8 * 8) and torch.all((cut == 0) | (cut == 1))


def test_diff_augment_is_differentiable():
    x = (torch.rand(4, 3, 16, 16) * 2 - 1).requires_grad_(True)
    (out,) = diff_augment(x, generator=torch.Generator().manual_seed(0))
    out.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_diff_augment_rejects_an_unknown_op():
    with pytest.raises(ValueError, match="valid"):
        diff_augment(torch.zeros(1, 1, 8, 8), policy="color,flip")
    with pytest.raises(ValueError, match="flip"):
        tiny_method(policy="flip")


# --- the method ----------------------------------------------------------------------------------


def test_a_step_reports_the_reconstruction_loss():
    """The interface every GAN shares (steps, seeded sampling, checkpoints) is tested in test_gan.py."""
    method = tiny_method(1, 32)
    stats = method.train_step(*toy_batch(1, 32))
    assert stats["loss_recon"] > 0 and stats["loss_g"] == stats["loss"]
    assert method.network_evaluations() == 1
