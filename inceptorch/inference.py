"""Fast CPU inference, export to ONNX and TorchScript, and the benchmark that compares them.

What pays on a 2-core AVX2 CPU (images/s at batch 16, googlenet 224x224 / inception_v3 299x299; see
``benchmarks/inference.py`` and the numbers in its results file):

- channels-last memory: oneDNN's convolutions work in NHWC, so eager PyTorch on NCHW tensors reorders
  every activation twice per convolution. Channels-last alone roughly doubles torchvision's eager speed.
- batch norm folded into the convolution before it, and the convolution, its bias and its ReLU run as
  one oneDNN call on weights reordered once into oneDNN's blocked layout (``FusedConv2d``): a further
  5-15%, most of it at small batches where the per-call weight reorder weighs most.
- ``torch.compile`` (inductor, with weight freezing) on top: another 10-15% (its pooling kernels skip
  the indices eager max pooling computes), for 1.5-3 minutes of compilation on 2 cores, paid again
  for each new input shape. Off by default; ``compile=True`` asks for it.

What did not pay, measured and left out: running the sibling 1x1 convolutions of an Inception block
as one wider convolution split after (the split views must be copied back into dense tensors for
the next convolution, which ate the gain: within noise on googlenet and inception_v3),
``torch.jit.trace`` + ``freeze`` (about 10% over eager channels-last before the fused convolutions,
nothing after them) and ``torch.jit.optimize_for_inference`` (its conversions to oneDNN tensors
made googlenet 2-5x slower).
"""

import copy
import io
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
    runs batch norm and ReLU as two more passes over memory; here the reorder happens once, on the
    first call (it depends on the input's shape), and the rest inside the convolution. The reordered
    weights are an opaque oneDNN tensor that cannot be copied or saved, so ``weight`` keeps the plain
    ones and copies start without the reordered ones. Elsewhere (GPU, no oneDNN) it runs
    ``F.conv2d`` and ``F.relu``.
    """

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d | None = None, relu: bool = False):
        super().__init__()
        weight, bias = conv.weight.detach(), conv.bias.detach() if conv.bias is not None else None
        if bn is not None:
            weight, bias = fuse_conv_bn_weights(weight, bias, bn.running_mean, bn.running_var, bn.eps,
                                                bn.weight, bn.bias)
        if bias is None:
            bias = torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device)
        self.register_buffer("weight", weight.detach().clone())
        self.register_buffer("bias", bias.detach().clone())
        self.stride, self.padding = list(conv.stride), list(conv.padding)
        self.dilation, self.groups = list(conv.dilation), conv.groups
        self.relu = relu
        self._packed = None

    def forward(self, x):
        if x.device.type != "cpu" or x.dtype != torch.float32 or not _onednn_available():
            x = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
            return F.relu(x) if self.relu else x
        if self._packed is None:
            self._packed = torch.ops.mkldnn._reorder_convolution_weight(
                self.weight, self.padding, self.stride, self.dilation, self.groups, list(x.shape))
        return torch.ops.mkldnn._convolution_pointwise(x, self._packed, self.bias, self.padding, self.stride,
                                                       self.dilation, self.groups,
                                                       "relu" if self.relu else "none", [], "")

    def _apply(self, fn, recurse=True):
        self._packed = None  # moved or converted weights need a fresh reorder
        return super()._apply(fn, recurse)

    def __getstate__(self):
        return {**self.__dict__, "_packed": None}

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
