"""Multi-process training under `torchrun`: detect the launch, set up the process group, tear it down.

Each rank trains on its own share of the data order (see batching.py); rank 0 alone evaluates, writes
metrics and checkpoints. gloo on CPU (used by the tests), NCCL on CUDA.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from pipeline.errors import UserError


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_reduce_sum(self, value: float) -> float:
        if not self.enabled:
            return value
        # NCCL reduces only CUDA tensors; gloo CPU ones.
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
        tensor = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return float(tensor.item())


def device_type(name: str) -> str:
    """"cuda" or "cpu" for a --device value ("auto" means CUDA when available)."""
    return "cuda" if name.startswith("cuda") or (name == "auto" and torch.cuda.is_available()) else "cpu"


def setup(device_type: str) -> DistContext:
    """Join the process group if launched by torchrun (WORLD_SIZE > 1); else a single-process context."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return DistContext(rank=rank, world=world, local_rank=local_rank)


def teardown(context: DistContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


def resolve_device(name: str, context: DistContext, option: str = "--device") -> torch.device:
    """"auto" picks CUDA when present; under torchrun each rank takes its LOCAL_RANK GPU.

    A device that is not there is a one-line error, not a CUDA traceback deep inside torch."""
    from pipeline.config import check_device_name

    check_device_name(name, option)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and context.enabled:
        name = f"cuda:{context.local_rank}"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{option} {name}: no CUDA GPU is visible to torch here; use --device cpu (or auto)")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UserError(f"{option} {name}: only {torch.cuda.device_count()} CUDA device(s) are visible; "
                        f"use cuda:0..cuda:{torch.cuda.device_count() - 1}")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device
