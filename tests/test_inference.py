"""optimize_for_inference, ONNX and TorchScript export, and the export and bench commands."""

import copy
import json
from pathlib import Path

import onnx
import onnxruntime
import pytest
import torch
from inception_reference import randomize_
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from inceptorch import create_model, list_models, optimize_for_inference
from inceptorch.cli import main
from inceptorch.errors import ConfigError, InputSizeError
from inceptorch.inference import (
    FusedConv2d,
    bench,
    benchmark,
    export,
    isa_names,
    measured_peak_gflops,
    reference_model,
)
from inceptorch.weights import save_weights

TOLERANCE = 1e-4  # the bound on |optimized - eager| and |exported - PyTorch|


def _model(name: str, **options) -> nn.Module:
    """A model with random weights and batch-norm statistics, so that folding has work to do."""
    return randomize_(create_model(name, **options))


def _eager(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def _side(model: nn.Module) -> int:
    """A small input the model accepts, so that every model runs in well under a second."""
    return max(model.min_input_size, 32)


@pytest.mark.parametrize("name", list_models())
def test_optimized_model_gives_eager_outputs(name):
    model = _model(name)
    x = torch.randn(1, model.in_chans, _side(model), _side(model))
    optimized = optimize_for_inference(model, x)
    assert (optimized(x) - _eager(model, x)).abs().max().item() < TOLERANCE
    # Every convolution was fused, with batch norm folded into it.
    assert not any(isinstance(m, (nn.Conv2d, nn.BatchNorm2d)) for m in optimized.modules())
    assert any(isinstance(m, FusedConv2d) for m in optimized.modules())


def test_optimized_model_takes_other_shapes_than_its_example():
    model = _model("googlenet")
    optimized = optimize_for_inference(model, torch.randn(1, 3, 64, 64))
    for shape in [(3, 3, 64, 64), (1, 3, 96, 80)]:
        x = torch.randn(shape)
        assert (optimized(x) - _eager(model, x)).abs().max().item() < TOLERANCE


def test_optimize_leaves_the_callers_model_alone():
    model = _model("googlenet_small").train()
    before = copy.deepcopy(model.state_dict())
    optimize_for_inference(model, torch.randn(1, 3, 32, 32))
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_optimized_model_is_for_inference_only_and_checks_its_input():
    optimized = optimize_for_inference(_model("googlenet"))
    assert not optimized.training
    with pytest.raises(ConfigError, match="inference only"):
        optimized.train()
    with pytest.raises(InputSizeError, match="smaller than"):
        optimized(torch.randn(1, 3, 8, 8))
    with pytest.raises(InputSizeError, match="channel"):
        optimized(torch.randn(1, 1, 64, 64))


def test_fused_convolutions_survive_a_copy():
    """The oneDNN-reordered weights cannot be copied; a copy makes its own on its first call."""
    model = _model("googlenet_small")
    x = torch.randn(1, 3, 32, 32)
    optimized = optimize_for_inference(model, x)
    twin = copy.deepcopy(optimized)
    assert (twin(x) - _eager(model, x)).abs().max().item() < TOLERANCE


@pytest.mark.slow
def test_compiled_path_gives_eager_outputs():
    """torch.compile is minutes per shape for the big models on 2 cores; the smallest model shows the path
    works (freezing, channels-last, the wrapper) in seconds."""
    model = _model("lenet", num_classes=10)
    x = torch.randn(2, model.in_chans, 28, 28)
    compiled = optimize_for_inference(model, x, compile=True)
    assert (compiled(x) - _eager(model, x)).abs().max().item() < TOLERANCE


def _onnx_outputs(path, x: torch.Tensor) -> torch.Tensor:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])


def test_onnx_export_is_valid_and_matches_pytorch(tmp_path):
    model = _model("googlenet_small", num_classes=10)
    result = export(model, tmp_path / "model.onnx", "onnx", (1, 3, 32, 32))
    onnx.checker.check_model(str(result.path), full_check=True)
    x = torch.randn(1, 3, 32, 32)
    assert (_onnx_outputs(result.path, x) - _eager(model, x)).abs().max().item() < TOLERANCE
    assert result.max_difference < TOLERANCE


def test_onnx_export_with_dynamic_batch_takes_any_batch(tmp_path):
    model = _model("googlenet", num_classes=10)
    path = tmp_path / "model.onnx"
    export(model, path, "onnx", 64, dynamic_batch=True)
    x = torch.randn(3, 3, 64, 64)
    assert (_onnx_outputs(path, x) - _eager(model, x)).abs().max().item() < TOLERANCE


