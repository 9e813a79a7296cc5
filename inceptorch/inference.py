"""Fast CPU inference, export to ONNX and TorchScript, and the benchmark that compares them.

``optimize_for_inference`` keeps what paid, measured with paths interleaved in one process on
googlenet (224x224) and inception_v3 (299x299) against torchvision's eager model with the same
weights (batch 16 unless said; ratios, since the 2-core machine was shared with other jobs):

- channels-last memory: oneDNN's convolutions work in NHWC, so eager PyTorch on NCHW tensors reorders
  every activation in and out of each convolution. 1.6-2.0x on one core (googlenet 1.7x at batch 16,
  2.0x at batch 1; inception_v3 1.3-1.6x), 2.4-2.5x on a quiet 2-core slice of a Xeon (googlenet).
- batch norm folded into the convolutions: a further 6-8%.
- ``FusedConv2d``: each convolution, its bias and its ReLU as one oneDNN call, on weights reordered
  once per input shape instead of on every call: a further 1-4% (15 interleaved rounds on one core).
- ``torch.compile`` with inductor's weight freezing: +15% over the above on the quiet Xeon slice
  (62 vs 54 images/s, googlenet), nothing on one shared core, +3% on the idle 2-core AMD EPYC
  (43.0 vs 41.9 images/s; onnxruntime 49.5), after 25-155 s of compilation per input shape on 2
  cores. Off by default; ``compile=True`` asks for it.

Measured and left out: the sibling 1x1 convolutions of an Inception block run as one wider
convolution and split after (1-10% slower: the split channel slices must be copied back to dense
tensors before the next convolution); ``torch.jit.trace`` + ``freeze`` on the folded channels-last
model (-8% to +6%, within noise); ``torch.jit.optimize_for_inference`` (googlenet 4-7x slower than
eager channels-last, its conversions to oneDNN's own tensors costing more than they save).
onnxruntime (its own NCHWc kernels) runs 14-28% faster than this on googlenet and 9-15% on
inception_v3 at batch 16 (``benchmarks/results/``): max pooling, where eager PyTorch computes the
indices for backward even without autograd, is 10-11% of the optimized googlenet's time against 4%
of onnxruntime's (profiles on one core), and the convolutions run some 8% slower. A max pool without indices (the 3x3/1 pools as two separable
passes of ``torch.maximum``) saved 2% of googlenet's time and was left out; oneDNN's own pooling
needs its opaque tensors, and converting to them cost more than the pool.
"""

import contextlib
import copy
import json
import logging
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from .errors import ConfigError
from .models.base import _check_input
from .models.layers import ConvBNAct

log = logging.getLogger("inceptorch")

# ---------------------------------------------------------------------------------------------------
# optimize_for_inference


def _onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


