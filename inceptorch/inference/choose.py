"""``optimize_for_inference``: one of the torch, onnxruntime and OpenVINO paths in fp32, bf16 or int8,
or with ``auto`` the fastest of them whose predictions agree with fp32's, measured once and cached.

A reduced precision (bf16, int8) is a candidate only with ``REDUCED_NEEDS_IMAGES`` calibration images
or more: every other one is held out of calibration, and the top-1 agreement with fp32 is measured
on those held-out images (fewer images: fp32 paths only, and their agreement on the example input).

The choice is cached per model (name, classes, channels and a digest of its weights), input shape,
CPU (name and ISA flags), library versions and request, in
``$XDG_CACHE_HOME/inceptorch/inference_choices.json`` (``~/.cache`` by default). A cached choice is
not trusted blindly: its path is built and its agreement checked again on the images of this call,
and a choice that fails (or an entry that is not a choice) is measured again.
"""

import functools
import hashlib
import json
import logging
import os
from pathlib import Path

import torch
from torch import nn

from .. import hub
from ..cpu import cpu_name, fast_bf16, isa_names
from ..errors import ConfigError
from ..timing import seconds_per_call
from .engines import ENGINE_PRECISIONS, engine_model
from .extras import available
from .quantize import CALIBRATION_BATCH, calibration_batches, torch_int8
from .torch_path import InferenceModel, torch_model

log = logging.getLogger("inceptorch")

PRECISIONS = ("fp32", "bf16", "int8", "auto")
BACKENDS = ("torch", "onnxruntime", "openvino", "auto")
# the least top-1 agreement with fp32 that lets auto take a path (the accuracy targets)
AGREEMENT_NEEDED = {"fp32": 0.999, "bf16": 0.995, "int8": 0.99}
BACKEND_MODULES = {"torch": "torch", "onnxruntime": "onnxruntime", "openvino": "openvino"}
QUANTIZER_MODULES = {"torch": "torchao", "openvino": "nncf"}
# calibration images that let auto consider bf16 and int8: half calibrate, the other half (24 at
# least, so that one disagreement in 24 already fails int8's 99%) measure the agreement
REDUCED_NEEDS_IMAGES = 48


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


def candidates(backend: str, precision: str, reduced: bool) -> list[tuple[str, str]]:
    """The (backend, precision) pairs ``auto`` measures: installed, supported by this CPU, and bf16 and
    int8 only with enough calibration images (``reduced``)."""
    backends = [backend] if backend != "auto" else [b for b in BACKENDS[:-1] if available(BACKEND_MODULES[b])]
    precisions = [precision] if precision != "auto" else ["fp32", "bf16", "int8"]
    pairs = []
    for b in backends:
        for p in precisions:
            supported = p in ENGINE_PRECISIONS.get(b, ("fp32", "bf16", "int8"))
            if p != "fp32":
                supported = supported and reduced
            if p == "bf16":
                supported = supported and fast_bf16()
            if p == "int8":
                supported = supported and available(QUANTIZER_MODULES[b])
            if supported:
                pairs.append((b, p))
    return pairs


def _cache_file() -> Path:
    return hub.inceptorch_cache() / "inference_choices.json"


def weights_digest(model: nn.Module) -> str:
    """A sha256 of every weight and buffer with its name: two checkpoints of one architecture differ."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _cache_key(model: nn.Module, shape, backend: str, precision: str, compile: bool, reduced: bool) -> str:
    fields = {"model": getattr(model, "model_name", type(model).__name__),
              "classes": getattr(model, "num_classes", None), "in_chans": getattr(model, "in_chans", None),
              "weights": weights_digest(model), "input": list(shape),
              "cpu": cpu_name(), "isa": isa_names(), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "request": [backend, precision, compile, reduced]}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def _read_cache() -> dict:
    try:
        cache = json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        return {}
    return cache if isinstance(cache, dict) else {}


def _write_cache(key: str, choice: dict) -> None:
    """Written to a temporary file, then renamed: a crash mid-write leaves the old cache whole."""
    path = _cache_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    cache = {**_read_cache(), key: choice}
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(cache, indent=1) + "\n")
    temporary.replace(path)


def top1_agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.argmax(1) == b.argmax(1)).float().mean().item()


def _outputs(path, images: torch.Tensor, batch: int) -> torch.Tensor:
    """``path`` on ``images`` in batches of the example's size: the shape the path was built for."""
    return torch.cat([path(chunk) for chunk in images.split(batch)])


def _judging_images(batches, precision: str) -> tuple[list | None, torch.Tensor | None, bool]:
    """Calibration batches, held-out images, and whether bf16 and int8 may be candidates: with
    ``REDUCED_NEEDS_IMAGES`` images or more, every other one is held out (a folder sorted by class
    gives both halves every class)."""
    count = sum(len(b) for b in batches) if batches else 0
    if count < REDUCED_NEEDS_IMAGES:
        if precision in ("bf16", "int8"):
            raise ConfigError(f"choosing a backend for {precision} measures its top-1 agreement with fp32 on "
                              f"held-out images: give at least {REDUCED_NEEDS_IMAGES} calibration images (got "
                              f"{count}), or name the backend")
        if precision == "auto":
            log.info("optimize_for_inference: %d calibration image%s, fewer than %d: fp32 paths only (bf16 and "
                     "int8 are judged on images held out of calibration)", count, "s" if count > 1 else "",
                     REDUCED_NEEDS_IMAGES)
        return batches, None, False
    images = torch.cat(batches)
    return list(images[0::2].split(CALIBRATION_BATCH)), images[1::2], True


