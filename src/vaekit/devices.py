"""Devices: which one a name means, what it can compute, and moving data to it cheaply.

Every command resolves ``--device`` here (``cpu``, ``cuda``, ``cuda:N``, ``mps`` or
``auto``), so a device that is missing is one clear error everywhere, never a torch
assertion. Apple's MPS has no float64: sums that vaekit accumulates in float64 on a CPU
or a CUDA GPU are accumulated in float32 there (:func:`wide_dtype`), and everything that
leaves the device for a report is converted on the CPU.
"""

from __future__ import annotations

import contextlib

import torch

from .errors import VaekitError


def mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` -> the best device present (CUDA, then MPS, then the CPU); any other name
    -> that device, checked to exist (``cuda:3`` on a machine with two GPUs is refused)."""
    if isinstance(name, torch.device):
        name = str(name)
    name = str(name).strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise VaekitError(f"unknown device {name!r}; use cpu, cuda, cuda:N, mps or auto") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise VaekitError(f"--device {name} was asked for but no CUDA GPU is available; "
                              "use --device cpu or auto")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise VaekitError(f"--device {name}: this machine has {count} CUDA GPU"
                              f"{'s' if count != 1 else ''} (cuda:0 to cuda:{count - 1})")
    elif device.type == "mps":
        if not mps_available():
            raise VaekitError(f"--device {name} was asked for but MPS is not available; "
                              "use --device cpu or auto")
    elif device.type != "cpu":
        raise VaekitError(f"unsupported device {name!r}; use cpu, cuda, cuda:N, mps or auto")
    return device


def has_float64(device: torch.device | str) -> bool:
    """Whether tensors of this device can be float64 (all but Apple's MPS)."""
    return torch.device(device).type != "mps"


def wide_dtype(device: torch.device | str) -> torch.dtype:
    """The dtype of running sums on ``device``: float64 where it exists, else float32."""
    return torch.float64 if has_float64(device) else torch.float32


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``; from the CPU to a CUDA GPU through pinned memory without
    blocking the host (the copy is ordered on the current stream before any use)."""
    if t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def model_device(model: torch.nn.Module) -> torch.device:
    """Where a model's parameters live (the CPU for a model without parameters)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@contextlib.contextmanager
def seeded(seed: int | None, device: torch.device | str = "cpu"):
    """Draws seeded with ``seed`` inside, torch's global generators untouched outside: the
    CPU's, and that of ``device`` when it is a CUDA GPU (only that one: forking every GPU's
    generator would initialise CUDA on all of them). ``seed=None`` forks without seeding."""
    device = torch.device(device)
    gpus = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=gpus):
        if seed is not None:
            torch.default_generator.manual_seed(seed)
            if gpus:
                with torch.cuda.device(gpus[0]):
                    torch.cuda.manual_seed(seed)
            elif device.type == "mps":
                torch.manual_seed(seed)  # (MPS's generator is not forked: seeded for good)
        yield
