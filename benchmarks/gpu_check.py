"""The GPU acceptance run: one command for the first GPU machine at hand. Prints a pass/fail table and exits
non-zero on any failure; without a CUDA device it prints why and skips (exit 0: the suite runs it so).

    python benchmarks/gpu_check.py [--steps 100] [--families ddpm dcgan ...] [--no-compile] [--part 1|2|all]
    python benchmarks/gpu_check.py --device cpu --steps 2 --no-compile --part 1   # its machinery, on a CPU

Part 1 needs only PyTorch (a GPU machine may have nothing else):
  - every family trains ``--steps`` steps in fp32, bf16 and fp16, and (bf16) with train.compile, under
    ``torch.cuda.set_sync_debug_mode("error")`` outside the sync points: a step that reads a value back to
    the host or waits for the device fails; the statistics are read every ``--sync-every`` steps, as the
    worker reads them;
  - every family samples on the GPU, and the families with a likelihood take it there; both hand back
    CPU tensors with finite values;
  - a checkpoint written on the GPU restores on the CPU (its noise reseeded, the weights equal), trains a
    step there, and goes back to the GPU;
  - benchmarks/ddpm_costs.py's table in bf16 (its output is printed after the table).
Part 2 runs where Ray is installed:
  - the DDPM smoke sweep on one GPU with its finalist (results, finalist row, evaluation math, device);
  - with two or more GPUs, a 2-worker NCCL trial whose rank 1 is killed after epoch 1 and resumes.

The networks are the smoke-test sizes at 24 px: what is checked is the device discipline, not speed (the
ddpm_costs table measures that). Sized for about 6 minutes on one H100-class GPU, most of it compiling.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass

import torch

from condgen_bench.datasets import FER_EMOTIONS, DatasetSpec
from condgen_bench.harness.steps import DivergenceWatch, StepStats, epoch_batches, restore_noise
from condgen_bench.models import METHODS, build_method, get_method
from condgen_bench.models.accel import Acceleration, device_name, synchronize
from condgen_bench.models.unet import UNetConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 24  # px: the laptop profile's images
BATCH = 32
SMALL_UNET = {"unet": UNetConfig(base_channels=16, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(12,),
                                 num_heads=2)}
# each family at smoke-test width (what differs from its defaults)
CONFIGS = {
    "ddpm": {**SMALL_UNET, "sampling_steps": 10},
    "flow": {**SMALL_UNET, "sampling_steps": 10, "likelihood_steps": 4},
    "dcgan": {"ngf": 16, "ndf": 16},
    "fastgan": {"ngf": 8, "ndf": 16},
    "ddgan": {"unet": UNetConfig(base_channels=16, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=()),
              "ndf": 16, "r1_every": 4},
}


@dataclass
class Outcome:
    check: str
    result: str  # PASS, FAIL or SKIP
    seconds: float
    detail: str


def method_of(family: str, device: str, precision: str = "fp32", compile: bool = False):
    config = get_method(family).config_cls(**CONFIGS.get(family, {}))
    spec = DatasetSpec("check", 1, SIZE, FER_EMOTIONS, "check")
    return build_method(family, config, spec, device=device, seed=0, accel=Acceleration(precision, compile=compile))


@contextlib.contextmanager
def sync_debug(device: torch.device, mode: str):
    """torch.cuda.set_sync_debug_mode(mode) for the block on a CUDA device (nothing elsewhere)."""
    if device.type != "cuda":
        yield
        return
    before = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode(mode)
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(before)


def data_on(device: torch.device, n: int = 256):
    """Random images [n, 1, SIZE, SIZE] uint8 and labels [n] on the device: the split, moved there once."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, SIZE, SIZE), dtype=torch.uint8, generator=g)
    return images.to(device), (torch.arange(n) % len(FER_EMOTIONS)).to(device)


