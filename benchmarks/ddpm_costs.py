"""What a DDPM configuration costs on this machine: training step time and sampling time per image.

    python benchmarks/ddpm_costs.py [--device cuda] [--threads 2]

Prints one table row per (image size, UNet width, batch size): parameters, seconds per training
step, training images per second, and milliseconds per generated image with the evaluation's
sampler (stochastic DDIM, 15 steps with guidance: 30 network calls). Used to size the local profile of
experiments/sweep_ddpm.py.
"""

import argparse
import time

import torch

from datasets import DatasetSpec, FER_EMOTIONS
from models import build_method
from models.ddpm import DDPMConfig
from models.unet import UNetConfig

# (image size, base channels, channel multipliers, attention resolution, batch size)
CASES = [
    (24, 16, (1, 2, 4), 6, 32),
    (24, 16, (1, 2, 4), 6, 64),
    (32, 16, (1, 2, 4), 8, 32),
    (32, 32, (1, 2, 2), 8, 64),
    (48, 32, (1, 2, 2), 12, 64),
]


def measure(size, base, mult, attention, batch, device, steps=6, samples=64):
    spec = DatasetSpec("bench", 1, size, FER_EMOTIONS, "bench")
    config = DDPMConfig(unet=UNetConfig(base_channels=base, channel_mult=mult, num_res_blocks=1,
                                        attention_resolutions=(attention,)),
                        sampler="ddim", sampling_steps=15, eta=1.0, guidance=3.0)
    method = build_method("ddpm", config, spec, device=device)
    images = torch.randint(0, 256, (batch, 1, size, size), dtype=torch.uint8)
    labels = torch.arange(batch) % len(FER_EMOTIONS)
    method.train_step(images, labels)  # warm-up
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        method.train_step(images, labels)
    sync()
    step_seconds = (time.perf_counter() - t0) / steps
    labels = torch.arange(samples) % len(FER_EMOTIONS)
    t0 = time.perf_counter()
    method.sample(labels, torch.arange(samples))
    sync()
    sample_ms = (time.perf_counter() - t0) / samples * 1000
    params = sum(p.numel() for p in method.net.parameters())
    return params, step_seconds, batch / step_seconds, sample_ms


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"device {args.device}, {args.threads} threads, torch {torch.__version__}\n")
    header = f"{'size':>4} {'width':>5} {'mult':>9} {'batch':>5} {'params':>8} {'s/step':>7} {'img/s':>7} {'ms/sample':>9}"
    print(header)
    print("-" * len(header))
    for size, base, mult, attention, batch in CASES:
        params, step, rate, ms = measure(size, base, mult, attention, batch, args.device)
        print(f"{size:>4} {base:>5} {str(mult):>9} {batch:>5} {params / 1e6:>7.2f}M {step:>7.3f} {rate:>7.0f} {ms:>9.1f}")


if __name__ == "__main__":
    main()
