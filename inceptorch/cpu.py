"""What the CPU at hand offers: its name and instruction-set flags, and whether bfloat16 is fast on it.

Read from Linux's /proc/cpuinfo; elsewhere the flags are unknown (empty) and bfloat16 counts as slow.
"""

import platform
from pathlib import Path

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


def isa_flags(flags=None) -> dict[str, bool]:
    """Which of ``ISA_FLAGS`` the CPU has (``flags``: the CPU's own by default)."""
    flags = cpu_flags() if flags is None else flags
    return {name: name in flags for name in ISA_FLAGS}


def fast_bf16(flags=None) -> bool:
    """Whether the CPU computes bfloat16 natively (``flags``: the CPU's own by default)."""
    flags = cpu_flags() if flags is None else flags
    return any(name in flags for name in FAST_BF16_FLAGS)