def train_check(family: str, device: torch.device, precision: str, compile: bool, steps: int, sync_every: int) -> str:
    """``steps`` training steps as the worker takes them, with no host synchronisation between its reads."""
    method = method_of(family, device, precision, compile)
    images, labels = data_on(device)
    batches = []
    while len(batches) < steps + 2:
        batches += list(epoch_batches(len(images), len(batches), 0, 1, BATCH, seed=0, device=device))
    for idx in batches[:2]:  # warm-up (compilation happens here)
        method.train_step(images[idx], labels[idx])
    synchronize(device)
    stats, watch = StepStats(device), DivergenceWatch(300, device)
    t0 = time.perf_counter()
    for i, idx in enumerate(batches[2:steps + 2], start=1):
        with sync_debug(device, "error"):
            out = method.train_step(images[idx], labels[idx])
            stats.add(out)
            watch.observe(out, method.step)
        if i % sync_every == 0 and watch.verdict():  # the sync point
            raise AssertionError(f"diverged: {watch.verdict()}")
    means = stats.means()
    seconds = time.perf_counter() - t0
    losses = {k: v for k, v in means.items() if k == "loss" or k.startswith("loss_")}
    if not losses or not all(math.isfinite(v) for v in losses.values()):
        raise AssertionError(f"non-finite losses {losses}")
    return f"{steps / seconds:.0f} steps/s, " + ", ".join(f"{k} {v:.3g}" for k, v in sorted(losses.items()))


def sampling_check(family: str, device: torch.device) -> str:
    """Samples (and the likelihood, where the family has one) on the device, handed back on the CPU."""
    method = method_of(family, device)
    images = method.sample(torch.arange(14) % 7, torch.arange(14) + 10, batch_size=8)
    if images.device.type != "cpu" or images.dtype != torch.uint8 or images.shape != (14, 1, SIZE, SIZE):
        raise AssertionError(f"samples came back as {images.dtype} {tuple(images.shape)} on {images.device}")
    detail = f"14 samples, pixel mean {images.float().mean():.1f}"
    if method.has_likelihood:
        real, labels = data_on("cpu", 6)
        parts = method.bits_per_dim(real, labels, torch.arange(6), t_samples=8)
        bad = {k: str(v.device) for k, v in parts.items() if v.device.type != "cpu" or not torch.isfinite(v).all()}
        if bad:
            raise AssertionError(f"bits/dim parts not finite CPU tensors: {bad}")
        detail += f"; bits/dim {parts['total'].mean():.2f} (6 images)"
    return detail


def checkpoint_check(family: str, device: torch.device) -> str:
    """GPU -> CPU -> GPU: the weights survive both moves, the noise stream is reseeded across device types,
    and each side trains on."""
    images, labels = data_on(device, BATCH)
    gpu = method_of(family, device)
    gpu.train_step(images, labels)
    buffer = io.BytesIO()
    torch.save({"method": gpu.state_dict(), "noise_states": [gpu.noise_state()], "noise_kind": gpu.noise_kind()}, buffer)
    saved = torch.load(io.BytesIO(buffer.getvalue()), map_location="cpu", weights_only=True)
    cpu = method_of(family, "cpu")
    cpu.load_state_dict(saved["method"])
    note_cpu = restore_noise(cpu, saved["noise_states"], 0, 1, 0, 1, saved["noise_kind"])
    for a, b in zip(gpu.state_dict()["ema"]["shadow"].values(), cpu.state_dict()["ema"]["shadow"].values()):
        if not torch.equal(a.cpu(), b):
            raise AssertionError("weights changed on the way to the CPU")
    cpu.train_step(images.cpu(), labels.cpu())
    buffer = io.BytesIO()
    torch.save({"method": cpu.state_dict(), "noise_states": [cpu.noise_state()], "noise_kind": cpu.noise_kind()}, buffer)
    back = torch.load(io.BytesIO(buffer.getvalue()), map_location="cpu", weights_only=True)
    again = method_of(family, device)
    again.load_state_dict(back["method"])
    note_gpu = restore_noise(again, back["noise_states"], 0, 1, 0, 2, back["noise_kind"])
    out = again.train_step(images, labels)
    if not all(math.isfinite(float(v)) for k, v in out.items() if k == "loss" or k.startswith("loss_")):
        raise AssertionError(f"non-finite step after the way back: {out}")
    expected = "continued" if device.type == "cpu" else "fresh noise streams"
    if expected not in note_cpu or expected not in note_gpu:
        raise AssertionError(f"noise streams: {note_cpu!r} / {note_gpu!r}")
    return f"to the CPU: {note_cpu.split(':')[-1].strip()}"