class FusedConv2d(nn.Module):
    """A convolution with batch norm folded in and its ReLU fused, as one oneDNN call on CPU.

    Eager PyTorch reorders a convolution's weights into oneDNN's blocked layout on every call and
    runs batch norm and ReLU as two more passes over memory; here the reorder happens once per input
    shape (oneDNN picks the layout for the shape: a layout made for another shape measured 4-20%
    slower) and the rest inside the convolution. Reordered weights are opaque oneDNN tensors that
    cannot be copied or saved, so ``weight`` keeps the plain ones and a copy makes its own. Elsewhere
    (GPU, other dtypes, no oneDNN) it runs ``F.conv2d`` and ``F.relu``.
    """

    shapes_kept = 4  # reordered weights kept, for the input shapes seen last

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d | None = None, relu: bool = False):
        super().__init__()
        weight, bias = conv.weight.detach(), conv.bias.detach() if conv.bias is not None else None
        if bn is not None:
            weight, bias = fuse_conv_bn_weights(weight, bias, bn.running_mean, bn.running_var, bn.eps,
                                                bn.weight, bn.bias)
        if bias is None:
            bias = torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device)
        self.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
        self.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.stride, self.padding = list(conv.stride), list(conv.padding)
        self.dilation, self.groups = list(conv.dilation), conv.groups
        self.relu = relu
        self._reordered = {}

    def _reordered_weight(self, shape: torch.Size) -> torch.Tensor:
        weight = self._reordered.pop(shape, None)
        if weight is None:
            weight = torch.ops.mkldnn._reorder_convolution_weight(
                self.weight, self.padding, self.stride, self.dilation, self.groups, list(shape))
            if len(self._reordered) >= self.shapes_kept:
                self._reordered.pop(next(iter(self._reordered)))
        self._reordered[shape] = weight  # last in: the most recently used
        return weight

    def forward(self, x):
        if x.device.type != "cpu" or x.dtype != torch.float32 or not _onednn_available():
            x = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
            return F.relu(x) if self.relu else x
        return torch.ops.mkldnn._convolution_pointwise(x, self._reordered_weight(x.shape), self.bias,
                                                       self.padding, self.stride, self.dilation, self.groups,
                                                       "relu" if self.relu else "none", [], "")

    def _apply(self, fn, recurse=True):
        self._reordered = {}  # moved or converted weights need fresh reorders
        return super()._apply(fn, recurse)

    def __getstate__(self):
        return {**self.__dict__, "_reordered": {}}

    def extra_repr(self) -> str:
        out_channels, in_channels, *kernel = self.weight.shape
        return (f"{in_channels * self.groups}, {out_channels}, kernel_size={tuple(kernel)}, stride={self.stride}, "
                f"padding={self.padding}, relu={self.relu}")


def _fusable(conv: nn.Module) -> bool:
    return type(conv) is nn.Conv2d and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)


def _fused(module: nn.Module) -> nn.Module | None:
    """The fused replacement of a ``ConvBNAct`` or a plain convolution, or ``None`` to keep it."""
    if isinstance(module, ConvBNAct) and _fusable(module.conv):
        bn = module.bn if isinstance(module.bn, nn.BatchNorm2d) else None
        if isinstance(module.act, nn.ReLU):
            return FusedConv2d(module.conv, bn, relu=True)
        return nn.Sequential(FusedConv2d(module.conv, bn), module.act)
    if _fusable(module):
        return FusedConv2d(module)
    return None


def fuse_convolutions(model: nn.Module) -> nn.Module:
    """Replaces every ``ConvBNAct`` and plain ``Conv2d`` in ``model`` by a ``FusedConv2d``, in place.

    The model must be in eval mode: folding uses the running statistics of batch norm.
    """
    for name, child in model.named_children():
        replacement = _fused(child)
        if replacement is not None:
            setattr(model, name, replacement)
        else:
            fuse_convolutions(child)
    return model


class InferenceModel(nn.Module):
    """An eval-only model made by ``optimize_for_inference``: same outputs, faster.

    It keeps the original's input checks, runs without autograd, and takes care of the memory
    format, so it is called exactly as the original is.
    """

    def __init__(self, body: nn.Module, original: nn.Module, compiled: bool):
        super().__init__()
        self.body = body
        self.compiled = compiled
        for name in ("model_name", "num_classes", "in_chans", "default_input_size", "class_names",
                     "default_mean_std", "pretrained_layout"):
            if hasattr(original, name):
                setattr(self, name, getattr(original, name))
        self._checked = hasattr(original, "min_input_size") and hasattr(original, "in_chans")
        if self._checked:
            self.min_input_size = original.min_input_size
        super().train(False)

    def train(self, mode: bool = True):
        if mode:
            raise ConfigError("a model from optimize_for_inference is for inference only: train the original "
                              "model, then optimize it again")
        return self

    def forward(self, x):
        if self._checked:
            _check_input(self, (x,))
        x = x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
        with torch.no_grad():
            if not self.compiled:
                return self.body(x)
            import torch._inductor.config as inductor_config

            # Freezing makes inductor fold the weights into constants and pre-reorder them for oneDNN.
            with inductor_config.patch(freezing=True):
                return self.body(x)


