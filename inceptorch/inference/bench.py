"""``inceptorch bench``: every inference path of a model timed in one process, paths interleaved.

Ratios are taken within one run, against torchvision's or timm's eager model with the same weights
and against the best peer engine (onnxruntime fp32, OpenVINO at its default precision): machines
differ, and the same machine drifts from minute to minute. The share of peak divides by the fp32
and bf16 peaks measured at the start with a large matrix product (``cpu.measured_peak_gflops``).
"""

import copy
import json
import logging
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..analysis import count_macs, full_input_size
from ..cpu import describe, fast_bf16, machine, measured_peak_gflops
from ..errors import ConfigError, InceptorchError
from ..models import create_model
from ..tables import text_table
from ..timing import time_interleaved
from .choose import BACKENDS, build_path, candidates, top1_agreement

log = logging.getLogger("inceptorch")

PEERS = ("onnxruntime fp32", "openvino default")  # the peer engines at their default settings


def _torchvision(builder_name: str):
    def build(model):
        import torchvision

        builder = getattr(torchvision.models, builder_name)
        return builder(weights=None, aux_logits=False, init_weights=False, num_classes=model.num_classes,
                       transform_input=getattr(model, "transform_input", False))
    return build


def _timm(timm_name: str):
    def build(model):
        import timm

        return timm.create_model(timm_name, pretrained=False, num_classes=model.num_classes,
                                 in_chans=model.in_chans)
    return build


# Models with a reference implementation whose state dict ours loads key for key.
REFERENCES = {
    "googlenet": ("torchvision", _torchvision("googlenet")),
    "inception_v3": ("torchvision", _torchvision("inception_v3")),
    "inception_v4": ("timm", _timm("inception_v4")),
    "inception_resnet_v2": ("timm", _timm("inception_resnet_v2")),
}


def reference_model(model: nn.Module) -> tuple[str, nn.Module] | None:
    """(origin, torchvision's or timm's model with ``model``'s weights), or ``None`` where there is none."""
    name = getattr(model, "model_name", None)
    if name not in REFERENCES or (REFERENCES[name][0] == "torchvision" and model.in_chans != 3):
        return None
    origin, build = REFERENCES[name]
    try:
        reference = build(model)
    except ImportError:
        log.warning("%s is not installed: no %s reference for %s", origin, origin, name)
        return None
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(tuple(model.aux_heads))}
    reference.load_state_dict(state)
    return origin, reference


@dataclass
class BenchRow:
    model: str
    task: str  # "inference" or "train step" (forward, backward, SGD step)
    batch: int
    input: str  # "3x224x224"
    path: str
    ms_per_batch: float  # median; at batch 1 this is the latency
    images_per_s: float
    gflops: float  # achieved GFLOP/s: 2 x multiply-adds per forward, 3 forwards' worth per training step
    fp32_peak_share: float
    bf16_peak_share: float | None  # None where the CPU has no bf16 instructions
    vs_reference: float  # throughput over the first path of the same model, task and batch
    reference: str  # that first path
    vs_best_peer: float | None  # throughput over the faster of onnxruntime fp32 and OpenVINO default
    agreement: float | None  # top-1 agreement with the fp32 eager model on the timed batch
    setup_s: float  # time to build the path (optimize, export, quantize, compile) before timing