def ddpm_costs_check(device: torch.device) -> str:
    """benchmarks/ddpm_costs.py in bf16 on the device; its table is printed after ours."""
    done = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "ddpm_costs.py"), "--device", str(device),
                           "--precision", "bf16", "--rounds", "3"], capture_output=True, text=True, timeout=600)
    TABLES.append(done.stdout + done.stderr[-2000:])
    if done.returncode:
        raise AssertionError(f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1] if done.stderr else ''}")
    rows = [line for line in done.stdout.splitlines() if line.startswith(("local", "large"))]
    return f"{len(rows)} rows (printed below)"


def sweep(args: list[str], storage: str, env: dict | None = None, timeout: float = 900) -> str:
    """Run experiments/sweep_ddpm.py --smoke-test with ``args`` into ``storage``; returns the run folder."""
    done = subprocess.run([sys.executable, os.path.join(REPO, "experiments", "sweep_ddpm.py"), "--smoke-test",
                           "--storage-path", storage, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    if done.returncode:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise AssertionError(f"exit {done.returncode}:\n{tail}")
    runs = sorted(os.path.join(storage, "ddpm", name) for name in os.listdir(os.path.join(storage, "ddpm")))
    return runs[-1]


def ray_sweep_check(storage: str) -> str:
    """The DDPM smoke sweep on one GPU, with its finalist."""
    import pandas as pd

    run = sweep(["--gpus-per-worker", "1"], storage)
    results = pd.read_parquet(os.path.join(run, "results.parquet"))
    history = pd.read_parquet(os.path.join(run, "history.parquet"))
    finalists = results[results["stage"] == "finalist"]
    if finalists.empty:
        raise AssertionError("no finalist row")
    devices = set(history.get("device", pd.Series(dtype=object)).dropna())
    if not any(d != "cpu" for d in devices):
        raise AssertionError(f"the trials trained on {devices or 'an unrecorded device'}")
    math_modes = set(results["protocol.eval_math"].dropna())
    return (f"{len(results)} rows, finalist {finalists['sample_accuracy'].iloc[0]:.1%} accuracy; trained on "
            f"{', '.join(sorted(devices))}; evaluation math: {', '.join(sorted(math_modes))}")


def nccl_resume_check(storage: str) -> str:
    """A 2-worker NCCL trial whose rank 1 is killed after its first epoch, restarted and resumed."""
    import pandas as pd

    marker = os.path.join(storage, "killed")
    fault = json.dumps({"at": "epoch_end", "do": "kill", "once": marker, "epoch": 1, "rank": 1})
    run = sweep(["--workers-per-trial", "2", "--gpus-per-worker", "1", "--set", "cluster.max_failures=2",
                 "--set", 'sweep.space={"model.lr": [1e-3], "train.epochs": [3]}'], storage,
                env={"CONDGEN_FAULT": fault})
    if not os.path.exists(marker):
        raise AssertionError("the fault never fired")
    history = pd.read_parquet(os.path.join(run, "history.parquet"))
    epochs = sorted(history["epoch"].unique().tolist())
    if epochs != [1, 2, 3]:
        raise AssertionError(f"epochs after the restart: {epochs}")
    return "rank 1 killed after epoch 1; the trial resumed and finished epochs 2-3"


TABLES: list[str] = []


def run_check(name: str, work) -> Outcome:
    t0 = time.perf_counter()
    try:
        detail = work()
        result = "PASS"
    except Exception as error:  # noqa: BLE001 - every failure is a row of the table
        result, detail = "FAIL", f"{type(error).__name__}: {str(error).strip()[:400]}"
        traceback.print_exc(file=sys.stderr)
    outcome = Outcome(name, result, time.perf_counter() - t0, detail)
    print(f"{outcome.result:4}  {outcome.seconds:6.1f} s  {outcome.check}: {outcome.detail}", flush=True)
    return outcome


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda[:N] (the check), or cpu (the machinery only)")
    parser.add_argument("--steps", type=int, default=100, help="training steps per family and precision")
    parser.add_argument("--sync-every", type=int, default=50, help="steps between the statistics' host reads")
    parser.add_argument("--families", nargs="+", default=sorted(METHODS), choices=sorted(METHODS))
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "fp16"], choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--no-compile", action="store_true", help="leave out the train.compile runs")
    parser.add_argument("--part", choices=["1", "2", "all"], default="all")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"SKIP: no CUDA device here (torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}, "
              "torch.cuda.is_available() is False): run this on a GPU machine")
        return 0
    print(f"{device_name(device)}; torch {torch.__version__}; {args.steps} steps per run, statistics read every "
          f"{args.sync_every}; sync debug mode 'error' between reads" + (" (CUDA only)" if device.type != "cuda" else ""))
    outcomes = []
    if args.part in ("1", "all"):
        for family in args.families:
            for precision in args.precisions:
                outcomes.append(run_check(f"train {family} {precision}", lambda: train_check(
                    family, device, precision, False, args.steps, args.sync_every)))
            if not args.no_compile:
                outcomes.append(run_check(f"train {family} bf16 compiled", lambda: train_check(
                    family, device, "bf16", True, args.steps, args.sync_every)))
            outcomes.append(run_check(f"sample {family}", lambda: sampling_check(family, device)))
            outcomes.append(run_check(f"checkpoint {family} {device.type} -> cpu -> {device.type}",
                                      lambda: checkpoint_check(family, device)))
        if device.type == "cuda":
            outcomes.append(run_check("ddpm_costs.py --precision bf16", lambda: ddpm_costs_check(device)))
    if args.part in ("2", "all"):
        if importlib.util.find_spec("ray") is None:
            outcomes.append(Outcome("part 2 (Ray)", "SKIP", 0.0, "Ray is not installed on this machine"))
        else:
            with tempfile.TemporaryDirectory() as storage:
                outcomes.append(run_check("ray: DDPM smoke sweep on 1 GPU with its finalist",
                                          lambda: ray_sweep_check(os.path.join(storage, "one"))))
                if device.type == "cuda" and torch.cuda.device_count() >= 2:
                    outcomes.append(run_check("ray: 2-worker NCCL trial killed and resumed",
                                              lambda: nccl_resume_check(os.path.join(storage, "two"))))
                else:
                    outcomes.append(Outcome("ray: 2-worker NCCL trial killed and resumed", "SKIP", 0.0,
                                            "needs two or more GPUs"))
    failed = [o for o in outcomes if o.result == "FAIL"]
    width = max(len(o.check) for o in outcomes)
    print(f"\n{'check':<{width}}  result  seconds  detail")
    for o in outcomes:
        print(f"{o.check:<{width}}  {o.result:<6}  {o.seconds:7.1f}  {o.detail}")
    print(f"\n{len(outcomes) - len(failed)} of {len(outcomes)} passed or skipped, {len(failed)} failed; "
          f"{sum(o.seconds for o in outcomes):.0f} s")
    for table in TABLES:
        print("\n" + table)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
