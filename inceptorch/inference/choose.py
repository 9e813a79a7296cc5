"""``optimize_for_inference``: one of the torch, onnxruntime and OpenVINO paths in fp32, bf16 or int8,
or with ``auto`` the fastest of them whose predictions agree with fp32's, measured once and cached.

The choice is cached per model (name, classes, channels, parameter count), input shape, CPU (name
and ISA flags), library versions and request, in ``$XDG_CACHE_HOME/inceptorch/inference_choices.json``
(``~/.cache`` by default): the same cache gives the same choice without measuring again.
"""

import hashlib
import json
import logging
import os
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from ..cpu import cpu_name, isa_names
from ..errors import ConfigError
from .engines import ENGINE_PRECISIONS, engine_model
from .extras import available
from .optimize import InferenceModel, bf16_supported, torch_model
from .quantize import calibration_batches, torch_int8

log = logging.getLogger("inceptorch")

PRECISIONS = ("fp32", "bf16", "int8", "auto")
BACKENDS = ("torch", "onnxruntime", "openvino", "auto")
# the least top-1 agreement with fp32 that lets auto take a path (the accuracy targets)
AGREEMENT_NEEDED = {"fp32": 0.999, "bf16": 0.995, "int8": 0.99}
BACKEND_MODULES = {"torch": "torch", "onnxruntime": "onnxruntime", "openvino": "openvino"}
QUANTIZER_MODULES = {"torch": "torchao", "openvino": "nncf"}


def build_path(model: nn.Module, example_input, backend: str, precision: str, *, compile: bool = False,
               calibration: list[torch.Tensor] | None = None) -> InferenceModel:
    """One path, built and warmed on ``example_input``; ``calibration``: batches, for int8."""
    if precision == "int8" and calibration is None:
        calibration = calibration_batches(model, None)
    if backend == "torch":
        if precision == "int8":
            return torch_int8(model, example_input if example_input is not None else calibration[0], calibration)
        return torch_model(model, example_input, precision=precision, compile=compile)
    return engine_model(model, example_input, backend, precision, calibration)


def candidates(backend: str, precision: str, int8: bool) -> list[tuple[str, str]]:
    """The (backend, precision) pairs ``auto`` measures: installed, supported by this CPU, and int8 only
    with calibration images."""
    backends = [backend] if backend != "auto" else [b for b in BACKENDS[:-1] if available(BACKEND_MODULES[b])]
    precisions = [precision] if precision != "auto" else ["fp32", "bf16", "int8"]
    pairs = []
    for b in backends:
        for p in precisions:
            supported = p in ENGINE_PRECISIONS.get(b, ("fp32", "bf16", "int8"))
            if p == "bf16":
                supported = supported and bf16_supported()
            if p == "int8":
                supported = supported and int8 and available(QUANTIZER_MODULES[b])
            if supported:
                pairs.append((b, p))
    return pairs


def _cache_file() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "inceptorch" / "inference_choices.json"


def _cache_key(model: nn.Module, shape, backend: str, precision: str, compile: bool, int8: bool) -> str:
    fields = {"model": getattr(model, "model_name", type(model).__name__),
              "classes": getattr(model, "num_classes", None), "in_chans": getattr(model, "in_chans", None),
              "parameters": sum(p.numel() for p in model.parameters()), "input": list(shape),
              "cpu": cpu_name(), "isa": isa_names(), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "request": [backend, precision, compile, int8]}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def _read_cache() -> dict:
    try:
        return json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        return {}


def _write_cache(key: str, choice: dict) -> None:
    """Written to a temporary file, then renamed: a crash mid-write leaves the old cache whole."""
    path = _cache_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    cache = {**_read_cache(), key: choice}
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(cache, indent=1) + "\n")
    temporary.replace(path)


def _seconds_per_call(call, x, calls: int = 5) -> float:
    call(x)  # a second warm-up: compiled paths do lazy work on their first calls
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def top1_agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.argmax(1) == b.argmax(1)).float().mean().item()