def optimize_for_inference(model: nn.Module, example_input: torch.Tensor | None = None, *,
                           compile: bool = False) -> InferenceModel:
    """An eval-only copy of ``model`` that gives the same outputs (within 1e-4) faster on a CPU.

    Batch norm is folded into the convolutions, each convolution runs with its ReLU as one oneDNN
    call on weights laid out for it once, and tensors flow channels-last (see the module's notes for
    what each step is worth). ``compile=True`` adds ``torch.compile`` with frozen weights: 10-15%
    faster again, after minutes of compilation per input shape. ``example_input``, when given, runs
    once so that the weights are prepared (or compiled) before the first real call. ``model`` is not
    changed.
    """
    body = copy.deepcopy(model).eval()
    if compile:  # inductor's freezing folds batch norm and reorders the weights itself
        body = torch.compile(body.to(memory_format=torch.channels_last))
    else:
        body = fuse_convolutions(body).to(memory_format=torch.channels_last)
    optimized = InferenceModel(body, model, compiled=compile)
    if example_input is not None:
        optimized(example_input)
    return optimized


# ---------------------------------------------------------------------------------------------------
# Export

EXPORT_FORMATS = ("onnx", "torchscript")
ONNX_OPSET = 18  # the oldest the torch.export-based exporter writes without converting


@dataclass
class ExportResult:
    path: Path
    format: str
    input_shape: tuple[int, ...]
    dynamic_batch: bool
    max_difference: float | None  # largest |exported - PyTorch| on a random input; None if not checked


def _export_input(model: nn.Module, input_size) -> torch.Tensor:
    from .analysis import full_input_size

    shape = full_input_size(model, input_size)
    if hasattr(model, "in_chans") and shape[1] != model.in_chans:
        raise ConfigError(f"input {'x'.join(map(str, shape))} has {shape[1]} channels but the model takes "
                          f"{model.in_chans}: give an input size with {model.in_chans} channels (--input)")
    x = torch.randn(shape)
    if isinstance(model, nn.Module) and hasattr(model, "min_input_size"):
        _check_input(model, (x,))
    return x


def _require_onnx():
    try:
        import onnx
    except ImportError:
        raise ConfigError("ONNX export needs the onnx package: pip install 'inceptorch[export]'") from None
    return onnx


def _onnx_session(path_or_bytes, threads: int | None = None):
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError("running ONNX files needs onnxruntime: pip install 'inceptorch[export]'") from None
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    source = str(path_or_bytes) if isinstance(path_or_bytes, Path) else path_or_bytes
    return onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])


@contextlib.contextmanager
def _silenced_output():
    """Sends file descriptors 1 and 2 to /dev/null: the TorchScript-based exporter prints its whole
    graph from C++ when it gives up, although the fallback below then succeeds."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
            yield
    finally:
        for fd, copy_of in zip((1, 2), saved):
            os.dup2(copy_of, fd)
            os.close(copy_of)


@contextlib.contextmanager
def _quiet_loggers(*names):
    """The exporter's libraries log every pass at INFO; the CLI shows inceptorch's INFO lines only."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _write_onnx(model: nn.Module, x: torch.Tensor, path: Path, dynamic_batch: bool) -> None:
    """The TorchScript-based exporter first: deprecated in favour of the one built on torch.export,
    but it writes these models in about a second where the other spends 15-25 s even on a small one.
    The newer exporter takes over where the old one lacks an operator (an adaptive pool to a size that
    does not divide the input's, for instance)."""
    onnx = _require_onnx()
    names = {"input_names": ["input"], "output_names": ["logits"], "opset_version": ONNX_OPSET}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with _silenced_output():
                torch.onnx.export(model, (x,), str(path), dynamo=False, **names,
                                  dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch
                                  else None)
        except torch.onnx.errors.OnnxExporterError:
            log.info("the TorchScript-based ONNX exporter cannot export this model: using torch.export")
            shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
            with _quiet_loggers("onnxscript", "onnx_ir", "torch.onnx"):
                torch.onnx.export(model, (x,), str(path), dynamo=True, external_data=False, verbose=False,
                                  dynamic_shapes=shapes, **names)
    onnx.checker.check_model(str(path), full_check=True)


