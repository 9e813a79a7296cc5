"""Each precision and backend of optimize_for_inference on small real images, the auto choice and its
cache, the OpenVINO IR export, and the one-line errors for missing extras."""

import json
import logging
import sys

import numpy as np
import openvino
import pytest
import torch
import torch.nn.functional as F
from inception_reference import randomize_
from PIL import Image
from torch import nn

from inceptorch import cpu, create_model, optimize_for_inference
from inceptorch.cli import main
from inceptorch.errors import ConfigError
from inceptorch.inference import FusedConv2d, bf16_supported, export
from inceptorch.weights import save_weights

TOLERANCE = 1e-4
SAMPLE = np.load(__import__("inceptorch").__path__[0] + "/sample/builtin.npz")
needs_bf16 = pytest.mark.skipif(not bf16_supported(), reason="this CPU has no AVX512-BF16 or AMX")


def _images(split: str, n: int) -> torch.Tensor:
    """Real photos of clothing from the built-in sample (Fashion-MNIST), normalized to [-1, 1]."""
    return torch.from_numpy(SAMPLE[f"{split}_images"][:n]).float().div(127.5).sub(1)[:, None]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)  # the same random network whatever ran before: int8 agreement depends on it
    return randomize_(create_model("mnist_inception", in_chans=1, num_classes=10)).eval()


@pytest.fixture(scope="module")
def trained():
    """The same network trained for a few seconds on the sample's 2,000 clothes: clear margins between
    its classes, so that every faithful path, int8 included, predicts what eager PyTorch predicts."""
    torch.manual_seed(0)
    net = create_model("mnist_inception", in_chans=1, num_classes=10).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
    x, y = _images("train", 2000), torch.from_numpy(SAMPLE["train_labels"]).long()
    for _ in range(3):
        for batch in torch.randperm(len(x)).split(100):
            optimizer.zero_grad()
            F.cross_entropy(net(x[batch]), y[batch]).backward()
            optimizer.step()
    return net.eval()


@pytest.fixture(scope="module")
def images():
    return _images("val", 64)


@pytest.fixture(scope="module")
def calibration():
    return _images("train", 128)


def _expected(model, x):
    with torch.no_grad():
        return model(x)


def _outputs(optimized, x, batch=16):
    return torch.cat([optimized(chunk) for chunk in x.split(batch)])


def _agreement(a, b) -> float:
    return (a.argmax(1) == b.argmax(1)).float().mean().item()


@pytest.mark.parametrize("backend", ["torch", "onnxruntime", "openvino"])
def test_fp32_on_every_backend_gives_the_models_outputs(model, images, backend):
    optimized = optimize_for_inference(model, images[:16], backend=backend)
    out = _outputs(optimized, images)
    assert optimized.path == f"{backend} fp32" and out.dtype == torch.float32
    assert (out - _expected(model, images)).abs().max().item() < TOLERANCE


@needs_bf16
def test_torch_bf16_runs_bf16_convolutions_and_keeps_the_predictions(model, images):
    optimized = optimize_for_inference(model, images[:16], precision="bf16")
    fused = [m for m in optimized.modules() if isinstance(m, FusedConv2d)]
    assert fused and all(m.weight.dtype == torch.bfloat16 for m in fused)
    out, expected = _outputs(optimized, images), _expected(model, images)
    assert out.dtype == torch.float32
    assert _agreement(out, expected) >= 0.98
    assert F.cosine_similarity(out, expected).min().item() > 0.999
    assert (out - expected).abs().max().item() > 0  # it did run in bf16


@needs_bf16
def test_openvino_bf16_keeps_the_predictions(model, images):
    optimized = optimize_for_inference(model, images[:16], backend="openvino", precision="bf16")
    out, expected = _outputs(optimized, images), _expected(model, images)
    assert _agreement(out, expected) >= 0.98 and F.cosine_similarity(out, expected).min().item() > 0.999


