"""Features streamed from images into what the metrics keep: float64 running sums for FID (memory
bounded whatever the image count), and the features and logits KID and IS need (8 KB and 4 KB an
image at 2048 features: 80 MB and 40 MB per 10,000 images).

Under ``torchrun`` each process reads every world-th image and the sums are all-reduced with
torch.distributed (gloo on the CPU, nccl on GPUs); kept features are gathered back into the
images' order, so the statistics are those of one process.
"""

import logging
import os
import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from ..devices import Processes
from ..errors import DataError
from .inputs import ImageSource, batches

log = logging.getLogger("inceptorch")


@dataclass
class Collected:
    """What the images gave: the count, float64 sums of the features and of their outer products,
    the kept features and logits (float32, in the images' order) and the files skipped."""

    count: int
    total: torch.Tensor
    outer: torch.Tensor
    features: np.ndarray | None
    logits: np.ndarray | None
    skipped: list[str]

    def mean_and_covariance(self) -> tuple[np.ndarray, np.ndarray]:
        """The mean and the unbiased covariance (as ``np.cov``), from the running sums."""
        mean = self.total / self.count
        covariance = (self.outer - self.count * torch.outer(mean, mean)) / max(self.count - 1, 1)
        return mean.numpy(), covariance.numpy()


def join_processes(device: str = "cpu") -> Processes:
    """This process's place among torchrun's (WORLD_SIZE > 1), joining the group once; alone otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Processes()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return Processes(dist.get_rank(), dist.get_world_size())


def collect(source: ImageSource, extractor, *, mode: str, dims: int, batch_size: int = 50,
            keep_features: bool = False, keep_logits: bool = False, strict: bool = False,
            progress: bool = True, workers: int = 0, device: str = "cpu", fixed_batch: bool = False) -> Collected:
    """Runs ``extractor`` over ``source``'s images (this process's shard of them) and gathers the results.

    ``fixed_batch``: a short last batch is padded to ``batch_size`` (the padding's outputs dropped), so
    that a path compiled for one input shape (torch int8, OpenVINO) compiles once."""
    processes = join_processes(device)
    shard = range(processes.rank, len(source), processes.world)
    count, total = 0, torch.zeros(dims, dtype=torch.float64)
    outer = torch.zeros(dims, dims, dtype=torch.float64)
    kept, positions, skipped = [], [], []
    bar = tqdm(total=len(shard), desc=source.name[-40:], unit="img", leave=False, dynamic_ncols=True,
               file=sys.stderr, disable=not (progress and processes.main))
    with bar:
        for images, where, errors in batches(source, mode, batch_size, shard, workers):
            for error in errors:
                if strict:
                    raise DataError(f"{error}: --strict stops at an unreadable file (leave it out to skip them)")
                log.warning("skipped %s", error)
            skipped += errors
            if images is not None:
                out = extractor(_padded(images, batch_size) if fixed_batch else images.to(device))
                out = out[:len(images)].float().cpu()
                features = out[:, :dims].double()
                count += len(features)
                total += features.sum(dim=0)
                outer += features.T @ features
                if keep_features or keep_logits:
                    kept.append(out)
                    positions += where
            bar.update(len(where) + len(errors))
    rows = torch.cat(kept) if kept else torch.zeros(0, dims)
    if processes.world > 1:
        count = int(processes.sum(torch.tensor(count)).item())
        total, outer = processes.sum(total), processes.sum(outer)
        rows, skipped = _gathered(rows, positions, skipped, processes.world)
    if count == 0:
        raise DataError(f"none of the {len(source)} images of {source.name} could be read")
    return Collected(count, total, outer, rows[:, :dims].numpy() if keep_features else None,
                     rows[:, dims:].numpy() if keep_logits else None, skipped)


def _padded(images: torch.Tensor, size: int) -> torch.Tensor:
    if len(images) >= size:
        return images
    return torch.cat([images, images.new_zeros(size - len(images), *images.shape[1:])])


def _gathered(rows: torch.Tensor, positions: list[int], skipped: list[str], world: int):
    """Every process's kept rows, put back in the images' order, and every process's skipped files."""
    parts = [None] * world
    dist.all_gather_object(parts, (rows, positions, skipped))
    order = np.argsort(np.concatenate([np.asarray(p, dtype=np.int64) for _, p, _ in parts]), kind="stable")
    rows = torch.cat([r for r, _, _ in parts])[torch.from_numpy(order)] if len(order) else rows
    return rows, [error for _, _, errors in parts for error in errors]
