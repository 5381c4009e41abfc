"""The training loop's device discipline (harness/steps.py, models/accel.py): collectives on the worker's
device, no host sync inside a step, per-rank noise streams through a checkpoint, and the precisions."""

import math
import os
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from condgen_bench.harness.steps import (DivergenceWatch, StepStats, epoch_batches, gather_noise_states, noise_seed,
                           restore_noise)
from condgen_bench.models import get_method
from condgen_bench.models.accel import Acceleration, CompileError, resolve_precision
from families import FAMILIES, tiny_method

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ddpm(seed=0, accel=None, wrap=None):
    return tiny_method("ddpm", seed=seed, accel=accel, wrap=wrap)[0]


def any_family(family, accel=None):
    """A tiny method of ``family`` and its image size."""
    return tiny_method(family, accel=accel)


def gan(family, accel=None):
    return tiny_method(family, accel=accel)[0]


def weights(method) -> dict[str, torch.Tensor]:
    """Copies of the floating-point tensors of a method's state (weights, EMA, optimizer moments), by path: all
    of them stay as they were unless an optimizer step is taken. The loss scalers' state (``scaler*``) is left
    out: a scaler halves its scale on a step it skips."""
    found = {}

    def walk(value, path):
        if isinstance(value, torch.Tensor):
            if value.is_floating_point():
                found[path] = value.detach().clone()
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}.{key}")
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                walk(item, f"{path}.{i}")

    for key, value in method.state_dict().items():
        if not key.startswith("scaler"):
            walk(value, key)
    return found


def batch(size=8, n=8):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 1, size, size), generator=g, dtype=torch.uint8), torch.arange(n) % 3


# ---------------------------------------------------------------- collectives and host syncs


class Reached(Exception):
    """Raised by the recording collective: the helper got as far as the collective."""


@pytest.fixture
def recorder(monkeypatch):
    """Replace dist.all_reduce / all_gather by a recorder that checks every tensor is on the meta device
    (standing in for a GPU: a helper that builds its tensors on the CPU fails here, as NCCL would)."""
    seen = []

    def record(*args, **kwargs):
        tensors = [t for a in args for t in (a if isinstance(a, list) else [a]) if isinstance(t, torch.Tensor)]
        seen.extend(t.device for t in tensors)
        assert all(t.device.type == "meta" for t in tensors), [t.device for t in tensors]
        raise Reached

    monkeypatch.setattr(dist, "all_reduce", record)
    monkeypatch.setattr(dist, "all_gather", record)
    return seen


def test_every_collective_uses_tensors_on_the_workers_device(recorder):
    meta = torch.device("meta")
    stats = StepStats(meta)
    watch = DivergenceWatch(patience=3, device=meta)
    for step in range(1, 4):  # adding steps on the device needs no value on the host (meta tensors have none)
        out = {"loss": torch.ones((), device=meta), "d_wins": torch.zeros((), device=meta), "lr": 1e-3}
        stats.add(out)
        watch.observe(out, step)
    with pytest.raises(Reached):
        stats.means(world=2)
    with pytest.raises(Reached):
        watch.verdict(world=2)
    with pytest.raises(Reached):
        gather_noise_states(torch.zeros(16, dtype=torch.uint8), world=2, device=meta)
    assert len(recorder) >= 3 and all(d.type == "meta" for d in recorder)


def test_epoch_batches_land_on_the_device_and_deal_the_same_permutation():
    ranks = [torch.cat(list(epoch_batches(40, 3, r, 2, 4, seed=1, device="meta"))) for r in range(2)]
    assert all(r.device.type == "meta" and r.shape == (20,) for r in ranks)
    cpu = [torch.cat(list(epoch_batches(40, 3, r, 2, 4, seed=1))) for r in range(2)]
    assert sorted(torch.cat(cpu).tolist()) == list(range(40))  # the ranks' shards are disjoint and cover all


@pytest.fixture
def host_reads(monkeypatch):
    """Record every read of a tensor's value on the host (item, float, bool, int, tolist) made by this
    project's code (not by torch's own, e.g. the optimizer's CPU step counter)."""
    calls = []
    ours = tuple(os.path.join(REPO, d) for d in ("models", "harness", "datasets"))
    for name in ("item", "__float__", "__bool__", "__int__", "tolist"):
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, _original=original, _name=name, **kwargs):
            caller = sys._getframe(1).f_code.co_filename  # the caller's file (inspect.stack builds every frame)
            if caller.startswith(ours):
                calls.append(f"{_name} in {os.path.relpath(caller, REPO)}")
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, wrapper)
    return calls