def _cached_choice(key: str, pairs) -> tuple[str, str] | None:
    """The cached (backend, precision) for ``key`` if it is one of ``pairs``; else None (logged if the
    entry is there but is not such a choice, as a hand-edited or damaged entry may be)."""
    entry = _read_cache().get(key)
    choice = (entry.get("backend"), entry.get("precision")) if isinstance(entry, dict) else None
    if choice in pairs:
        return choice
    if entry is not None:
        log.info("optimize_for_inference: the cached entry %r in %s is not a path for this request: measuring "
                 "again", entry, _cache_file())
    return None


def _auto(model, example_input, backend, precision, compile, batches) -> InferenceModel:
    batches, held_out, reduced = _judging_images(batches, precision)
    pairs = candidates(backend, precision, reduced)
    if not pairs:
        raise ConfigError(f"no path runs precision {precision} on backend {backend} on this machine: install "
                          "its extra, or choose another precision")
    check = held_out if reduced else torch.cat(batches) if batches else example_input
    judged_on = (f"{len(check)} {'held-out' if reduced else 'calibration' if batches else 'example'} "
                 f"image{'s' if len(check) > 1 else ''}")
    with torch.no_grad():
        expected = model.eval()(check.float())

    def build_and_judge(b, p):
        path = build_path(model, example_input, b, p, compile=compile, calibration=batches)
        return path, top1_agreement(_outputs(path, check, len(example_input)), expected)

    key = _cache_key(model, example_input.shape, backend, precision, compile, reduced)
    cached = _cached_choice(key, pairs)
    if cached:
        path, agreement = build_and_judge(*cached)
        if agreement >= AGREEMENT_NEEDED[cached[1]]:
            log.info("optimize_for_inference: %s %s, cached choice in %s, re-checked: top-1 agreement %.1f%% on %s",
                     *cached, _cache_file(), agreement * 100, judged_on)
            return path
        log.info("optimize_for_inference: the cached choice %s %s agrees with fp32 on %.1f%% of %s, under the "
                 "%.1f%% needed: measuring again", *cached, agreement * 100, judged_on,
                 AGREEMENT_NEEDED[cached[1]] * 100)
    results = {}
    for b, p in pairs:
        path, agreement = build_and_judge(b, p)
        seconds = seconds_per_call(functools.partial(path, example_input))
        results[(b, p)] = (path, seconds, agreement)
        log.info("  %s %s: %.1f ms a call, top-1 agreement %.1f%% on %s", b, p, seconds * 1e3, agreement * 100,
                 judged_on)
    passing = {pair: r for pair, r in results.items() if r[2] >= AGREEMENT_NEEDED[pair[1]]}
    if not passing:
        raise ConfigError(f"no path kept the fp32 predictions on {judged_on}: use precision fp32")
    (b, p), (path, seconds, agreement) = min(passing.items(), key=lambda item: (item[1][1], item[0]))
    slowest = max(r[1] for r in results.values())
    calibrated = f", calibrated on {sum(len(x) for x in batches)} others" if reduced else ""
    why = (f"fastest of {len(results)} measured at {'x'.join(map(str, example_input.shape))}: "
           f"{seconds * 1e3:.1f} ms, {slowest / seconds:.1f}x the slowest, top-1 agreement "
           f"{agreement:.1%} on {judged_on}{calibrated}")
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
    and the fastest whose top-1 predictions agree with fp32's is kept, the choice cached (see the
    module's notes) and logged in one line with the number of images it was judged on. bf16 and int8
    are candidates only with ``calibration`` of at least ``REDUCED_NEEDS_IMAGES`` images, judged on
    the half held out of calibration; fewer: ``precision="auto"`` measures the fp32 paths only, and
    ``"bf16"`` or ``"int8"`` with ``backend="auto"`` is a ``ConfigError``.
    ``compile=True``: ``torch.compile`` with frozen weights for the torch fp32 and bf16 paths (torch
    int8 always compiles). ``example_input``, when given, runs once so that the first real call is fast.
    """
    if precision not in PRECISIONS or backend not in BACKENDS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)} and backend one of "
                          f"{', '.join(BACKENDS)}, got {precision} and {backend}")
    judged = calibration is not None and "auto" in (precision, backend)
    batches = calibration_batches(model, calibration) if judged or precision == "int8" else None
    if "auto" in (precision, backend):
        if example_input is None:
            if batches is None:
                raise ConfigError("auto measures the paths on an example input: pass example_input (a batch "
                                  "shaped as the calls to come)")
            example_input = batches[0]
        return _auto(model, example_input, backend, precision, compile, batches)
    return build_path(model, example_input, backend, precision, compile=compile, calibration=batches)
