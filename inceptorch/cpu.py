"""What the CPU at hand offers: its name and instruction-set flags, whether bfloat16 is fast on it, its
measured peak GFLOP/s; and the record of the machine that every benchmark writes beside its figures.

Read from Linux's /proc/cpuinfo; elsewhere the flags are unknown (empty) and bfloat16 counts as slow.
"""

import os
import platform
from pathlib import Path

import torch

from .timing import seconds_per_call

CPUINFO = Path("/proc/cpuinfo")
# The flags benchmark records list: vector widths, and the units that run bfloat16 and int8 fast.
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
# Native bfloat16 dot products (AVX512-BF16 instructions or AMX tiles): where oneDNN's bf16 kernels
# beat float32; without them bf16 is emulated and slower than float32.
FAST_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def _cpuinfo_field(name: str) -> str | None:
    try:
        lines = CPUINFO.read_text().splitlines()
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in lines if line.split(":", 1)[0].strip() == name), None)


def cpu_name() -> str:
    """The CPU's model name, else what ``platform`` knows, for benchmark records."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_flags() -> frozenset[str]:
    """The instruction-set flags of the first CPU (empty where /proc/cpuinfo is absent)."""
    return frozenset((_cpuinfo_field("flags") or "").split())


# The same extensions by the names benchmark tables use (AMX and VNNI each stand for two flags).
ISA_NAMES = {"AVX2": ("avx2",), "AVX-512": ("avx512f",), "AVX512-BF16": ("avx512_bf16",),
             "AMX": ("amx_bf16", "amx_int8"), "VNNI": ("avx512_vnni", "avx_vnni")}


def isa_names(flags=None) -> list[str]:
    """Which of AVX2, AVX-512, AVX512-BF16, AMX and VNNI the CPU has (empty where /proc/cpuinfo is not)."""
    flags = cpu_flags() if flags is None else flags
    return [name for name, names in ISA_NAMES.items() if flags.intersection(names)]


def isa_flags(flags=None) -> list[str]:
    """Those of ``ISA_FLAGS`` the CPU has, in that order (``flags``: the CPU's own by default)."""
    flags = cpu_flags() if flags is None else flags
    return [name for name in ISA_FLAGS if name in flags]


def fast_bf16(flags=None) -> bool:
    """Whether the CPU computes bfloat16 natively (``flags``: the CPU's own by default): the one answer
    training's mixed precision and inference's bf16 paths both ask.

    The instruction set is the right witness, not oneDNN's ``torch.ops.mkldnn._is_mkldnn_bf16_supported``:
    that says whether oneDNN can *run* bfloat16, and says yes on any AVX-512 CPU, where it emulates
    bfloat16 more slowly than float32.
    """
    flags = cpu_flags() if flags is None else flags
    return any(name in flags for name in FAST_BF16_FLAGS)


def measured_peak_gflops(dtype: torch.dtype = torch.float32, side: int = 4096, repeats: int = 3) -> float:
    """GFLOP/s of a ``side``-square matrix product in ``dtype`` on PyTorch's threads: the practical peak
    that the benchmark's share-of-peak columns divide by (measured, not computed from the clock: turbo
    and AVX-512 down-clocking make that a guess)."""
    a, b = torch.randn(side, side).to(dtype), torch.randn(side, side).to(dtype)
    return 2 * side**3 / seconds_per_call(lambda: torch.mm(a, b), calls=repeats) / 1e9


def machine(device: torch.device | str = "cpu") -> dict:
    """Where a benchmark runs: the CPU's name and ISA flags, threads, torch, the GPU where ``device`` is
    one, and the load average, which is why a benchmark takes this before its own run adds to it."""
    device = torch.device(device)
    info = {"cpu": cpu_name(), "isa": isa_flags(), "fast_bf16": fast_bf16(), "cpu_count": os.cpu_count(),
            "threads": torch.get_num_threads(), "load_average": os.getloadavg()[0], "device": str(device),
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
            "omp": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY") if k in os.environ}}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def describe(info: dict) -> str:
    """A ``machine`` record in a table's title: the CPU's name and ISA flags, after the GPU's name if any."""
    host = f"{info['cpu']} ({' '.join(info['isa']) or 'no ISA flags read'})"
    return f"{info['gpu']} on a host with {host}" if "gpu" in info else host
