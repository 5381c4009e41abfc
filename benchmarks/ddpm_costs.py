"""What our DDPM costs on this machine, against diffusers' UNet2DModel of the same size and shape.

    python benchmarks/ddpm_costs.py [--device cpu|cuda] [--precision fp32|bf16|fp16] [--compile]
        [--channels-last] [--threads N] [--sizes 24 48] [--unets local large] [--steps K] [--rounds R]
        [--batch B] [--samples N] [--peak-tflops P]

Runs without Ray: only PyTorch (diffusers optional, the ``bench`` extra). For each image size it prints
one row per UNet:
    local   the UNet of experiments/sweep_ddpm.py's local profile (base 16, mult (1, 2, 4), 1 res block,
            attention at the lowest level: 6 px at 24 px, 12 px at 48 px)
    large   Ho et al.'s CIFAR-10 UNet shape (35.7M there; 38.3M here, with our class and time embeddings):
            base 128, mult (1, 2, 2, 2), 2 res blocks a level (improved-diffusion's 3 make 52.5M), attention
            moved from 16 px at 32 px to size / 4 (12 px at 48 px, 6 px at 24 px)

Columns:
    params      our UNet's parameters
    batch       training batch size
    img/s       our training images per second: one full ``train_step`` (label dropout, noise, MSE, AdamW,
                grad clip, EMA), the median step time over the rounds
    ms/img      our sampling cost per image: DDIM with classifier-free guidance (2 network calls a step)
    GF/img      model GFLOPs per training image: a whole training step of our method counted as it runs on a
                meta-device copy (models/flops.py, the counter the harness's TFLOP/s figures use: forward and
                backward, the upsampling convolutions' 16/36 multiply-adds as they run, see models/unet.py)
    TF/s        achieved TFLOP/s in training (GF/img x img/s)
    %peak       TF/s as a share of the device's dense peak for the math the step ran in (models/accel.py
                PEAK_TFLOPS, matched by the GPU's whole model name: bf16 / fp16 tensor cores, or TF32 for
                fp32 rows, which run with TF32 on as the harness trains; or --peak-tflops; CPUs: only with
                --peak-tflops, else "-")
    peer params / peer img/s   diffusers' UNet2DModel (class-conditional, same widths, depths, attention
                levels, heads and scale-shift embedding) trained by the SAME step at the same batch,
                precision and memory format
    ours/peer   our training images/s over the peer's

Timing: warm-up steps for both, then R rounds that alternate ours and the peer (K steps each, the order
swapped every round); the median per-step time over rounds is reported, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

from condgen_bench.datasets.base import FER_EMOTIONS, DatasetSpec, uint8_to_float
from condgen_bench.models import build_method
from condgen_bench.models.accel import (Acceleration, Accelerator, device_name, peak_tflops, resolve_precision,
                                        set_training_math, synchronize, training_generator)
from condgen_bench.models.ddpm import DDPMConfig
from condgen_bench.models.diffusion import GaussianDiffusion
from condgen_bench.models.ema import EMA
from condgen_bench.models.flops import training_flops_per_image
from condgen_bench.models.unet import UNetConfig

try:
    from diffusers import UNet2DModel
except ImportError:  # the peer columns print "-"
    UNet2DModel = None

def unet_config(name: str, size: int) -> UNetConfig:
    """The UNet called ``name`` ("local" or "large") for ``size`` px images."""
    if name == "local":  # experiments/sweep_ddpm.py, local_profile(): attention at the lowest level
        return UNetConfig(base_channels=16, channel_mult=(1, 2, 4), num_res_blocks=1,
                          attention_resolutions=(size // 4,))
    if name == "large":  # Ho et al.'s CIFAR-10 UNet (32 px, attention at 16 px), attention moved down one
        # level for 48 px images (12 px: 144 tokens)
        return UNetConfig(base_channels=128, channel_mult=(1, 2, 2, 2), num_res_blocks=2,
                          attention_resolutions=(size // 4,))
    raise ValueError(f"unknown UNet {name!r}; valid: ['large', 'local']")


def default_batch(name: str, device: torch.device) -> int:
    if device.type == "cuda":
        return 256 if name == "local" else 128
    return 32 if name == "local" else 8  # local: the profile's batch; large: a CPU step of a few seconds


def default_samples(name: str, device: torch.device) -> int:
    if device.type == "cuda":
        return 256
    return 16 if name == "local" else 4  # large: 30 network calls an image at 35 GFLOPs (48 px) on the CPU


@dataclass(frozen=True)
class Settings:
    device: torch.device
    accel: Acceleration  # precision, memory format, compilation (for ours and the peer alike)
    steps: int  # K: training steps timed per round
    rounds: int  # R: alternating rounds of ours / the peer
    warmup: int  # untimed steps first (the compiled case compiles here)
    batch: int | None  # training batch (None: default_batch)
    samples: int | None  # images generated to time sampling (None: default_samples)
    sampling_steps: int  # DDIM steps (guided: 2 network calls each)
    peak_tflops: float | None  # the device's peak for %peak (None: from PEAK_TFLOPS on a GPU)


# ---------------------------------------------------------------------------------------------
# The peer: diffusers' UNet2DModel through the same training step


class DiffusersEps(nn.Module):
    """UNet2DModel as a ``net(x_t, t, y) -> eps`` callable. x: [B, C, H, W], t, y: [B] -> [B, C, H, W]."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t, class_labels=y, return_dict=False)[0]


