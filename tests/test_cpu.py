"""CPU flags from /proc/cpuinfo, and ``amp: auto``: bfloat16 autocast only where the CPU computes it natively."""

import pytest
import torch

from inceptorch import cpu
from inceptorch.config import resolve
from inceptorch.errors import ConfigError
from inceptorch.training.steps import autocast_dtype

CPU = torch.device("cpu")
SAPPHIRE_RAPIDS = frozenset(["fpu", "sse2", "avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8"])
COOPER_LAKE = frozenset(["sse2", "avx2", "avx512f", "avx512_vnni", "avx512_bf16"])
SKYLAKE = frozenset(["sse2", "avx2", "avx512f"])
ZEN2 = frozenset(["sse2", "avx2"])


@pytest.mark.parametrize(("flags", "expected"), [(SAPPHIRE_RAPIDS, torch.bfloat16), (COOPER_LAKE, torch.bfloat16),
                                                 (SKYLAKE, None), (ZEN2, None), (frozenset(), None)])
def test_auto_is_bf16_only_with_avx512_bf16_or_amx(flags, expected):
    assert autocast_dtype(resolve({"amp": "auto"}), CPU, flags) == expected


@pytest.mark.parametrize("flags", [SAPPHIRE_RAPIDS, ZEN2])
def test_explicit_amp_wins_over_the_cpu(flags):
    assert autocast_dtype(resolve({"amp": True}), CPU, flags) == torch.bfloat16
    assert autocast_dtype(resolve({"amp": False}), CPU, flags) is None


def test_amp_takes_only_true_false_or_auto():
    with pytest.raises(ConfigError, match="amp must be true, false or auto"):
        resolve({"amp": "fast"})


def test_flags_and_name_come_from_cpuinfo(tmp_path, monkeypatch):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Test CPU @ 2.0GHz\nflags\t\t: fpu avx2 amx_bf16 avx512f\n\n"
                    "processor\t: 1\nmodel name\t: Test CPU @ 2.0GHz\nflags\t\t: fpu avx2 amx_bf16 avx512f\n")
    monkeypatch.setattr(cpu, "CPUINFO", info)
    assert cpu.cpu_name() == "Test CPU @ 2.0GHz"
    assert cpu.cpu_flags() == {"fpu", "avx2", "amx_bf16", "avx512f"}
    assert cpu.isa_flags() == ["avx2", "avx512f", "amx_bf16"]
    assert cpu.fast_bf16()


def test_machine_record_names_the_cpu_its_flags_and_threads(tmp_path, monkeypatch):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n")
    monkeypatch.setattr(cpu, "CPUINFO", info)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    record = cpu.machine()
    assert (record["cpu"], record["isa"], record["fast_bf16"]) == ("Test CPU", ["avx2", "avx512f", "avx512_bf16"], True)
    assert record["threads"] == torch.get_num_threads() and record["device"] == "cpu" and "gpu" not in record
    assert record["omp"] == {"OMP_NUM_THREADS": "1"} and record["torch"] == torch.__version__
    assert cpu.describe(record) == "Test CPU (avx2 avx512f avx512_bf16)"
    assert cpu.describe({**record, "gpu": "Some GPU"}) == "Some GPU on a host with Test CPU (avx2 avx512f avx512_bf16)"
    assert cpu.describe({**record, "isa": []}) == "Test CPU (no ISA flags read)"


def test_no_cpuinfo_means_no_flags_and_float32(tmp_path, monkeypatch):
    monkeypatch.setattr(cpu, "CPUINFO", tmp_path / "absent")
    assert cpu.cpu_flags() == frozenset() and not cpu.fast_bf16()
    assert cpu.cpu_name()  # platform's answer instead
    assert autocast_dtype(resolve({"amp": "auto"}), CPU) is None
