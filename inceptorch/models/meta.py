"""Shapes without data: a model's copy on the meta device, and the smallest input it accepts.

The smallest input is a property of a model (``ImageClassifier.min_input_size`` asks this module),
found by forward passes on the meta device, where tensors have shapes but no data: even
Inception-ResNet v2 costs no arithmetic and no memory.
"""

import copy
import functools
import itertools

import torch
from torch import nn


def meta_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` on the meta device, made without copying any weight data.

    Batch norm keeps the shape of its input, and its meta-device kernel is slow Python that would
    dominate every pass; in the copy, each batch norm only checks its channels.
    """

    def on_meta(tensor):
        empty = torch.empty_like(tensor, device="meta")
        return nn.Parameter(empty, tensor.requires_grad) if isinstance(tensor, nn.Parameter) else empty

    memo = {id(t): on_meta(t) for t in itertools.chain(model.parameters(), model.buffers())}
    meta_model = copy.deepcopy(model, memo)
    for module in meta_model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.forward = functools.partial(_batch_norm_shape, module.num_features)
    return meta_model


def _batch_norm_shape(num_features: int, x: torch.Tensor) -> torch.Tensor:
    if x.dim() < 2 or x.shape[1] != num_features:
        raise RuntimeError(f"batch norm expects {num_features} channels, got input of shape {tuple(x.shape)}")
    return torch.empty_like(x)


def _runs_at(meta_model, size: int, train: bool) -> bool:
    batch = 2 if train else 1  # batch norm in training needs more than one value per channel
    x = torch.empty(batch, meta_model.in_chans, size, size, device="meta")
    try:
        if train:
            meta_model.forward_with_aux(x)
        else:
            meta_model.forward(x)
    except (RuntimeError, ValueError, IndexError):
        return False
    return True


def min_input_size(model, train: bool = False, limit: int = 2048) -> int:
    """Smallest square input side for which a forward pass succeeds.

    ``train=True`` asks for training mode through ``forward_with_aux`` (aux heads included, when on):
    an aux head that pools and convolves a mid-network map can need a larger input than the trunk.
    The search runs on a copy of the model on the meta device: shapes only, no arithmetic.
    """
    meta_model = meta_copy(model).train(train)
    low, high = 0, max(1, getattr(model, "default_input_size", 224))
    while not _runs_at(meta_model, high, train):
        low, high = high, high * 2
        if high > limit:
            raise ValueError(f"{type(model).__name__} accepts no input up to {limit}x{limit}")
    while high - low > 1:  # invariant: fails at low (or low == 0), runs at high
        mid = (low + high) // 2
        if _runs_at(meta_model, mid, train):
            high = mid
        else:
            low = mid
    return high


def layer_output_shapes(model, side: int) -> list[tuple[str, tuple[int, ...]]]:
    """The name and output shape of each layer ``model.layer_outputs`` runs, in eval mode on a
    ``side`` x ``side`` input, found on the meta device."""
    meta_model = meta_copy(model).eval()
    x = torch.empty(1, model.in_chans, side, side, device="meta")
    with torch.no_grad():
        return [(name, tuple(out.shape)) for name, out in meta_model.layer_outputs(x)]