def test_openvino_int8_calibrated_on_real_images_keeps_the_predictions(model, images, calibration):
    optimized = optimize_for_inference(model, images[:16], backend="openvino", precision="int8",
                                       calibration=calibration)
    out, expected = _outputs(optimized, images), _expected(model, images)
    assert optimized.path == "openvino int8"
    assert _agreement(out, expected) >= 0.95 and F.cosine_similarity(out, expected).mean().item() > 0.98
    assert (out - expected).abs().max().item() > 1e-3  # quantized, not the fp32 graph


@pytest.mark.slow
def test_torch_int8_calibrated_on_real_images_keeps_the_predictions(calibration):
    """PT2E + torch.compile takes 10-40 s to compile even a small Inception net on 2 cores (minutes for
    the big ones), so a three-layer network stands in for them here; the benchmark runs the real ones."""
    net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(32, 10))
    net = randomize_(net).eval()
    x = _images("val", 32)
    # a batch of one as the example, as bench and predict give it, and calibration batches of 16
    optimized = optimize_for_inference(net, x[:1], precision="int8", calibration=calibration)
    assert optimized.path == "torch int8"
    for batch in (x[:16], x[16:21]):  # another shape compiles again
        out, expected = optimized(batch), _expected(net, batch)
        # a random network's top two logits can lie within int8's error: agreement is loose, closeness not
        assert _agreement(out, expected) >= 0.8 and F.cosine_similarity(out, expected).mean().item() > 0.995
        assert (out - expected).abs().max().item() > 1e-4  # quantized, not the fp32 graph


def test_int8_calibrates_on_a_folder_of_image_files(model, images, tmp_path):
    for i, pixels in enumerate(SAMPLE["train_images"][:32]):
        Image.fromarray(pixels).save(tmp_path / f"{i}.png")
    optimized = optimize_for_inference(model, images[:16], backend="openvino", precision="int8",
                                       calibration=tmp_path)
    assert _agreement(_outputs(optimized, images), _expected(model, images)) >= 0.95


def test_int8_without_calibration_and_unsupported_pairs_are_one_line_errors(model, images):
    with pytest.raises(ConfigError, match="calibration"):
        optimize_for_inference(model, images[:4], precision="int8")
    with pytest.raises(ConfigError, match="onnxruntime runs fp32"):
        optimize_for_inference(model, images[:4], backend="onnxruntime", precision="bf16")
    with pytest.raises(ConfigError, match="precision must be one of"):
        optimize_for_inference(model, images[:4], precision="fp16")


def test_bf16_on_an_avx512_cpu_without_bf16_instructions_is_a_one_line_error(model, images, monkeypatch, tmp_path):
    # AVX-512 alone: oneDNN would run bf16 there, emulated and slower than fp32 (cpu.fast_bf16)
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu avx2 avx512f avx512bw avx512_vnni\n")
    monkeypatch.setattr(cpu, "CPUINFO", info)
    with pytest.raises(ConfigError, match="no bf16 instructions"):
        optimize_for_inference(model, images[:4], precision="bf16")


@pytest.mark.parametrize(("module", "backend", "precision", "extra"), [
    ("onnxruntime", "onnxruntime", "fp32", "onnx"), ("openvino", "openvino", "fp32", "openvino"),
    ("nncf", "openvino", "int8", "openvino"), ("torchao", "torch", "int8", "int8")])
def test_a_missing_extra_is_a_one_line_error_naming_it(model, images, calibration, monkeypatch, module, backend,
                                                      precision, extra):
    monkeypatch.setitem(sys.modules, module, None)  # what Python does for a module that is not installed
    with pytest.raises(ConfigError, match=rf'pip install "inceptorch\[{extra}\]"') as error:
        optimize_for_inference(model, images[:4], backend=backend, precision=precision, calibration=calibration)
    assert "\n" not in str(error.value)


