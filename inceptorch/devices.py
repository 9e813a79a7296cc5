"""Where a run computes: its device, and its place among torchrun's processes.

The lowest room of training and inference alike: inference picks its device here without importing the
training loop, and a training run joins its process group here.
"""

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from .errors import ConfigError


@dataclass
class Processes:
    """Where this process stands in a distributed run (rank 0 of 1 when alone)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            tensor = tensor.clone()
            dist.all_reduce(tensor)
        return tensor


def pick_device(option: str, local_rank: int = 0) -> torch.device:
    """The device ``--device`` names (auto: the GPU where there is one); under torchrun, process
    ``local_rank``'s GPU of the machine."""
    if option == "auto":
        option = "cuda" if torch.cuda.is_available() else "cpu"
    if option.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {option} asks for a GPU, but no CUDA GPU is visible: use "
                              "--device cpu")
        device = torch.device(option if ":" in option else f"cuda:{local_rank}")
        torch.cuda.set_device(device)
        return device
    return torch.device(option)


def start_processes(device_option: str, timeout_s: float) -> tuple[Processes, torch.device, bool]:
    """Joins the process group when started by torchrun (WORLD_SIZE > 1), waiting up to ``timeout_s`` for
    the others; returns where this process stands, its device (``--device``), and whether it started the group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device(device_option, int(os.environ.get("LOCAL_RANK", "0")))
    started = False
    if world > 1 and not dist.is_initialized():
        timeout = timedelta(seconds=timeout_s)
        store, rank, world = next(dist.rendezvous("env://", timeout=timeout))
        # torchrun's agent keeps one store across restarts of its workers (--max-restarts), holding the
        # addresses the killed processes published: gloo would connect to those and fail, so each attempt
        # of the group keeps its keys under a prefix of its own
        attempt = dist.PrefixStore(f"inceptorch-attempt-{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=attempt, rank=rank,
                                world_size=world, timeout=timeout)
        started = True
    if world > 1:
        return Processes(dist.get_rank(), dist.get_world_size()), device, started
    return Processes(), device, started
