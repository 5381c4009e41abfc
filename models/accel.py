"""How the project uses the hardware, and the one module that looks at a device's type.

Everything else takes the same code path on every device, so that the CPU suite runs the copies, caches and
random draws a GPU runs (tests/test_devices.py reads the code for branches on a device's type). What
differs between devices is decided here:

- the training step's numeric precision (autocast, with a loss scaler for fp16), memory format and
  torch.compile (``Acceleration`` / ``Accelerator``; the methods route every training forward pass and
  optimizer step through it, so that all families honour ``train.precision`` / ``channels_last`` /
  ``compile`` alike);
- which precision "auto" means on a device (``resolve_precision``);
- the math mode of training (TF32 on GPUs that have it) and of evaluation (plain fp32, always:
  ``evaluation_math``);
- the random-number generator a device's draws use (``training_generator``);
- what a device offers: free memory for the training split, its name and dense peak TFLOP/s, and the
  attention kernel that is fastest there.

Precisions:
    fp32   no autocast (the CPU default)
    bf16   autocast to bfloat16, no loss scaling (bfloat16 has float32's exponent range; "auto" on GPUs of
           compute capability 8.0 or above, which compute in it natively)
    fp16   autocast to float16 with a GradScaler (float16 gradients underflow without it; "auto" on compute
           capability 7.x, whose tensor cores have no bfloat16)

Losses and the optimizer's arithmetic stay in float32: a network's output is cast back to float32
before any loss is formed, and autocast never touches the weights.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


# ---------------------------------------------------------------------------------------------
# Devices


def _cuda(device: torch.device | str) -> bool:
    return torch.device(device).type == "cuda"


def on_host(device: torch.device | str) -> bool:
    """Whether ``device`` is the CPU: work on it can go to other processes (the augmentation study's Ray
    tasks), where an accelerator held by this process cannot be lent."""
    return torch.device(device).type == "cpu"


def compute_capability(device: torch.device | str) -> tuple[int, int] | None:
    """(major, minor) of a CUDA device that is present; None for any other device (or CUDA simulated)."""
    if _cuda(device) and torch.cuda.is_available():
        return torch.cuda.get_device_capability(torch.device(device))
    return None


def resolve_precision(name: str, device: torch.device | str, capability: tuple[int, int] | None = None) -> str:
    """A ``train.precision`` for ``device``: "auto" -> on a CUDA device "bf16" at compute capability 8.0 or
    above (native bfloat16), "fp16" at 7.x (V100, T4: fp16 tensor cores, bfloat16 only emulated and slower
    than fp32), "fp32" below; "fp32" on any other device. Any other valid name is returned unchanged.
    ``capability``: the device's (major, minor), read from it where None (a CUDA device whose capability
    cannot be read, a simulated one, counts as 8.0)."""
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {name!r}; valid: {list(PRECISIONS)}")
    if name != "auto":
        return name
    if not _cuda(device):
        return "fp32"
    major, _ = capability or compute_capability(device) or (8, 0)
    return "bf16" if major >= 8 else "fp16" if major == 7 else "fp32"


def training_generator(device: torch.device | str, seed: int) -> torch.Generator:
    """A generator seeded with ``seed`` for random draws on ``device``: the device's own (CUDA's Philox on a
    GPU, whose state is 16 bytes; a CPU's Mersenne Twister, 5,056 bytes), or a CPU one where the device has
    no generator on this machine (``meta``, and CUDA simulated without a GPU: their draws accept it)."""
    device = torch.device(device)
    if device.type == "meta" or (device.type == "cuda" and not torch.cuda.is_available()):
        return torch.Generator().manual_seed(seed)
    return torch.Generator(device=device).manual_seed(seed)


def set_training_math(device: torch.device | str, tf32: bool) -> str:
    """Set the process's float32 math for training on ``device``: TF32 matmuls and convolutions on a CUDA
    device when ``tf32`` (Ampere and later; ignored on older GPUs), plain fp32 otherwise. Returns the mode's
    name for the records ("tf32" or "fp32"). Evaluation switches TF32 off for its own duration
    (``evaluation_math``)."""
    on = bool(tf32) and _cuda(device)
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on
    return "tf32" if on else "fp32"


EVALUATION_MATH = "fp32, no TF32 (matmuls and convolutions), EMA weights, no autocast"


@contextlib.contextmanager
def evaluation_math() -> Iterator[str]:
    """The evaluation's math mode for the block, whatever the training set: float32 matmuls and convolutions
    without TF32 (cuDNN's convolutions default to TF32 on GPUs that have it), restored afterwards. Yields its
    description (EVALUATION_MATH), which the protocol records."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield EVALUATION_MATH
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def free_memory(device: torch.device | str) -> int | None:
    """Bytes free on an accelerator's memory, or None where the data would stay in host memory anyway (a
    CPU: its "device" is the host)."""
    return torch.cuda.mem_get_info(torch.device(device))[0] if _cuda(device) else None


def plain_attention(device: torch.device, tokens: int) -> bool:
    """Whether softmax(q k^T) v as three plain ops beats PyTorch's fused scaled_dot_product_attention here:
    on a CPU at up to 256 tokens (1.3-2x faster than both CPU paths of the fused op at the UNet's 36 and 144
    tokens; torch 2.14, 2 threads); never on a GPU, whose fused kernels avoid materialising the scores."""
    return device.type == "cpu" and tokens <= 256


def task_device(gpus: float) -> torch.device:
    """The device of a process given ``gpus`` GPUs (a Ray task's or worker's share): CUDA where it has one
    and CUDA is present, else the CPU."""
    return torch.device("cuda" if gpus > 0 and torch.cuda.is_available() else "cpu")


def gpu_count() -> int:
    """CUDA devices this process can see (0 without CUDA)."""
    return torch.cuda.device_count()


def synchronize(device: torch.device | str) -> None:
    """Wait for the device's queued work (nothing to wait for on a CPU): before reading a wall clock."""
    if _cuda(device):
        torch.cuda.synchronize(torch.device(device))


def device_name(device: torch.device | str) -> str:
    """The device's model name ("NVIDIA H100 80GB HBM3"), or its type where it has none ("cpu")."""
    return torch.cuda.get_device_name(torch.device(device)) if _cuda(device) and torch.cuda.is_available() \
        else torch.device(device).type


# Dense (no sparsity) peak TFLOP/s of data-centre and workstation GPUs, vendors' datasheets: (bf16 / fp16 tensor
# cores, TF32 tensor cores, plain fp32). A model is recognised by its whole name token(s) in the device name
# (``gpu_model``), so that "L4" is not an L40 and "H100 NVL" not an H100 SXM.
PEAK_TFLOPS: dict[str, tuple[float, float, float]] = {
    "H200": (989.0, 494.5, 67.0),  # SXM
    "H100 NVL": (835.0, 417.5, 60.0),
    "H100 PCIe": (756.0, 378.0, 51.0),
    "H100": (989.0, 494.5, 67.0),  # SXM (HBM3)
    "A100": (312.0, 156.0, 19.5),
    "L40S": (362.0, 183.0, 91.6),
    "L40": (181.0, 90.5, 90.5),
    "L4": (121.0, 60.0, 30.3),
    "A10": (125.0, 62.5, 31.2),
    "RTX 4090": (165.2, 82.6, 82.6),
    "V100": (125.0, 15.7, 15.7),  # fp16 tensor cores; no bf16 or TF32 (bf16 emulated)
    "T4": (65.0, 8.1, 8.1),  # likewise
}


def gpu_model(name: str) -> str | None:
    """The PEAK_TFLOPS key a device name stands for, matched as whole tokens, longest key first: "NVIDIA H100
    NVL" -> "H100 NVL", "NVIDIA L40" -> "L40", "NVIDIA L4" -> "L4"; None for a model not in the table."""
    for key in sorted(PEAK_TFLOPS, key=len, reverse=True):
        if re.search(rf"(?<![A-Za-z0-9]){re.escape(key)}(?![A-Za-z0-9])", name):
            return key
    return None


def peak_tflops(name: str, math: str = "bf16") -> float | None:
    """A GPU's dense peak TFLOP/s by its device name for ``math``: "bf16" / "fp16" (tensor cores), "tf32", or
    "fp32" (plain); None for a device not in PEAK_TFLOPS (a CPU, say)."""
    model = gpu_model(name)
    if model is None:
        return None
    low, tf32, fp32 = PEAK_TFLOPS[model]
    return {"bf16": low, "fp16": low, "tf32": tf32, "fp32": fp32}[math]


# ---------------------------------------------------------------------------------------------
# The training step


@dataclass(frozen=True)
class Acceleration:
    precision: str = "fp32"  # "fp32", "bf16" or "fp16" (resolve "auto" with resolve_precision first)
    channels_last: bool = False  # networks and their image inputs in NHWC memory order
    compile: bool = False  # torch.compile the trained network (DDPM's UNet, a GAN's generator)

    def __post_init__(self):
        if self.precision not in PRECISIONS[1:]:
            raise ValueError(f"precision must be one of {list(PRECISIONS[1:])} here, got {self.precision!r}")


class CompileError(RuntimeError):
    """torch.compile could not compile a network on this platform."""


def compiled(net: nn.Module) -> nn.Module:
    """torch.compile(net): a module whose first call compiles (errors surface then, as CompileError)."""
    return _CheckedCompile(torch.compile(net))


def _compiler_failure(error: BaseException) -> bool:
    """True for a failure of the compiler itself (its backend, a missing C++ compiler, dynamo's own bug);
    False for anything the network would raise uncompiled too (a shape error, out of memory, a collective's
    failure), found anywhere in the error's chain of causes."""
    from torch._dynamo.exc import BackendCompilerFailed, InternalTorchDynamoError

    chain, seen = error, set()
    while chain is not None and id(chain) not in seen:
        seen.add(id(chain))
        if isinstance(chain, (torch.OutOfMemoryError, torch.distributed.DistError)):
            return False
        chain = chain.__cause__ or chain.__context__
    return isinstance(error, (BackendCompilerFailed, InternalTorchDynamoError))


class _CheckedCompile(nn.Module):
    """Calls the compiled module; a failure of the compiler (not of the network, its memory or a collective)
    on the first call is re-raised as a CompileError that says what to set instead. Any other error keeps
    its own type and message."""

    def __init__(self, compiled_net: nn.Module):
        super().__init__()
        self.net = compiled_net
        self.checked = False

    def forward(self, *args, **kwargs):
        if self.checked:
            return self.net(*args, **kwargs)
        try:
            out = self.net(*args, **kwargs)
        except Exception as error:
            if not _compiler_failure(error):
                raise
            raise CompileError(f"torch.compile could not compile the network on this platform "
                               f"({type(error).__name__}: {str(error).strip()[:300]}); set train.compile=false") from error
        self.checked = True
        return out


class Accelerator:
    """One method's view of an Acceleration on one device: ``autocast()`` around forward passes,
    ``prepare(net)`` for memory format, ``images(x)`` for inputs, and ``step(...)`` for an optimizer update
    (scaled backward, optional gradient reduction and clipping, step)."""

    def __init__(self, accel: Acceleration | None, device: torch.device | str):
        self.accel = accel or Acceleration()
        self.device = torch.device(device)
        self.dtype = _DTYPES.get(self.accel.precision)
        self.memory_format = torch.channels_last if self.accel.channels_last else torch.contiguous_format

    def autocast(self):
        """Context manager: autocast to the precision's dtype on this device (nothing for fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def scaler(self) -> torch.amp.GradScaler | None:
        """A loss scaler for one optimizer under fp16, else None."""
        return torch.amp.GradScaler(self.device.type) if self.accel.precision == "fp16" else None

    def loss_scale(self, scaler: torch.amp.GradScaler | None) -> torch.Tensor | float:
        """The scaler's current scale as a 0-dim tensor on the device (no host read), or 1.0 without a scaler:
        what a gradient taken inside the loss (an R1 penalty) is scaled by, so that fp16 keeps it from
        underflowing, and divided by again in float32."""
        if scaler is None:
            return 1.0
        return scaler.scale(torch.ones((), device=self.device))

    def prepare(self, net: nn.Module) -> nn.Module:
        """net in this memory format (in place for the parameters; returns net)."""
        return net.to(memory_format=self.memory_format) if self.accel.channels_last else net

    def images(self, x: torch.Tensor) -> torch.Tensor:
        """An image batch [B, C, H, W] in this memory format (same values and shape)."""
        return x.contiguous(memory_format=self.memory_format) if self.accel.channels_last else x

    def maybe_compile(self, net: nn.Module) -> nn.Module:
        return compiled(net) if self.accel.compile else net

    @staticmethod
    def step(loss: torch.Tensor, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None,
             params: Iterable[nn.Parameter] = (), max_norm: float = 0.0,
             reduce: Callable[[], None] | None = None) -> torch.Tensor:
        """One update from a scalar loss []: zero the gradients, backward (scaled under fp16), ``reduce()``
        (e.g. an all-reduce of the gradients; linear, so it may see scaled ones), unscale, clip ``params`` to
        ``max_norm`` (0: no clipping), step. Returns the gradient norm before clipping (a 0-dim tensor on the
        gradients' device, NaN or inf on a step fp16 skips; 0 without clipping): no host sync."""
        opt.zero_grad(set_to_none=True)
        (scaler.scale(loss) if scaler is not None else loss).backward()
        if reduce is not None:
            reduce()
        if scaler is not None:
            scaler.unscale_(opt)
        grad_norm = (torch.nn.utils.clip_grad_norm_(list(params), max_norm) if max_norm > 0
                     else torch.zeros((), device=loss.device))
        if scaler is not None:
            scaler.step(opt)  # skipped when the gradients hold inf / NaN; the scale then shrinks
            scaler.update()
        else:
            opt.step()
        return grad_norm.detach()