def test_auto_measures_once_then_follows_its_cache(model, images, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    caplog.set_level(logging.INFO, logger="inceptorch")
    first = optimize_for_inference(model, images[:16], precision="fp32", backend="auto")
    cache_file = tmp_path / "inceptorch" / "inference_choices.json"
    (key, choice), = json.loads(cache_file.read_text()).items()
    assert first.path == f"{choice['backend']} {choice['precision']}"
    assert f"optimize_for_inference: {first.path}, fastest of 3 measured" in caplog.text
    assert (_outputs(first, images) - _expected(model, images)).abs().max().item() < TOLERANCE
    # The cache decides from now on: the same cache, the same choice, without measuring again.
    other = "onnxruntime" if choice["backend"] != "onnxruntime" else "torch"
    cache_file.write_text(json.dumps({key: {**choice, "backend": other}}))
    caplog.clear()
    for _ in range(2):
        assert optimize_for_inference(model, images[:16], precision="fp32", backend="auto").path == f"{other} fp32"
    assert "cached choice" in caplog.text and "ms a call" not in caplog.text
    # Another input shape is another key: measured again.
    optimize_for_inference(model, images[:4], precision="fp32", backend="auto")
    assert len(json.loads(cache_file.read_text())) == 2


def test_openvino_ir_export_round_trips(model, images, tmp_path):
    result = export(model, tmp_path / "model.xml", "openvino", (1, 1, 28, 28), dynamic_batch=True)
    assert result.max_difference < TOLERANCE and (tmp_path / "model.bin").is_file()
    core = openvino.Core()
    compiled = core.compile_model(core.read_model(str(tmp_path / "model.xml")), "CPU",
                                  {"INFERENCE_PRECISION_HINT": "f32"})
    out = torch.from_numpy(compiled(images[:5].numpy())[0])
    assert (out - _expected(model, images[:5])).abs().max().item() < TOLERANCE
    with pytest.raises(ConfigError, match=r"\.xml"):
        export(model, tmp_path / "model.onnx", "openvino", (1, 1, 28, 28))


def test_cli_export_openvino_and_predict_embed_with_backends(trained, tmp_path, capsys):
    net = create_model("mnist_inception", in_chans=1, num_classes=10)
    net.load_state_dict(trained.state_dict())
    net.class_names = [str(c) for c in SAMPLE["class_names"]]
    weights = tmp_path / "m.safetensors"
    save_weights(net, weights)
    assert main(["export", "mnist_inception", "--weights", str(weights), "--format", "openvino",
                 "--out", str(tmp_path / "m.xml"), "--input", "1x28x28"]) == 0
    assert "OpenVINO (fp32) output vs PyTorch" in capsys.readouterr().out
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, pixels in enumerate(SAMPLE["val_images"][:20]):
        Image.fromarray(pixels).save(folder / f"{i:02d}.png")
    runs = {}
    bf16 = [["--precision", "bf16"]] if bf16_supported() else []
    for flags in ([], ["--backend", "openvino"], ["--backend", "onnxruntime"], *bf16,
                  ["--backend", "openvino", "--precision", "int8"]):
        assert main(["predict", "--weights", str(weights), str(folder), "--format", "json", "--topk", "1",
                     *flags]) == 0
        runs[" ".join(flags)] = [r["top"][0]["class"] for r in json.loads(capsys.readouterr().out)]
    eager = runs.pop("")
    assert sum(a == str(b) for a, b in zip(eager, SAMPLE["class_names"][SAMPLE["val_labels"][:20]])) >= 14
    for flags, classes in runs.items():  # a broken path agrees on a few images only
        assert sum(a == b for a, b in zip(classes, eager)) >= 19, flags
    for flags in ([], ["--backend", "openvino"]):
        assert main(["embed", "--weights", str(weights), str(folder), "--out", str(tmp_path / "f.npy"), *flags]) == 0
        runs[f"embed {flags}"] = np.load(tmp_path / "f.npy")
    assert np.abs(runs["embed ['--backend', 'openvino']"] - runs["embed []"]).max() < TOLERANCE
