"""The CPU in inference records: its ISA by the names the issue tables use, and its measured peak.

The flags themselves are read once, by ``inceptorch.cpu``; this module names the ones that decide
which inference path is fastest, and measures the practical peak those paths are compared with.
"""

import statistics
import time

import torch

from ..cpu import cpu_flags

# the ISA extensions that decide which inference path is fastest, by their /proc/cpuinfo flags
ISA_NAMES = {"AVX2": ("avx2",), "AVX-512": ("avx512f",), "AVX512-BF16": ("avx512_bf16",),
             "AMX": ("amx_bf16", "amx_int8"), "VNNI": ("avx512_vnni", "avx_vnni")}


def isa_names() -> list[str]:
    """Which of AVX2, AVX-512, AVX512-BF16, AMX and VNNI the CPU has (empty where /proc/cpuinfo is not)."""
    flags = cpu_flags()
    return [name for name, names in ISA_NAMES.items() if flags.intersection(names)]


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
