"""The CPU's practical peak, measured: what the benchmark's share-of-peak columns divide by.

Its name and ISA come from ``inceptorch.cpu``.
"""

import statistics
import time

import torch


def measured_peak_gflops(dtype: torch.dtype = torch.float32, side: int = 4096, repeats: int = 3) -> float:
    """GFLOP/s of a ``side``-square matrix product in ``dtype`` on PyTorch's threads: the practical peak
    (measured, not computed from the clock: turbo and AVX-512 down-clocking make that a guess)."""
    a, b = torch.randn(side, side).to(dtype), torch.randn(side, side).to(dtype)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2 * side**3 / statistics.median(times) / 1e9
