"""Export to ONNX, OpenVINO IR and TorchScript, each file checked by running it against PyTorch."""

import contextlib
import copy
import functools
import logging
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..analysis import full_input_size
from ..errors import ConfigError
from ..models.base import check_input
from ..outputs import writable_file
from .extras import require

log = logging.getLogger("inceptorch")

EXPORT_FORMATS = ("onnx", "openvino", "torchscript")
ONNX_OPSET = 18  # the oldest the torch.export-based exporter writes without converting


@dataclass
class ExportResult:
    path: Path
    format: str
    input_shape: tuple[int, ...]
    dynamic_batch: bool
    max_difference: float | None  # largest |exported - PyTorch| on a random input; None if not checked


def _export_input(model: nn.Module, input_size) -> torch.Tensor:
    shape = full_input_size(model, input_size)
    if hasattr(model, "in_chans") and shape[1] != model.in_chans:
        raise ConfigError(f"input {'x'.join(map(str, shape))} has {shape[1]} channels but the model takes "
                          f"{model.in_chans}: give an input size with {model.in_chans} channels (--input)")
    x = torch.randn(shape)
    if isinstance(model, nn.Module) and hasattr(model, "min_input_size"):
        check_input(model, x)
    return x


def onnx_session(path_or_bytes, threads: int | None = None):
    """An onnxruntime CPU session on an ONNX file (a Path) or its bytes, with PyTorch's thread count."""
    onnxruntime = require("onnxruntime", "running ONNX files")
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


def write_onnx(model: nn.Module, x: torch.Tensor, path: Path, dynamic_batch: bool) -> None:
    """The TorchScript-based exporter first: deprecated in favour of the one built on torch.export,
    but it writes these models in about a second where the other spends 15-25 s even on a small one.
    The newer exporter takes over where the old one lacks an operator (an adaptive pool to a size that
    does not divide the input's, for instance)."""
    onnx = require("onnx", "ONNX export")
    require("onnxscript", "ONNX export")
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


def openvino_model(model: nn.Module, x: torch.Tensor, dynamic_batch: bool = True):
    """``model`` as an OpenVINO model in memory, converted from its ONNX export (the route measured:
    OpenVINO reads these ONNX files whole)."""
    ov = require("openvino", "OpenVINO")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        write_onnx(model, x, path, dynamic_batch)
        return ov.Core().read_model(str(path))


def openvino_compiled(ov_model, shape, config: dict | None = None):
    """``ov_model`` compiled for the CPU at a fixed input ``shape`` (faster than a dynamic one), on
    PyTorch's thread count; ``config`` adds OpenVINO properties (``INFERENCE_PRECISION_HINT``)."""
    ov = require("openvino", "OpenVINO")
    ov_model = ov_model.clone()
    ov_model.reshape(ov.PartialShape(list(shape)))
    return _openvino_core(ov).compile_model(ov_model, "CPU", {"INFERENCE_NUM_THREADS": torch.get_num_threads(),
                                                              **(config or {})})


@functools.cache
def _openvino_core(ov):
    """One OpenVINO Core for the process: its plugins then outlive every model compiled with them,
    whatever order the garbage collector frees those in."""
    return ov.Core()


def _write_openvino(model: nn.Module, x: torch.Tensor, path: Path, dynamic_batch: bool) -> None:
    """IR (.xml beside its .bin) in fp32: OpenVINO's default would store the weights as fp16."""
    ov = require("openvino", "OpenVINO export")
    if path.suffix != ".xml":
        raise ConfigError(f"--out {path} must end in .xml: OpenVINO IR is an .xml file beside its .bin")
    ov_model = openvino_model(model, x, dynamic_batch)
    if not dynamic_batch:
        ov_model.reshape(ov.PartialShape(list(x.shape)))
    ov.save_model(ov_model, str(path), compress_to_fp16=False)


def _write_torchscript(model: nn.Module, x: torch.Tensor, path: Path) -> None:
    """Traced, then frozen: batch norm folded and weights inlined, for loading with ``torch.jit.load``."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TorchScript is deprecated, and still what C++ and mobile load
        scripted = torch.jit.freeze(torch.jit.trace(model, x, check_trace=False))
        torch.jit.save(scripted, str(path))


def _run_exported(path: Path, fmt: str, x: torch.Tensor) -> torch.Tensor:
    if fmt == "onnx":
        session = onnx_session(path)
        return torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
    if fmt == "openvino":  # in fp32: OpenVINO's default on a bf16 CPU would be bf16
        ov = require("openvino", "OpenVINO")
        compiled = openvino_compiled(ov.Core().read_model(str(path)), x.shape, {"INFERENCE_PRECISION_HINT": "f32"})
        return torch.from_numpy(compiled(x.numpy())[0])
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return torch.jit.load(str(path))(x)


def export(model: nn.Module, path, format: str = "onnx", input_size=None, *, dynamic_batch: bool = False,
           verify: bool = True) -> ExportResult:
    """Writes ``model`` in eval mode to ``path`` (from a CPU copy: the model itself is not changed).

    ``format`` is ``"onnx"`` (checked with ``onnx.checker``), ``"openvino"`` (IR: ``path`` is the
    .xml, the weights go beside it in a .bin) or ``"torchscript"`` (traced and frozen). ``input_size`` is a side, (C, H, W) or (N, C, H, W), the model's default if ``None``.
    ``dynamic_batch`` lets the file take any batch size instead of the traced one. ``verify`` runs
    the file (onnxruntime or ``torch.jit.load``) on a random input, at another batch size where it
    is dynamic, and records the largest difference from PyTorch's outputs.
    """
    if format not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format '{format}': choose one of {', '.join(EXPORT_FORMATS)}")
    path = writable_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = copy.deepcopy(model).eval().cpu()
    x = _export_input(model, input_size)
    if format == "onnx":
        write_onnx(model, x, path, dynamic_batch)
    elif format == "openvino":
        _write_openvino(model, x, path, dynamic_batch)
    else:
        _write_torchscript(model, x, path)
    difference = None
    if verify:
        check = torch.randn(x.shape[0] + 1 if dynamic_batch else x.shape[0], *x.shape[1:])
        with torch.no_grad():
            expected = model(check)
        difference = (_run_exported(path, format, check) - expected).abs().max().item()
    return ExportResult(path, format, tuple(x.shape), dynamic_batch, difference)