def diffusers_unet(spec: DatasetSpec, config: UNetConfig) -> nn.Module:
    """UNet2DModel with our UNet's layout: the same widths and blocks per level (one more on the way up),
    self-attention at the same feature-map sizes and in the middle, the embedding as a scale and shift
    of the second GroupNorm, a class embedding with a null class. Wrapped as DiffusersEps."""
    levels = len(config.channel_mult)
    sizes = [spec.image_size]
    for _ in range(levels - 1):
        sizes.append((sizes[-1] + 1) // 2)
    attention = [size in config.attention_resolutions for size in sizes]
    widths = tuple(config.base_channels * m for m in config.channel_mult)
    # diffusers takes one head size for all attention layers: the deepest attended width / our heads
    attended = [w for w, a in zip(widths, attention) if a] + [widths[-1]]  # the middle block attends too
    unet = UNet2DModel(
        sample_size=spec.image_size, in_channels=spec.channels, out_channels=spec.channels,
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)),
        block_out_channels=widths, layers_per_block=config.num_res_blocks,
        attention_head_dim=max(attended) // config.num_heads, norm_num_groups=min(32, config.base_channels),
        resnet_time_scale_shift="scale_shift", dropout=config.dropout,
        num_class_embeds=spec.num_classes + 1,  # the last: the null class
    )
    return DiffusersEps(unet)


class PeerMethod:
    """A network trained by DDPMMethod's step: label dropout to the null class, noise, q_sample, MSE on eps
    (the same GaussianDiffusion), AdamW with the same settings, gradient-norm clipping, EMA with the same
    decay, and the same Accelerator (autocast, loss scaling, memory format, compilation)."""

    def __init__(self, net: nn.Module, config: DDPMConfig, spec: DatasetSpec, device: torch.device,
                 accel: Acceleration, seed: int = 0):
        self.config = config
        self.device = device
        self.acc = Accelerator(accel, device)
        self.diffusion = GaussianDiffusion(config.diffusion).to(device)
        self.net = self.acc.prepare(net.to(device))
        self.ema = EMA(self.net, config.ema_decay)
        self.train_net = self.acc.maybe_compile(self.net)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.scaler = self.acc.scaler()
        self.null_label = spec.num_classes
        self.generator = training_generator(device, seed)

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """images: [B, C, H, W] uint8, labels: [B] -> the loss, a 0-dim tensor on the device."""
        x0 = self.acc.images(uint8_to_float(images.to(self.device)))
        with self.acc.autocast():
            terms = self.diffusion.training_losses(self.train_net, x0, labels.to(self.device), self.null_label,
                                                   self.generator)
        loss = terms["loss"].mean()
        self.acc.step(loss, self.opt, self.scaler, self.net.parameters(), self.config.grad_clip)
        self.ema.update(self.net)
        return loss.detach()