@dataclass
class BenchReport:
    rows: list[BenchRow]
    peak_gflops: dict  # {"fp32": GFLOP/s, "bf16": ...}, and how they were found under "source"
    threads: int
    repeats: int
    machine: dict = field(default_factory=dict)
    accuracy: dict = field(default_factory=dict)  # {task: {path: {"agreement": .., "accuracy": ..}}}

    def table(self) -> str:
        tasks = list(self.accuracy)
        header = ["model", "task", "batch", "input", "path", "img/s", "ms/batch", "GFLOP/s", "% fp32 pk",
                  "% bf16 pk", "vs ref", "vs peer", "agree", "setup s"]
        header += [f"{t} {column}" for t in tasks for column in ("agree", "acc")]

        def percent(value):
            return "-" if value is None else f"{value:.1%}"

        lines = []
        for r in self.rows:
            line = [r.model, r.task, str(r.batch), r.input, r.path, f"{r.images_per_s:.1f}", f"{r.ms_per_batch:.1f}",
                    f"{r.gflops:.1f}", f"{r.fp32_peak_share:.0%}",
                    "-" if r.bf16_peak_share is None else f"{r.bf16_peak_share:.0%}", f"{r.vs_reference:.2f}x",
                    "-" if r.vs_best_peer is None else f"{r.vs_best_peer:.2f}x", percent(r.agreement),
                    f"{r.setup_s:.1f}"]
            for t in tasks:
                scores = self.accuracy[t].get(r.path, {}) if r.task == "inference" else {}
                line += [percent(scores.get("agreement")), percent(scores.get("accuracy"))]
            lines.append(line)
        peaks = ", ".join(f"{k} {v:.0f}" for k, v in self.peak_gflops.items() if k != "source")
        notes = (f"CPU {describe(self.machine)}; "
                 f"{self.threads} threads, median of {self.repeats} timed rounds after warm-up, paths interleaved\n"
                 f"peak GFLOP/s {peaks} ({self.peak_gflops.get('source')}); vs ref: over the first path of each "
                 f"group; vs peer: over the faster of {' and '.join(PEERS)}; agree: top-1 agreement with fp32 "
                 f"eager on the timed batch")
        return f"{text_table(header, lines, left=5)}\n{notes}"

    def to_dict(self) -> dict:
        return {"peak_gflops": self.peak_gflops, "threads": self.threads, "repeats": self.repeats,
                "machine": self.machine, "accuracy": self.accuracy, "rows": [asdict(r) for r in self.rows]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def _machine() -> dict:
    """``cpu.machine``'s record with the versions of the peer engines installed."""
    info = machine()
    for module in ("onnxruntime", "openvino", "torchao", "nncf"):
        try:
            info[module] = __import__(module).__version__
        except ImportError:
            pass
    return info


def _timed_setup(build):
    start = time.perf_counter()
    result = build()
    return result, time.perf_counter() - start


# path name -> (backend, precision, compile)
PATHS = {"torch fp32": ("torch", "fp32", False), "torch fp32 compiled": ("torch", "fp32", True),
         "torch bf16": ("torch", "bf16", False), "torch bf16 compiled": ("torch", "bf16", True),
         "torch int8": ("torch", "int8", False), "onnxruntime fp32": ("onnxruntime", "fp32", False),
         "openvino default": ("openvino", "default", False), "openvino int8": ("openvino", "int8", False)}


def bench_paths(backend: str = "all", precision: str = "all", compile: bool = False, onnx: bool = True) -> list[str]:
    """The paths of ``PATHS`` this machine runs (extras installed, bf16 in the CPU), those of ``backend``
    and ``precision`` ("all": every one), and the peers always (unless ``onnx=False``)."""
    if backend not in ("all", *BACKENDS[:-1]) or precision not in ("all", "fp32", "bf16", "int8"):
        raise ConfigError(f"bench takes --backend all or one of {', '.join(BACKENDS[:-1])} and --precision all, "
                          f"fp32, bf16 or int8, got {backend} and {precision}")
    chosen = []
    for name, (b, p, compiled) in PATHS.items():
        peer = name in PEERS
        if (compiled and not compile) or (b != "torch" and not onnx):
            continue
        if not peer and ((backend != "all" and b != backend) or (precision != "all" and p != precision)):
            continue
        if p == "default" or (b, p) in candidates(b, p, reduced=True):
            chosen.append(name)
        elif p != "bf16" or fast_bf16():
            log.info("bench: %s left out (its extra is not installed)", name)
    return chosen


def build_bench_path(model, name: str, x: torch.Tensor, calibration: list[torch.Tensor]):
    backend, precision, compiled = PATHS[name]
    return build_path(model, x, backend, precision, compile=compiled,
                      calibration=calibration if precision == "int8" else None)


def _inference_calls(name, model, reference, x, paths, calibration) -> tuple[dict, dict, dict]:
    """The inference paths to time, as functions of nothing, the seconds each took to build, and each
    one's top-1 agreement with the fp32 eager model on ``x``."""
    calls, setup = {}, {}
    if reference is not None:
        origin, ref_model = reference
        calls[f"{origin} eager"], setup[f"{origin} eager"] = lambda: ref_model(x), 0.0
    calls["inceptorch eager"], setup["inceptorch eager"] = lambda: model(x), 0.0
    for path in paths:
        log.info("%s batch %d: building %s", name, x.shape[0], path)
        try:
            built, setup[path] = _timed_setup(lambda path=path: build_bench_path(model, path, x, calibration))
        except InceptorchError as e:
            log.warning("bench: %s left out: %s", path, e)
            continue
        calls[path] = lambda built=built: built(x)
    with torch.no_grad():
        expected = model(x)
        agreement = {path: top1_agreement(call(), expected) for path, call in calls.items()}
    return calls, setup, agreement


def _train_calls(model, reference, x) -> dict:
    """A training step (forward, cross-entropy, backward, SGD step) of each training path."""
    labels = torch.randint(0, model.num_classes, (x.shape[0],))
    x_last = x.contiguous(memory_format=torch.channels_last)

    def step_of(net, inputs):
        net.train()
        optimizer = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9)

        def step():
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(net(inputs), labels).backward()
            optimizer.step()
        return step

    calls = {}
    if reference is not None:
        origin, ref_model = reference
        calls[f"{origin} eager"] = step_of(copy.deepcopy(ref_model), x)
    calls["inceptorch eager"] = step_of(copy.deepcopy(model), x)
    calls["inceptorch channels-last"] = step_of(copy.deepcopy(model).to(memory_format=torch.channels_last), x_last)
    return calls