@pytest.mark.parametrize("family", FAMILIES)
def test_a_training_step_reads_nothing_back_to_the_host(family, host_reads):
    method, size = any_family(family)
    images, labels = batch(size=size)
    for _ in range(2):
        out = method.train_step(images, labels)
    assert host_reads == []
    assert all(isinstance(v, (torch.Tensor, float)) for v in out.values())


# ---------------------------------------------------------------- noise streams through a checkpoint


def test_checkpoint_random_states_are_cpu_tensors_and_survive_a_cpu_map_location(tmp_path):
    images, labels = batch()
    a = ddpm()
    a.train_step(images, labels)
    state = a.state_dict()
    assert state["generator"].device.type == "cpu" and state["generator"].dtype == torch.uint8
    torch.save({"method": state, "noise_states": gather_noise_states(a.noise_state(), 1, "cpu")}, tmp_path / "c.pt")
    loaded = torch.load(tmp_path / "c.pt", map_location="cpu", weights_only=True)
    b = ddpm(seed=5)
    b.load_state_dict(loaded["method"])
    assert restore_noise(b, loaded["noise_states"], 0, 1, seed=0, epoch=1) == "continued this rank's noise stream"
    assert float(a.train_step(images, labels)["loss"]) == pytest.approx(float(b.train_step(images, labels)["loss"]), rel=1e-6)


def test_a_checkpoint_from_another_world_size_reseeds_each_rank():
    a, b = ddpm(), ddpm()
    state = a.noise_state()
    note = restore_noise(b, [state], rank=1, world=2, seed=0, epoch=3)
    assert "noise states of 1 ranks for 2" in note
    assert not torch.equal(b.noise_state(), state)


def _two_rank_restore(rank: int, world: int, folder: str) -> None:
    """One DDP rank (gloo): train 2 steps, checkpoint (rank 0 writes every rank's noise state), take the next
    step uninterrupted; then a fresh method restores the checkpoint and takes that step again."""
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world)
    torch.set_num_threads(1)
    ddp = torch.nn.parallel.DistributedDataParallel
    images, labels = batch(n=16)
    images, labels = images[rank::world], labels[rank::world]
    a = ddpm(wrap=ddp)
    a.seed_noise(noise_seed(0, rank))
    for _ in range(2):
        a.train_step(images, labels)
    states = gather_noise_states(a.noise_state(), world, "cpu")
    if rank == 0:
        torch.save({"method": a.state_dict(), "noise_states": states}, f"{folder}/checkpoint.pt")
    dist.barrier()
    uninterrupted = float(a.train_step(images, labels)["loss"])
    b = ddpm(seed=99, wrap=ddp)
    b.seed_noise(noise_seed(0, rank))
    state = torch.load(f"{folder}/checkpoint.pt", map_location="cpu", weights_only=True)
    b.load_state_dict(state["method"])  # rank 0's generator state on every rank ...
    restore_noise(b, state["noise_states"], rank, world, seed=0, epoch=2)  # ... then this rank's own
    resumed = float(b.train_step(images, labels)["loss"])
    # a GAN averages its gradients itself (no DDP, models/gan.py): the ranks' different batches and noise give
    # different gradients, whose mean both apply, so both hold the same weights after its steps
    g = gan("dcgan")
    g.seed_noise(noise_seed(0, rank))
    gan_images, gan_labels = batch(size=get_method("dcgan").tiny_image_size, n=16)
    for _ in range(2):
        g.train_step(gan_images[rank::world], gan_labels[rank::world])
    torch.save({"uninterrupted": uninterrupted, "resumed": resumed,
                "gan": {k: v.detach().clone() for k, v in g.G.named_parameters()}}, f"{folder}/rank{rank}.pt")
    dist.destroy_process_group()