# ---------------------------------------------------------------------------------------------
# Measurements


def seconds_per_step(step, images: torch.Tensor, labels: torch.Tensor, steps: int, device: torch.device) -> float:
    """Wall-clock seconds per call of step(images, labels), over ``steps`` calls (device synchronized)."""
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step(images, labels)
    synchronize(device)
    return (time.perf_counter() - t0) / steps


def peak(settings: Settings) -> float | None:
    """The peak for %peak: --peak-tflops, else the GPU's from PEAK_TFLOPS for the step's math (fp32 rows run
    with TF32), else None (a CPU, an unknown GPU)."""
    if settings.peak_tflops is not None:
        return settings.peak_tflops
    math = "tf32" if settings.accel.precision == "fp32" else settings.accel.precision
    return peak_tflops(device_name(settings.device), math)


@dataclass
class Row:
    unet: str
    params: int
    batch: int
    ours_step: list[float]  # seconds per step, one per round
    sample_ms: float
    samples: int  # images the sampling time is over
    gflops: float  # forward + backward, per training image
    peer_params: int | None = None
    peer_step: list[float] | None = None


def measure(name: str, size: int, settings: Settings) -> Row:
    """Time ours (and the peer, when diffusers is there) for one UNet at one image size."""
    device = settings.device
    spec = DatasetSpec("bench", 1, size, FER_EMOTIONS, "bench")
    unet = unet_config(name, size)
    # the local profile's sampling: stochastic DDIM with guidance
    config = DDPMConfig(unet=unet, sampler="ddim", sampling_steps=settings.sampling_steps, eta=1.0, guidance=3.0)
    ours = build_method("ddpm", config, spec, device=device, seed=0, accel=settings.accel)
    peer = None
    if UNet2DModel is not None:
        torch.manual_seed(0)
        peer = PeerMethod(diffusers_unet(spec, unet), config, spec, device, settings.accel)

    batch = settings.batch or default_batch(name, device)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch, 1, size, size), dtype=torch.uint8, generator=g).to(device)
    labels = (torch.arange(batch) % spec.num_classes).to(device)
    methods = {"ours": ours} if peer is None else {"ours": ours, "peer": peer}
    for method in methods.values():
        seconds_per_step(method.train_step, images, labels, settings.warmup, device)
    times = {key: [] for key in methods}
    for r in range(settings.rounds):
        for key in (list(methods) if r % 2 == 0 else list(reversed(methods))):
            times[key].append(seconds_per_step(methods[key].train_step, images, labels, settings.steps, device))

    samples = settings.samples or default_samples(name, device)
    sample_labels = torch.arange(samples) % spec.num_classes
    ours.sample(sample_labels[:1], torch.arange(1), steps=2)  # warm-up
    synchronize(device)
    t0 = time.perf_counter()
    ours.sample(sample_labels, torch.arange(samples))
    synchronize(device)
    sample_ms = (time.perf_counter() - t0) / samples * 1000

    row = Row(unet=name, params=sum(p.numel() for p in ours.net.parameters()), batch=batch,
              ours_step=times["ours"], sample_ms=sample_ms, samples=samples,
              gflops=training_flops_per_image("ddpm", config, spec, batch) / 1e9)
    if peer is not None:
        row.peer_params = sum(p.numel() for p in peer.net.parameters())
        row.peer_step = times["peer"]
    return row


# ---------------------------------------------------------------------------------------------
# The table

HEADER = (f"{'unet':<6} {'params':>7} {'batch':>5} {'img/s':>8} {'ms/img':>8} {'GF/img':>7} {'TF/s':>7} "
          f"{'%peak':>6} | {'peer params':>11} {'peer img/s':>10} {'ours/peer':>9}")