def test_onnx_export_without_dynamic_batch_fixes_the_batch(tmp_path):
    path = tmp_path / "model.onnx"
    export(_model("mnist_inception", in_chans=1, num_classes=10), path, "onnx", 28)
    batch = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_value == 1


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_torchscript_export_loads_and_matches(tmp_path):
    model = _model("googlenet_small", num_classes=10)
    path = tmp_path / "model.pt"
    export(model, path, "torchscript", 32, dynamic_batch=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        loaded = torch.jit.load(str(path))(x)
    assert (loaded - _eager(model, x)).abs().max().item() < TOLERANCE


def test_export_refuses_an_unknown_format_and_a_wrong_input(tmp_path):
    model = create_model("lenet", in_chans=3)
    with pytest.raises(ConfigError, match="format"):
        export(model, tmp_path / "m.tflite", "tflite")
    with pytest.raises(ConfigError, match="channels"):
        export(model, tmp_path / "m.onnx", "onnx", (1, 1, 28, 28))


def test_cli_export_writes_a_checked_file(tmp_path, capsys):
    model = _model("googlenet_small", num_classes=10)
    weights = tmp_path / "small.safetensors"
    save_weights(model, weights)
    out = tmp_path / "small.onnx"
    code = main(["export", "googlenet_small", "--weights", str(weights), "--format", "onnx", "--out", str(out),
                 "--input", "1x3x32x32", "--dynamic-batch"])
    assert code == 0 and out.is_file()
    assert "any batch size" in capsys.readouterr().out
    x = torch.randn(2, 3, 32, 32)
    assert (_onnx_outputs(out, x) - _eager(model, x)).abs().max().item() < TOLERANCE


def test_cli_export_errors_exit_2(tmp_path, capsys):
    out = str(tmp_path / "m.onnx")
    assert main(["export", "lenet", "--weights", str(tmp_path / "missing.pth"), "--out", out]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["export", "lenet", "--out", out]) == 2
    assert "--weights" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "lenet", "--random-init", "--format", "tflite", "--out", out])
    assert exit_info.value.code == 2


def test_benchmark_references_carry_the_same_weights():
    model = _model("googlenet")
    origin, reference = reference_model(model)
    x = torch.randn(1, 3, 64, 64)
    assert origin == "torchvision"
    assert (_eager(reference, x) - _eager(model, x)).abs().max().item() < TOLERANCE


def test_cli_bench_times_every_path_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(["bench", "lenet", "--batch", "2", "--input", "1x28x28", "--train", "--repeats", "1",
                 "--threads", "1", "--precision", "fp32", "--peak-gflops", "100", "--json", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    rows = report["rows"]
    paths = {(r["task"], r["path"]) for r in rows}
    assert paths == {("inference", "inceptorch eager"), ("inference", "torch fp32"),
                     ("inference", "onnxruntime fp32"), ("inference", "openvino default"),
                     ("train step", "inceptorch eager"), ("train step", "inceptorch channels-last")}
    assert all(r["images_per_s"] > 0 and r["gflops"] > 0 for r in rows)
    inference = {r["path"]: r for r in rows if r["task"] == "inference"}
    assert inference["torch fp32"]["agreement"] == 1.0
    assert report["machine"]["cpu"] and isinstance(report["machine"]["isa"], list)
    assert report["machine"]["threads"] == report["threads"] == 1  # the record names the threads the run used
    printed = capsys.readouterr().out
    assert "torch fp32" in printed and "vs peer" in printed and report["machine"]["cpu"] in printed


def test_bench_rows_are_flop_counters_flops_and_ratios_of_the_given_times(monkeypatch):
    """The timer planted: each path's seconds given, so every column is a hand-computed number."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    times = {"inceptorch eager": 0.040, "torch fp32": 0.010, "onnxruntime fp32": 0.020, "openvino default": 0.0125}
    monkeypatch.setattr(bench, "time_interleaved", lambda calls, repeats: {path: times[path] for path in calls})
    report = benchmark(["lenet"], batches=(4,), input_size=(1, 28, 28), repeats=1, precision="fp32",
                       peak_gflops=100.0)
    rows = {r.path: r for r in report.rows}
    assert set(rows) == set(times)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        create_model("lenet", in_chans=1).eval()(torch.randn(4, 1, 28, 28))
    gflops = counter.get_total_flops() / 0.010 / 1e9  # torch's own count of the forward at batch 4
    ours = rows["torch fp32"]
    assert (ours.ms_per_batch, ours.images_per_s) == (pytest.approx(10.0), pytest.approx(400.0))
    assert ours.gflops == pytest.approx(gflops, rel=1e-6) and ours.fp32_peak_share == pytest.approx(gflops / 100)
    assert ours.reference == "inceptorch eager" and ours.vs_reference == pytest.approx(4.0)  # 0.040 / 0.010
    assert ours.vs_best_peer == pytest.approx(1.25)  # the faster peer, OpenVINO: 0.0125 / 0.010
    assert rows["onnxruntime fp32"].vs_best_peer == pytest.approx(0.625)  # 0.0125 / 0.020


def test_cpu_record_names_the_isa_and_measures_a_peak():
    flags = isa_names()
    assert set(flags) <= {"AVX2", "AVX-512", "AVX512-BF16", "AMX", "VNNI"}
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    assert ("AVX2" in flags) == (" avx2" in cpuinfo)
    assert ("AMX" in flags) == (" amx_bf16" in cpuinfo)
    assert measured_peak_gflops(torch.float32, side=256, repeats=1) > 0