def _write_torchscript(model: nn.Module, x: torch.Tensor, path: Path) -> None:
    """Traced, then frozen: batch norm folded and weights inlined, for loading with ``torch.jit.load``."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TorchScript is deprecated, and still what C++ and mobile load
        scripted = torch.jit.freeze(torch.jit.trace(model, x, check_trace=False))
        torch.jit.save(scripted, str(path))


def _run_exported(path: Path, fmt: str, x: torch.Tensor) -> torch.Tensor:
    if fmt == "onnx":
        session = _onnx_session(path)
        return torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return torch.jit.load(str(path))(x)


def export(model: nn.Module, path, format: str = "onnx", input_size=None, *, dynamic_batch: bool = False,
           verify: bool = True) -> ExportResult:
    """Writes ``model`` in eval mode to ``path`` (from a CPU copy: the model itself is not changed).

    ``format`` is ``"onnx"`` (checked with ``onnx.checker``) or ``"torchscript"`` (traced and
    frozen). ``input_size`` is a side, (C, H, W) or (N, C, H, W), the model's default if ``None``.
    ``dynamic_batch`` lets the file take any batch size instead of the traced one. ``verify`` runs
    the file (onnxruntime or ``torch.jit.load``) on a random input, at another batch size where it
    is dynamic, and records the largest difference from PyTorch's outputs.
    """
    if format not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format '{format}': choose one of {', '.join(EXPORT_FORMATS)}")
    path = Path(path)
    if not path.parent.is_dir():
        raise ConfigError(f"folder {path.parent} does not exist: create it or choose another --out")
    model = copy.deepcopy(model).eval().cpu()
    x = _export_input(model, input_size)
    if format == "onnx":
        _write_onnx(model, x, path, dynamic_batch)
    else:
        _write_torchscript(model, x, path)
    difference = None
    if verify:
        check = torch.randn(x.shape[0] + 1 if dynamic_batch else x.shape[0], *x.shape[1:])
        with torch.no_grad():
            expected = model(check)
        difference = (_run_exported(path, format, check) - expected).abs().max().item()
    return ExportResult(path, format, tuple(x.shape), dynamic_batch, difference)


# ---------------------------------------------------------------------------------------------------
# Benchmark

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
        widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]
        text_columns = 5  # left-aligned; numbers right-aligned

        def fmt(line):
            return "  ".join(c.ljust(w) if i < text_columns else c.rjust(w)
                             for i, (c, w) in enumerate(zip(line, widths))).rstrip()

        notes = (f"{self.threads} threads, median of {self.repeats} timed rounds after warm-up, paths "
                 f"interleaved; peak {self.peak_gflops:.1f} GFLOP/s; vs ref: over the first path of each group")
        return "\n".join([fmt(header), *(fmt(line) for line in lines), notes])

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
              onnx: bool = True) -> BenchReport:
    """Times each model's inference paths, and training steps, in this process; see ``BenchRow``.

    For each model (a registered name, built with random weights: speed does not depend on them)
    and batch size: torchvision's or timm's eager model with the same weights where there is one,
    inceptorch eager, ``optimize_for_inference`` (and with ``compile=True`` where asked) and
    onnxruntime on the exported model. ``train_batches`` adds training steps: the reference,
    inceptorch eager, and inceptorch channels-last. ``input_size`` is a side, (H, W) or (C, H, W);
    each model's default when ``None``. ``peak_gflops`` defaults to the reference CPU's (156.8).
    """
    from .analysis import count_macs, full_input_size
    from .models import create_model

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
            model = create_model(name, in_chans=size[0] if isinstance(size, tuple) and len(size) == 3 else 3)
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
