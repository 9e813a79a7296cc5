"""What this CPU is, for benchmark records and for caching ``auto``'s choice: name, ISA flags, peak."""

import platform
import statistics
import time
from pathlib import Path

import torch

# the ISA extensions that decide which inference path is fastest, by their /proc/cpuinfo flags
ISA_FLAGS = {"AVX2": ("avx2",), "AVX-512": ("avx512f",), "AVX512-BF16": ("avx512_bf16",),
             "AMX": ("amx_bf16", "amx_int8"), "VNNI": ("avx512_vnni", "avx_vnni")}


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_name() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what ``platform`` knows, for benchmark records."""
    try:
        return next(line.split(":", 1)[1].strip() for line in _cpuinfo().splitlines()
                    if line.startswith("model name"))
    except StopIteration:
        return platform.processor() or platform.machine()


def isa_flags() -> list[str]:
    """Which of AVX2, AVX-512, AVX512-BF16, AMX and VNNI the CPU has (empty where /proc/cpuinfo is not)."""
    flags = set(next((line.split(":", 1)[1].split() for line in _cpuinfo().splitlines()
                      if line.startswith("flags")), []))
    return [name for name, names in ISA_FLAGS.items() if flags.intersection(names)]


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
