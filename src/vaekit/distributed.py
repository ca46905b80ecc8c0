"""Distributed training through PyTorch's own engine: ``torchrun --nproc_per_node=N -m vaekit
train ...`` starts N processes with RANK, WORLD_SIZE, LOCAL_RANK and MASTER_ADDR/PORT set;
:func:`setup` joins them into a process group (NCCL for CUDA devices, gloo otherwise) and
the trainer wraps the model in DistributedDataParallel.

Without those variables (a plain ``vaekit train``) nothing here does anything: rank 0 of a
world of 1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import VaekitError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        """The one process that writes files and prints."""
        return self.rank == 0


def from_env() -> World:
    size = int(os.environ.get("WORLD_SIZE", "1"))
    return World(int(os.environ.get("RANK", "0")), size, int(os.environ.get("LOCAL_RANK", "0")))


def current() -> World:
    """The world of an initialised process group, else a world of one."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return World()


def backend_for(device: torch.device, backend: str = "auto") -> str:
    """The process-group backend: NCCL for CUDA GPUs, gloo otherwise, unless asked."""
    if backend == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise VaekitError(f"train.backend = \"nccl\" needs CUDA GPUs, but the device is "
                          f"{device.type}; use --set train.backend=\"gloo\"")
    return backend


def check_gpus(device: torch.device, world: World, backend: str = "auto") -> None:
    """Before any process group exists: NCCL needs a GPU of its own for every process on a
    machine. Raises one clear error instead of CUDA's "invalid device ordinal"."""
    if not world.distributed:
        return
    chosen = backend_for(device, backend)
    count = torch.cuda.device_count() if device.type == "cuda" else 0
    if chosen == "nccl" and world.local_rank >= count:
        raise VaekitError(
            f"torchrun started more processes on this machine than it has CUDA GPUs (local rank "
            f"{world.local_rank}, {count} GPU{'s' if count != 1 else ''}): NCCL needs one GPU per "
            f"process; use --nproc_per_node={count}, or let processes share GPUs with "
            "--set train.backend=\"gloo\"")


def setup(device: torch.device, backend: str = "auto") -> World:
    """Join the process group torchrun describes (once); returns the world."""
    world = from_env()
    if not world.distributed or (dist.is_available() and dist.is_initialized()):
        return current() if world.distributed else world
    if not dist.is_available():
        raise VaekitError("this torch build has no torch.distributed; run a single process")
    check_gpus(device, world, backend)
    if device.type == "cuda":
        torch.cuda.set_device(device_for(device, world))
    dist.init_process_group(backend_for(device, backend))
    return current()


def device_for(device: torch.device, world: World) -> torch.device:
    """Each process's own GPU (cuda:LOCAL_RANK; with more processes than GPUs, which only
    gloo allows, they take the GPUs in turn); CPU processes share the CPU."""
    if device.type == "cuda" and world.distributed:
        return torch.device("cuda", world.local_rank % max(1, torch.cuda.device_count()))
    return device


def teardown() -> None:
    """Leave the process group together: a barrier first, so that no process destroys its
    end while another still uses the group."""
    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum numbers across processes (identity for a world of one)."""
    if not (dist.is_available() and dist.is_initialized()):
        return values
    # NCCL reduces on the GPU; gloo on the host, in float64 (which MPS lacks)
    t = torch.tensor(values, dtype=torch.float64,
                     device=device if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t)
    return t.tolist()


def max_across(t: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum of a small tensor across processes, without a host sync under
    NCCL (identity for a world of one). Gloo reduces CPU tensors: a CUDA tensor goes
    through the host."""
    if not (dist.is_available() and dist.is_initialized()):
        return t
    if dist.get_backend() == "nccl":
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t
    host = t.detach().cpu()
    dist.all_reduce(host, op=dist.ReduceOp.MAX)
    return host.to(t.device)