def _peaks(peak_gflops: float | None) -> dict:
    if peak_gflops:
        return {"fp32": peak_gflops, "source": "fp32 given, bf16 not"}
    peaks = {"fp32": measured_peak_gflops(torch.float32)}
    if fast_bf16():
        peaks["bf16"] = measured_peak_gflops(torch.bfloat16)
    peaks["source"] = "measured: torch.mm of two 4096x4096 matrices, mean of 3 (torch.utils.benchmark)"
    return peaks


def _rows(name, task, batch, shape, seconds, setup, agreement, flops, peaks) -> list[BenchRow]:
    first = next(iter(seconds))
    peers = [seconds[p] for p in PEERS if p in seconds]
    rows = []
    for path, s in seconds.items():
        gflops = flops / s / 1e9
        rows.append(BenchRow(name, task, batch, "x".join(map(str, shape)), path, s * 1e3, batch / s, gflops,
                             gflops / peaks["fp32"], gflops / peaks["bf16"] if "bf16" in peaks else None,
                             seconds[first] / s, first, min(peers) / s if peers else None,
                             agreement.get(path), setup.get(path, 0.0)))
    return rows


def benchmark(models, *, batches=(1, 16), train_batches=(), input_size=None, threads: int | None = None,
              peak_gflops: float | None = None, repeats: int = 5, compile: bool = False, onnx: bool = True,
              backend: str = "all", precision: str = "all", images: torch.Tensor | None = None,
              pretrained: bool | str = False) -> BenchReport:
    """Times each model's inference paths, and training steps, in this process; see ``BenchRow``.

    For each model (a registered name, built with random weights: speed does not depend on them;
    ``pretrained`` loads a tag's, for each model)
    and batch size: torchvision's or timm's eager model with the same weights where there is one,
    inceptorch eager, and the paths of ``bench_paths(backend, precision, compile, onnx)``: torch
    fp32, bf16 and int8, onnxruntime fp32, OpenVINO at its default precision and int8.
    ``train_batches`` adds training steps: the reference, inceptorch eager, and inceptorch
    channels-last. ``input_size`` is a side, (H, W) or (C, H, W); each model's default when ``None``.
    ``images``: preprocessed real images (N, C, H, W) at that size, to time, to calibrate int8 on
    and to measure agreement on (random inputs otherwise). ``peak_gflops``: the CPU's fp32 peak;
    by default the fp32 and bf16 peaks are measured.
    """
    if isinstance(models, str):
        models = [models]
    if not models or min(list(batches) + list(train_batches) or [1]) < 1 or repeats < 1:
        raise ConfigError("give at least one model, batch sizes of at least 1 and at least one repeat")
    paths = bench_paths(backend, precision, compile, onnx)
    previous_threads = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    rows = []
    try:
        where = _machine()  # with the threads the run uses, before its own load counts in the load average
        peaks = _peaks(peak_gflops)
        for name in models:
            size = tuple(input_size)[-3:] if isinstance(input_size, (tuple, list)) else input_size
            model = create_model(name, in_chans=size[0] if isinstance(size, tuple) and len(size) == 3 else 3,
                                 pretrained=pretrained)
            model.eval()
            shape = full_input_size(model, size)[1:]
            flops_per_image = 2 * count_macs(model, shape)
            reference = reference_model(model)
            if reference is not None:
                reference[1].eval()
            calibration = list((images if images is not None else torch.randn(32, *shape)).split(16))
            jobs = [("inference", b) for b in batches] + [("train step", b) for b in train_batches]
            for task, batch in jobs:
                log.info("%s: %s at batch %d", name, task, batch)
                x = (images[:batch] if images is not None and len(images) >= batch else torch.randn(batch, *shape))
                if task == "inference":
                    calls, setup, agreement = _inference_calls(name, model, reference, x, paths, calibration)
                    with torch.inference_mode():
                        seconds = time_interleaved(calls, repeats)
                    flops = flops_per_image * batch
                else:
                    calls, setup, agreement = _train_calls(model, reference, x), {}, {}
                    seconds = time_interleaved(calls, repeats)
                    flops = 3 * flops_per_image * batch
                rows += _rows(name, task, batch, shape, seconds, setup, agreement, flops, peaks)
    finally:
        torch.set_num_threads(previous_threads)
    return BenchReport(rows, peaks, threads or previous_threads, repeats, where)
