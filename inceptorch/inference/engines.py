"""onnxruntime and OpenVINO behind the model's own contract: a tensor in, fp32 logits out, input checked.

Both run the model's ONNX export (dynamic batch). OpenVINO compiles it per input shape (0.1-0.4 s;
a fixed shape runs faster than a dynamic one) and keeps the last few. Its default precision on a
CPU with AMX or AVX512-BF16 is bf16, so ``precision="fp32"`` pins ``INFERENCE_PRECISION_HINT=f32``
(exact, and then no faster than the torch fp32 path here), ``"bf16"`` asks for bf16 and ``"int8"``
quantizes with NNCF (the other layers at OpenVINO's default). onnxruntime runs fp32 only: it has
no bf16 kernels on the CPU and its int8 trailed OpenVINO's 3.5-6x (see ``quantize``).
"""

import copy
import tempfile
from pathlib import Path

import torch
from torch import nn

from ..analysis import full_input_size
from ..errors import ConfigError
from .export import onnx_session, openvino_compiled, openvino_model, write_onnx
from .quantize import openvino_int8
from .torch_path import InferenceModel, check_bf16

ENGINE_PRECISIONS = {"onnxruntime": ("fp32",), "openvino": ("fp32", "bf16", "int8")}
OPENVINO_HINTS = {"fp32": {"INFERENCE_PRECISION_HINT": "f32"}, "bf16": {"INFERENCE_PRECISION_HINT": "bf16"},
                  "int8": {}, "default": {}}


class OnnxRuntimeRunner:
    """An onnxruntime session as a function of a tensor."""

    def __init__(self, onnx_bytes: bytes):
        self.session = onnx_session(onnx_bytes)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {"input": x.contiguous().numpy()})[0])


class OpenVINORunner:
    """An OpenVINO model as a function of a tensor, compiled for each input shape it meets."""

    shapes_kept = 4

    def __init__(self, ov_model, config: dict):
        self.ov_model, self.config = ov_model, config
        self._requests = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        shape = tuple(x.shape)
        compiled, request = self._requests.pop(shape, (None, None))
        if request is None:  # the compiled model is kept with its request: the request needs it alive
            compiled = openvino_compiled(self.ov_model, shape, self.config)
            request = compiled.create_infer_request()
            if len(self._requests) >= self.shapes_kept:
                self._requests.pop(next(iter(self._requests)))
        self._requests[shape] = compiled, request
        request.infer({0: x.contiguous().numpy()})
        return torch.from_numpy(request.get_output_tensor(0).data.copy())  # the request reuses its buffer


def _onnx_bytes(model: nn.Module, x: torch.Tensor) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        write_onnx(model, x, path, dynamic_batch=True)
        return path.read_bytes()


def engine_model(model: nn.Module, example_input: torch.Tensor | None, backend: str, precision: str,
                 calibration: list[torch.Tensor] | None = None) -> InferenceModel:
    """``model`` run by ``backend`` ("onnxruntime" or "openvino") in ``precision``; OpenVINO's own
    default precision with ``precision="default"`` (the peer measured by ``bench``)."""
    if precision != "default" and precision not in ENGINE_PRECISIONS[backend]:
        raise ConfigError(f"{backend} runs {', '.join(ENGINE_PRECISIONS[backend])} here, not {precision}: "
                          f"use backend openvino or torch for {precision}")
    if precision == "default" and backend != "openvino":
        precision = "fp32"
    check_bf16(precision)
    cpu_model = copy.deepcopy(model).cpu().eval()
    x = example_input if example_input is not None else torch.randn(full_input_size(cpu_model, None))
    # The export runs one forward pass and its batch is dynamic: two images give the graph that fifty
    # would, at a twenty-fifth of the cost (not one: torch.export's route takes a batch of 1 as constant).
    traced = x[:2].float()
    with torch.no_grad():
        if backend == "onnxruntime":
            body = OnnxRuntimeRunner(_onnx_bytes(cpu_model, traced))
        else:
            ov_model = openvino_model(cpu_model, traced)
            if precision == "int8":
                ov_model = openvino_int8(ov_model, calibration)
            body = OpenVINORunner(ov_model, OPENVINO_HINTS[precision])
    optimized = InferenceModel(body, model, path=f"{backend} {precision}", channels_last=False)
    if example_input is not None:
        optimized(example_input)
    return optimized
