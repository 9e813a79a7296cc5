"""Fast inference: ``optimize_for_inference``, export to ONNX and TorchScript, and the benchmark."""

from .bench import BenchReport, BenchRow, benchmark, cpu_name, reference_model
from .export import EXPORT_FORMATS, ExportResult, export
from .optimize import FusedConv2d, InferenceModel, fuse_convolutions, optimize_for_inference

__all__ = ["EXPORT_FORMATS", "BenchReport", "BenchRow", "ExportResult", "FusedConv2d", "InferenceModel", "benchmark",
           "cpu_name", "export", "fuse_convolutions", "optimize_for_inference", "reference_model"]