def _auto(model, example_input, backend, precision, compile, batches) -> InferenceModel:
    pairs = candidates(backend, precision, batches is not None)
    if not pairs:
        raise ConfigError(f"no path runs precision {precision} on backend {backend} on this machine: install "
                          "its extra, or choose another precision")
    key = _cache_key(model, example_input.shape, backend, precision, compile, batches is not None)
    cached = _read_cache().get(key)
    if cached and (cached["backend"], cached["precision"]) in pairs:
        log.info("optimize_for_inference: %s %s, cached choice (%s) in %s", cached["backend"],
                 cached["precision"], cached["why"], _cache_file())
        return build_path(model, example_input, cached["backend"], cached["precision"], compile=compile,
                          calibration=batches)
    check = torch.cat(batches) if batches else example_input
    with torch.no_grad():
        expected = model.eval()(check.float())
    results = {}
    for b, p in pairs:
        path = build_path(model, example_input, b, p, compile=compile, calibration=batches)
        agreement = top1_agreement(path(check), expected)
        seconds = _seconds_per_call(path, example_input)
        results[(b, p)] = (path, seconds, agreement)
        log.info("  %s %s: %.1f ms a call, top-1 agreement %.1f%%", b, p, seconds * 1e3, agreement * 100)
    passing = {pair: r for pair, r in results.items() if r[2] >= AGREEMENT_NEEDED[pair[1]]}
    if not passing:
        raise ConfigError("no path kept the fp32 predictions on the calibration images: use precision fp32")
    (b, p), (path, seconds, agreement) = min(passing.items(), key=lambda item: (item[1][1], item[0]))
    slowest = max(r[1] for r in results.values())
    why = (f"fastest of {len(results)} measured at {'x'.join(map(str, example_input.shape))}: "
           f"{seconds * 1e3:.1f} ms, {slowest / seconds:.1f}x the slowest, top-1 agreement "
           f"{agreement:.1%} on {len(check)} images")
    _write_cache(key, {"backend": b, "precision": p, "why": why})
    log.info("optimize_for_inference: %s %s, %s", b, p, why)
    return path


def optimize_for_inference(model: nn.Module, example_input: torch.Tensor | None = None, *,
                           precision: str = "fp32", backend: str = "torch", compile: bool = False,
                           calibration=None) -> InferenceModel:
    """An eval-only copy of ``model`` that predicts as it does, faster on a CPU; ``model`` is not changed.

    ``precision``: ``"fp32"`` (the default: the same outputs within 1e-4), ``"bf16"`` (where the CPU
    has AVX512-BF16 or AMX), ``"int8"`` (post-training static quantization on ``calibration``: a
    folder of images, image files, or a tensor of preprocessed ones; a few hundred) or ``"auto"``.
    ``backend``: ``"torch"`` (folded batch norm, fused oneDNN convolutions, channels-last; see
    ``optimize``), ``"onnxruntime"`` or ``"openvino"`` (the ``[onnx]`` and ``[openvino]`` extras) or
    ``"auto"``. With ``auto`` in either, every matching path is built and timed on ``example_input``
    and the fastest whose top-1 predictions agree with fp32's (on the calibration images, else the
    example) is kept, the choice cached (see the module's notes) and logged in one line.
    ``compile=True``: ``torch.compile`` with frozen weights for the torch fp32 and bf16 paths (torch
    int8 always compiles). ``example_input``, when given, runs once so that the first real call is fast.
    """
    if precision not in PRECISIONS or backend not in BACKENDS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)} and backend one of "
                          f"{', '.join(BACKENDS)}, got {precision} and {backend}")
    wants_int8 = precision in ("int8", "auto") and calibration is not None
    batches = calibration_batches(model, calibration) if wants_int8 or precision == "int8" else None
    if "auto" in (precision, backend):
        if example_input is None:
            if batches is None:
                raise ConfigError("auto measures the paths on an example input: pass example_input (a batch "
                                  "shaped as the calls to come)")
            example_input = batches[0]
        return _auto(model, example_input, backend, precision, compile, batches)
    return build_path(model, example_input, backend, precision, compile=compile, calibration=batches)
