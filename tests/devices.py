"""Simulated devices for the CPU suite, so that a mistake only a GPU would show fails here.

``simulated_cuda()``: a CUDA device made of fake tensors (torch's FakeTensorMode; no GPU, no driver). Tensors
on ``cuda`` carry shapes, dtypes and devices but no values; the host stays real: a CPU tensor made or used
only on the host is an ordinary tensor with values, as on a machine with a GPU. Mixing a (non-scalar) CPU
tensor with a CUDA one raises FakeTensorDeviceMismatchError, as CUDA would; a copy back to the host is a
fake CPU tensor whose values cannot be read (``.item()``, ``.numpy()`` fail), which is exactly what a method
must not do where the interface says it hands back CPU tensors it has read.

``transfers()``: records every copy between the host and a device, every read of a device tensor's value and
every host tensor built on a device from Python data, made by this project's code. On ``meta`` (the
stand-in device of the training steps) a step that records nothing makes no host synchronisation.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings

import pytest
import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OURS = tuple(os.path.join(REPO, folder) + os.sep for folder in ("models", "harness", "datasets", "reports"))


def _fake_tensor_mode():
    from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

    class SimulatedCuda(FakeTensorMode):
        """FakeTensorMode for device tensors only: an op whose tensors are all real and that makes nothing
        on a CUDA device runs for real on the host; everything else (an op on a fake tensor, a factory or copy
        aimed at ``cuda``, and all that those decompose into) is faked."""

        def __init__(self):
            super().__init__(allow_non_fake_inputs=True)
            self._faking = False

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            leaves = pytree.arg_tree_leaves(*args, **kwargs)
            target = kwargs.get("device")
            on_device = any(isinstance(t, FakeTensor) for t in leaves) or (
                target is not None and torch.device(target).type == "cuda")
            if not on_device and not self._faking:
                return func(*args, **kwargs)  # the host, for real
            outer, self._faking = self._faking, True
            try:
                return super().__torch_dispatch__(func, types, args, kwargs)
            finally:
                self._faking = outer

    return SimulatedCuda


def cuda_simulation_problem() -> str | None:
    """Why this torch cannot simulate a CUDA device, or None when it can."""
    try:
        mode = _fake_tensor_mode()()
        with mode:
            x = torch.ones(2, 3, device="cuda")
            y = torch.nn.functional.linear(x, torch.ones(4, 3).to("cuda"))
        if y.device.type != "cuda":
            return f"a fake CUDA tensor came out on {y.device}"
    except Exception as error:  # noqa: BLE001 - any failure means: no simulation with this build
        return (f"torch {torch.__version__} cannot make fake CUDA tensors ({type(error).__name__}: "
                f"{str(error).strip()[:120]}); the CUDA build of torch can")
    return None


@contextlib.contextmanager
def simulated_cuda():
    """Run the block with a simulated CUDA device (see the module docstring); skips the test, saying why,
    where this torch cannot make fake CUDA tensors."""
    problem = cuda_simulation_problem()
    if problem:
        pytest.skip(problem)
    with _fake_tensor_mode()(), warnings.catch_warnings():
        # a copy of a module holding fake tensors (an EMA copy) asks for their data pointers: torch warns
        warnings.filterwarnings("ignore", message="Accessing the data pointer of FakeTensor")
        yield


def is_fake(tensor: torch.Tensor) -> bool:
    from torch._subclasses.fake_tensor import FakeTensor

    return isinstance(tensor, FakeTensor)


# ---------------------------------------------------------------------------------------------
# Transfers between the host and a device


def _our_caller() -> str | None:
    """file:line of the innermost frame of this project's code on the stack, or None."""
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_code.co_filename
        if name.startswith(OURS):
            return f"{os.path.relpath(name, REPO)}:{frame.f_lineno}"
        frame = frame.f_back
    return None


class _TransferRecorder(TorchDispatchMode):
    """Records copies between devices and reads of device values (see transfers())."""

    def __init__(self, seen: list[str]):
        super().__init__()
        self.seen = seen

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [t for t in pytree.arg_tree_leaves(*args, **kwargs) if isinstance(t, torch.Tensor)]
        devices = {t.device.type for t in tensors if t.dim() > 0}  # 0-dim host scalars are kernel arguments
        what = None
        if func is torch.ops.aten._local_scalar_dense.default and tensors and tensors[0].device.type != "cpu":
            what = f"a read of a {tensors[0].device.type} value"
        elif func in (torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default):
            target = kwargs.get("device")
            if target is not None:
                devices.add(torch.device(target).type)
            if len(devices) > 1:
                what = f"a copy between {' and '.join(sorted(devices))}"
        if what:
            caller = _our_caller()
            if caller:
                self.seen.append(f"{what} ({func.__name__}) at {caller}")
        return func(*args, **kwargs)


@contextlib.contextmanager
def transfers(monkeypatch):
    """Yield a list that fills with every host<->device transfer this project's code makes in the block:
    copies between devices, reads of a device tensor's value, and tensors built on a device from Python
    data (torch.tensor / as_tensor / new_tensor, which copy from the host without a dispatched copy)."""
    seen: list[str] = []

    def built_on_device(name, original, device_of):
        def wrapper(*args, **kwargs):
            out = original(*args, **kwargs)
            if device_of(args, kwargs, out).type != "cpu":
                caller = _our_caller()
                if caller:
                    seen.append(f"a {out.device.type} tensor built from host data ({name}) at {caller}")
            return out
        return wrapper

    monkeypatch.setattr(torch, "tensor", built_on_device("torch.tensor", torch.tensor, lambda a, k, out: out.device))
    monkeypatch.setattr(torch, "as_tensor", built_on_device(
        "torch.as_tensor", torch.as_tensor,  # a tensor given to it is not host data
        lambda a, k, out: torch.device("cpu") if isinstance(a[0], torch.Tensor) else out.device))
    monkeypatch.setattr(torch.Tensor, "new_tensor", built_on_device("new_tensor", torch.Tensor.new_tensor,
                                                                   lambda a, k, out: out.device))
    with _TransferRecorder(seen):
        yield seen
