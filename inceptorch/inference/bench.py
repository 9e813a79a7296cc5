"""``inceptorch bench``: every inference path of a model timed in one process, paths interleaved.

Ratios are taken within one run, against torchvision's or timm's eager model with the same weights:
machines differ, and the same machine drifts from minute to minute.
"""

import copy
import json
import logging
import math
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..analysis import count_macs, full_input_size
from ..errors import ConfigError
from ..models import create_model
from ..tables import text_table
from .export import _onnx_session, export
from .optimize import optimize_for_inference

log = logging.getLogger("inceptorch")

# fp32 peak of the project's reference CPU: 2 cores x 2.45 GHz x 32 FLOPs a cycle (two AVX2 FMA units).
DEFAULT_PEAK_GFLOPS = 2 * 2.45 * 32


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
    peak_share: float
    vs_reference: float  # throughput over the first path of the same model, task and batch
    reference: str  # that first path
    setup_s: float  # time to build the path (optimize, export, compile) before timing


@dataclass
class BenchReport:
    rows: list[BenchRow]
    peak_gflops: float
    threads: int
    repeats: int
    machine: dict = field(default_factory=dict)

    def table(self) -> str:
        header = ["model", "task", "batch", "input", "path", "img/s", "ms/batch", "GFLOP/s", "% peak",
                  "vs ref", "setup s"]
        lines = [[r.model, r.task, str(r.batch), r.input, r.path, f"{r.images_per_s:.1f}",
                  f"{r.ms_per_batch:.1f}", f"{r.gflops:.1f}", f"{r.peak_share:.0%}", f"{r.vs_reference:.2f}x",
                  f"{r.setup_s:.1f}"] for r in self.rows]
        notes = (f"{self.threads} threads, median of {self.repeats} timed rounds after warm-up, paths "
                 f"interleaved; peak {self.peak_gflops:.1f} GFLOP/s; vs ref: over the first path of each group")
        return f"{text_table(header, lines, left=5)}\n{notes}"

    def to_dict(self) -> dict:
        return {"peak_gflops": self.peak_gflops, "threads": self.threads, "repeats": self.repeats,
                "machine": self.machine, "rows": [asdict(r) for r in self.rows]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def cpu_name() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what ``platform`` knows, for benchmark records."""
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _machine() -> dict:
    info = {"cpu": cpu_name(), "torch": torch.__version__, "python": platform.python_version()}
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return info


def _time_interleaved(calls: dict, repeats: int, min_round_s: float = 0.3) -> dict[str, float]:
    """Median seconds per call of each function, timed in rounds that visit every function in turn.

    Interleaving keeps the ratios fair when the machine's load drifts during the run; each round
    repeats a call until it lasts ``min_round_s``, so that short calls are not timer noise.
    """
    iterations = {}
    for name, call in calls.items():
        call()  # warm-up: first-call work (weight reorders, allocator, ONNX Runtime's arenas)
        start = time.perf_counter()
        call()
        iterations[name] = max(1, math.ceil(min_round_s / max(time.perf_counter() - start, 1e-6)))
    samples = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            for _ in range(iterations[name]):
                call()
            samples[name].append((time.perf_counter() - start) / iterations[name])
    return {name: statistics.median(times) for name, times in samples.items()}


def _timed_setup(build):
    start = time.perf_counter()
    result = build()
    return result, time.perf_counter() - start


def _inference_calls(name, model, reference, x, compile: bool, onnx: bool) -> tuple[dict, dict]:
    """The inference paths to time, as functions of nothing, and the seconds each took to build."""
    calls, setup = {}, {}
    if reference is not None:
        origin, ref_model = reference
        calls[f"{origin} eager"], setup[f"{origin} eager"] = lambda: ref_model(x), 0.0
    calls["inceptorch eager"], setup["inceptorch eager"] = lambda: model(x), 0.0
    fast, setup["optimize_for_inference"] = _timed_setup(lambda: optimize_for_inference(model, x))
    calls["optimize_for_inference"] = lambda: fast(x)
    if compile:
        log.info("%s batch %d: compiling (minutes on a few cores)", name, x.shape[0])
        compiled, setup["optimize (compile=True)"] = _timed_setup(
            lambda: optimize_for_inference(model, x, compile=True))
        calls["optimize (compile=True)"] = lambda: compiled(x)
    if onnx:
        def build_session():
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "model.onnx"
                export(model, path, "onnx", tuple(x.shape), verify=False)
                return _onnx_session(path.read_bytes())

        session, setup["onnxruntime"] = _timed_setup(build_session)
        feed = {"input": x.numpy()}
        calls["onnxruntime"] = lambda: session.run(None, feed)
    return calls, setup


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


def benchmark(models, *, batches=(1, 16), train_batches=(), input_size=None, threads: int | None = None,
              peak_gflops: float | None = None, repeats: int = 5, compile: bool = False,
              onnx: bool = True, pretrained: bool | str = False) -> BenchReport:
    """Times each model's inference paths, and training steps, in this process; see ``BenchRow``.

    For each model (a registered name, built with random weights: speed does not depend on them;
    ``pretrained`` loads a tag's, for each model)
    and batch size: torchvision's or timm's eager model with the same weights where there is one,
    inceptorch eager, ``optimize_for_inference`` (and with ``compile=True`` where asked) and
    onnxruntime on the exported model. ``train_batches`` adds training steps: the reference,
    inceptorch eager, and inceptorch channels-last. ``input_size`` is a side, (H, W) or (C, H, W);
    each model's default when ``None``. ``peak_gflops`` defaults to the reference CPU's (156.8).
    """
    if isinstance(models, str):
        models = [models]
    if not models or min(list(batches) + list(train_batches) or [1]) < 1 or repeats < 1:
        raise ConfigError("give at least one model, batch sizes of at least 1 and at least one repeat")
    peak_gflops = peak_gflops or DEFAULT_PEAK_GFLOPS
    previous_threads = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    rows = []
    try:
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
            jobs = [("inference", b) for b in batches] + [("train step", b) for b in train_batches]
            for task, batch in jobs:
                log.info("%s: %s at batch %d", name, task, batch)
                x = torch.randn(batch, *shape)
                if task == "inference":
                    calls, setup = _inference_calls(name, model, reference, x, compile, onnx)
                    with torch.inference_mode():
                        seconds = _time_interleaved(calls, repeats)
                    flops = flops_per_image * batch
                else:
                    calls, setup = _train_calls(model, reference, x), {}
                    seconds = _time_interleaved(calls, repeats)
                    flops = 3 * flops_per_image * batch
                first = next(iter(seconds))
                for path, s in seconds.items():
                    gflops = flops / s / 1e9
                    rows.append(BenchRow(name, task, batch, "x".join(map(str, shape)), path, s * 1e3, batch / s,
                                         gflops, gflops / peak_gflops, seconds[first] / s, first,
                                         setup.get(path, 0.0)))
    finally:
        torch.set_num_threads(previous_threads)
    return BenchReport(rows, peak_gflops, threads or previous_threads, repeats, _machine())
