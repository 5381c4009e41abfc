"""How a method's training step uses the hardware: numeric precision (autocast, with a loss scaler for
fp16), the channels-last memory format and torch.compile. The methods take one ``Acceleration`` and
route every training forward pass and optimizer step through it, so that all four families honour the
same ``train.precision`` / ``train.channels_last`` / ``train.compile`` settings.

Precisions:
    fp32   no autocast (the CPU default)
    bf16   autocast to bfloat16, no loss scaling (bfloat16 has float32's exponent range; the GPU default)
    fp16   autocast to float16 with a GradScaler (float16 gradients underflow without it)

Losses and the optimizer's arithmetic stay in float32: a network's output is cast back to float32
before any loss is formed, and autocast never touches the weights.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import nn

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(name: str, device: torch.device | str) -> str:
    """"auto" -> "bf16" on a CUDA device, "fp32" elsewhere; any other valid name unchanged."""
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {name!r}; valid: {list(PRECISIONS)}")
    if name == "auto":
        return "bf16" if torch.device(device).type == "cuda" else "fp32"
    return name


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


class _CheckedCompile(nn.Module):
    """Calls the compiled module; a failure of the compiler (not of the network) on the first call is
    re-raised as a CompileError that says what to set instead."""

    def __init__(self, compiled_net: nn.Module):
        super().__init__()
        self.net = compiled_net
        self.checked = False

    def forward(self, *args, **kwargs):
        if self.checked:
            return self.net(*args, **kwargs)
        try:
            out = self.net(*args, **kwargs)
        except Exception as error:  # inductor / dynamo raise many types; the message keeps the original
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
