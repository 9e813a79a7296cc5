"""Fast inference: ``optimize_for_inference`` (torch, onnxruntime, OpenVINO; fp32, bf16, int8, auto),
export to ONNX, OpenVINO IR and TorchScript, and the benchmark."""

from ..cpu import cpu_name, fast_bf16, isa_names, measured_peak_gflops
from .bench import BenchReport, BenchRow, benchmark, reference_model
from .choose import BACKENDS, PRECISIONS, optimize_for_inference
from .export import EXPORT_FORMATS, ExportResult, export
from .torch_path import FusedConv2d, InferenceModel, fuse_convolutions

# The name inference gave cpu.fast_bf16 before there was one answer for training and inference.
bf16_supported = fast_bf16

__all__ = ["BACKENDS", "EXPORT_FORMATS", "PRECISIONS", "BenchReport", "BenchRow", "ExportResult", "FusedConv2d",
           "InferenceModel", "benchmark", "bf16_supported", "cpu_name", "export", "fuse_convolutions", "isa_names",
           "measured_peak_gflops", "optimize_for_inference", "reference_model"]