def test_a_two_worker_restore_continues_each_ranks_noise_stream_and_a_gan_averages_its_gradients(tmp_path):
    mp.spawn(_two_rank_restore, args=(2, str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for r in results:
        assert r["resumed"] == pytest.approx(r["uninterrupted"], rel=1e-6)
    assert results[0]["uninterrupted"] != results[1]["uninterrupted"]  # the ranks draw different noise
    alone = gan("dcgan")  # what one rank would hold had it not averaged
    alone.seed_noise(noise_seed(0, 0))
    images, labels = batch(size=get_method("dcgan").tiny_image_size, n=16)
    for _ in range(2):
        alone.train_step(images[0::2], labels[0::2])
    for name, value in results[0]["gan"].items():  # (batch norm's running statistics stay each rank's own)
        assert torch.equal(value, results[1]["gan"][name]), name  # every rank holds the averaged weights
    own = dict(alone.G.named_parameters())
    assert any(not torch.equal(v, own[k]) for k, v in results[0]["gan"].items())


# ---------------------------------------------------------------- precisions


def test_auto_precision_is_bf16_on_gpus_and_fp32_elsewhere():
    assert resolve_precision("auto", "cuda:0") == "bf16" and resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("fp16", "cpu") == "fp16"
    with pytest.raises(ValueError, match="valid"):
        resolve_precision("fp8", "cpu")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("family", FAMILIES)
def test_mixed_precision_steps_give_finite_losses_and_change_the_weights(family, precision):
    method, size = any_family(family, accel=Acceleration(precision))
    before = weights(method)
    images, labels = batch(size=size)
    outs = [method.train_step(images, labels) for _ in range(2)]
    losses = [float(o[k]) for o in outs for k in o if k == "loss" or k.startswith("loss_")]
    assert losses and all(math.isfinite(v) for v in losses)
    after = weights(method)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    if precision == "fp16":  # the scaler's state is part of the checkpoint
        assert any(k.startswith("scaler") for k in method.state_dict())


# Each family's losses on its first fixed-seed steps in fp32, recorded with the code before mixed precision
# and device-side statistics were added (commit 5b07a24): fp32 training must compute what it computed.
FP32_BEFORE = {
    "ddpm": [0.973743856, 0.998258948, 0.873501897],  # loss of steps 1-3
    "dcgan": [1.60081518, 1.59462905, 1.57838047, 0.470324337],  # loss_d of steps 1-3, then the generator's loss
    "fastgan": [4.36329794, 3.48748112, 5.4454298, -0.771286249],
    "ddgan": [1.38692093, 1.38674223, 1.38580096, 0.697266161],
}


@pytest.mark.parametrize("family", sorted(FP32_BEFORE))
def test_fp32_training_is_unchanged(family):
    if family == "ddpm":
        from test_models import tiny_ddpm  # the same tiny model and batch the values were recorded with

        method = tiny_ddpm()
        g = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (8, 1, 8, 8), generator=g, dtype=torch.uint8)
        got = [float(method.train_step(images, torch.arange(8) % 3)["loss"]) for _ in range(3)]
    else:
        from test_gan import tiny, toy_batch

        method = tiny(family)
        images, labels = toy_batch()
        outs = [method.train_step(images, labels) for _ in range(3)]
        got = [float(o["loss_d"]) for o in outs] + [float(outs[-1]["loss"])]
    assert got == pytest.approx(FP32_BEFORE[family], rel=1e-5)


def test_channels_last_computes_the_same_step():
    images, labels = batch()
    plain, nhwc = ddpm(), ddpm(accel=Acceleration(channels_last=True))
    for _ in range(2):
        a, b = plain.train_step(images, labels), nhwc.train_step(images, labels)
        assert float(a["loss"]) == pytest.approx(float(b["loss"]), rel=1e-5)


class Raising(torch.nn.Module):
    """A stand-in for a compiled network whose first call raises ``error``."""

    def __init__(self, error: Exception):
        super().__init__()
        self.error = error

    def forward(self, *args):
        raise self.error


def test_a_platform_that_cannot_compile_says_what_to_set(monkeypatch):
    from torch._dynamo.exc import BackendCompilerFailed

    failure = BackendCompilerFailed(lambda *a: None, RuntimeError("no working C++ compiler found"), None)
    monkeypatch.setattr(torch, "compile", lambda net: Raising(failure))
    method = ddpm(accel=Acceleration(compile=True))
    with pytest.raises(CompileError, match="train.compile=false"):
        method.train_step(*batch())


@pytest.mark.parametrize("error", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                                   torch.distributed.DistBackendError("NCCL error: unhandled system error"),
                                   RuntimeError("mat1 and mat2 shapes cannot be multiplied")],
                         ids=["out of memory", "NCCL", "the network's own"])
def test_a_first_step_error_that_is_not_the_compilers_keeps_its_own_type_and_message(monkeypatch, error):
    monkeypatch.setattr(torch, "compile", lambda net: Raising(error))
    method = ddpm(accel=Acceleration(compile=True))
    with pytest.raises(type(error)) as raised:
        method.train_step(*batch())
    assert raised.type is type(error) and "train.compile" not in str(raised.value)