def format_row(row: Row, peak: float | None) -> str:
    ours_rate = row.batch / statistics.median(row.ours_step)
    tflops = row.gflops * ours_rate / 1000
    share = f"{100 * tflops / peak:.1f}" if peak else "-"
    line = (f"{row.unet:<6} {row.params / 1e6:>6.2f}M {row.batch:>5} {ours_rate:>8.1f} {row.sample_ms:>8.1f} "
            f"{row.gflops:>7.3f} {tflops:>7.4f} {share:>6} | ")
    if row.peer_step is None:
        return line + f"{'-':>11} {'-':>10} {'-':>9}"
    peer_rate = row.batch / statistics.median(row.peer_step)
    return line + f"{row.peer_params / 1e6:>10.2f}M {peer_rate:>10.1f} {ours_rate / peer_rate:>9.2f}"


def format_rounds(row: Row) -> str:
    """The per-round step times (ms), to judge the noise."""
    ours = " ".join(f"{1000 * s:.0f}" for s in row.ours_step)
    line = f"  {row.unet}: sampled {row.samples} images; ms/step per round, ours {ours}"
    if row.peer_step is None:
        return line
    peer = " ".join(f"{1000 * s:.0f}" for s in row.peer_step)
    ratios = " ".join(f"{p / o:.2f}" for o, p in zip(row.ours_step, row.peer_step))
    return f"{line}; peer {peer}; ours/peer {ratios}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default=None,
                        help="training precision (default: bf16 on cuda, fp32 elsewhere)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the trained networks")
    parser.add_argument("--channels-last", action="store_true", help="NHWC networks and inputs")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: PyTorch's)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[24, 48], help="image sizes (px)")
    parser.add_argument("--unets", nargs="+", choices=["local", "large"], default=["local", "large"])
    parser.add_argument("--steps", type=int, default=None, help="K, steps per round (default: 5 cpu, 20 cuda)")
    parser.add_argument("--rounds", type=int, default=5, help="R, alternating rounds")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps (default: 2, 5 with --compile)")
    parser.add_argument("--batch", type=int, default=None, help="training batch (default: by UNet and device)")
    parser.add_argument("--samples", type=int, default=None,
                        help="images sampled (default: 256 on cuda; on the CPU 16 local, 4 large)")
    parser.add_argument("--sampling-steps", type=int, default=15, help="DDIM steps (the local profile's)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's peak TFLOP/s for %%peak")
    args = parser.parse_args()

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = device.type == "cuda"
    settings = Settings(
        device=device,
        accel=Acceleration(precision=resolve_precision(args.precision or "auto", device),
                           channels_last=args.channels_last, compile=args.compile),
        steps=args.steps or (20 if cuda else 5), rounds=args.rounds,
        warmup=args.warmup if args.warmup is not None else (5 if args.compile else 2),
        batch=args.batch, samples=args.samples, sampling_steps=args.sampling_steps,
        peak_tflops=args.peak_tflops)
    where = device_name(device) if cuda else f"cpu, {torch.get_num_threads()} threads"
    print(f"{where}; torch {torch.__version__}; precision {settings.accel.precision}, "
          f"{'channels-last' if args.channels_last else 'contiguous'}, {'compiled' if args.compile else 'eager'}; "
          f"{settings.rounds} rounds x {settings.steps} steps after {settings.warmup} warm-up; sampling: "
          f"DDIM {settings.sampling_steps} steps, eta 1, guidance 3")
    if UNet2DModel is None:
        print("diffusers is not installed (pip install -e '.[bench]'): no peer columns")
    # fp32 rows with TF32 on, as the harness trains (train.tf32); the other precisions' autocast is unaffected
    set_training_math(device, tf32=True)
    peak_value = peak(settings)
    for size in args.sizes:
        print(f"\n{size} px\n{HEADER}\n{'-' * len(HEADER)}", flush=True)
        rows = []
        for name in args.unets:
            rows.append(measure(name, size, settings))
            print(format_row(rows[-1], peak_value), flush=True)
        for row in rows:
            print(format_rounds(row))


if __name__ == "__main__":
    main()
