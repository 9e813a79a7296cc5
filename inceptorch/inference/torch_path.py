"""The torch path of ``optimize_for_inference`` (``choose``): the same model, faster on a CPU, batch
norm folded into fused oneDNN convolutions (``FusedConv2d``), in fp32 or bf16.

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

bf16 (``precision="bf16"``, where the CPU has AVX512-BF16 or AMX): the same fused path with bf16
weights and activations, logits returned in fp32. oneDNN's convolutions accept bf16 as they do fp32
and run it on the AMX tiles: 3.5x the fp32 path on googlenet and 4.2x on inception_v3 at batch 16
(2-core Xeon with AMX, no compilation). Measured and left out: ``torch.autocast`` (its fp32 weights
are cast on every call: 25-40% slower than bf16 weights), TorchScript freezing (slower than eager
here). ``compile=True`` in bf16 adds 0-19% after 13-25 s of compilation.
"""

import copy
import logging

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from ..cpu import fast_bf16
from ..errors import ConfigError
from ..models.base import check_input
from ..models.layers import ConvBNAct

log = logging.getLogger("inceptorch")


ONEDNN_DTYPES = (torch.float32, torch.bfloat16)  # the dtypes FusedConv2d runs through oneDNN
TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


class FusedConv2d(nn.Module):
    """A convolution with batch norm folded in and its ReLU fused, as one oneDNN call on CPU.

    Eager PyTorch reorders a convolution's weights into oneDNN's blocked layout on every call and
    runs batch norm and ReLU as two more passes over memory; here the reorder happens once per input
    shape (oneDNN picks the layout for the shape: a layout made for another shape measured 4-20%
    slower) and the rest inside the convolution. Reordered weights are opaque oneDNN tensors that
    cannot be copied or saved, so ``weight`` keeps the plain ones and a copy makes its own. Elsewhere
    (GPU, dtypes other than fp32 and bf16, no oneDNN) it runs ``F.conv2d`` and ``F.relu``.
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
        if x.device.type != "cpu" or x.dtype not in ONEDNN_DTYPES or not _onednn_available():
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

    It keeps the original's input checks, runs without autograd, converts the input to what
    ``body`` runs on (channels-last, ``dtype``) and returns fp32, so it is called exactly as the
    original is. ``body`` is a module or any function of a tensor (an engine's session);
    ``path`` names what runs, for logs and benchmarks: "torch bf16", "openvino int8".
    """

    def __init__(self, body, original: nn.Module, compiled: bool = False, *, dtype=torch.float32,
                 path: str = "torch fp32", channels_last: bool = True):
        super().__init__()
        self.body = body
        self.compiled = compiled
        self.dtype, self.path, self.channels_last = dtype, path, channels_last
        for name in ("model_name", "num_classes", "in_chans", "default_input_size", "class_names",
                     "pretrained_cfg", "returns_features"):
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
            check_input(self, x)
        if x.dim() == 4 and self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = x.to(self.dtype)
        with torch.no_grad():
            if not self.compiled:
                return self.body(x).float()
            import torch._inductor.config as inductor_config  # here: importing inductor costs seconds

            # Freezing makes inductor fold the weights into constants and pre-reorder them for oneDNN.
            with inductor_config.patch(freezing=True):
                return self.body(x).float()

    def extra_repr(self) -> str:
        return f"path={self.path!r}"


def check_bf16(precision: str) -> None:
    if precision == "bf16" and not fast_bf16():
        raise ConfigError("this CPU has no bf16 instructions (AVX512-BF16 or AMX): use precision fp32 or int8")


def torch_model(model: nn.Module, example_input: torch.Tensor | None = None, *, precision: str = "fp32",
                compile: bool = False) -> InferenceModel:
    """The torch path of ``optimize_for_inference`` in fp32 or bf16 (see the module's notes)."""
    check_bf16(precision)
    dtype = TORCH_DTYPES[precision]
    body = copy.deepcopy(model).eval()
    if compile:  # inductor's freezing folds batch norm and reorders the weights itself
        body = torch.compile(body.to(dtype=dtype, memory_format=torch.channels_last))
    else:
        body = fuse_convolutions(body).to(dtype=dtype, memory_format=torch.channels_last)
    optimized = InferenceModel(body, model, compiled=compile, dtype=dtype,
                               path=f"torch {precision}{' compiled' if compile else ''}")
    if example_input is not None:
        optimized(example_input)
    return optimized
