"""Fast inference: ``optimize_for_inference`` (torch, onnxruntime, OpenVINO; fp32, bf16, int8, auto),
export to ONNX, OpenVINO IR and TorchScript, and the benchmark."""

from ..cpu import cpu_name, isa_names
from .bench import BenchReport, BenchRow, benchmark, reference_model
from .choose import BACKENDS, PRECISIONS, optimize_for_inference
from .cpu import measured_peak_gflops
from .export import EXPORT_FORMATS, ExportResult, export
from .optimize import FusedConv2d, InferenceModel, bf16_supported, fuse_convolutions

__all__ = ["BACKENDS", "EXPORT_FORMATS", "PRECISIONS", "BenchReport", "BenchRow", "ExportResult", "FusedConv2d",
           "InferenceModel", "benchmark", "bf16_supported", "cpu_name", "export", "fuse_convolutions", "isa_names",
           "measured_peak_gflops", "optimize_for_inference", "reference_model"]
