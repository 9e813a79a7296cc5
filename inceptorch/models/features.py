"""timm's feature API pieces that know nothing of a model: ``FeatureInfo``, the choice of feature
levels, ``indices`` as timm reads them, and gradient checkpointing that updates batch norm once."""

import contextlib
import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..errors import ConfigError


class FeatureInfo(list):
    """timm's ``feature_info``: one dict per feature level (``num_chs``, ``reduction``, ``module``),
    with the levels a ``features_only`` model returns (``out_indices``, all by default).

    It is a list of those dicts, as a timm model's own ``feature_info`` is, and answers like the
    ``FeatureInfo`` of a timm ``features_only`` model: ``channels()`` and ``reduction()`` of the
    returned levels, or of level ``idx``.
    """

    def __init__(self, levels, out_indices: Sequence[int] | None = None):
        super().__init__(dict(level) for level in levels)
        self.out_indices = tuple(range(len(self)) if out_indices is None else out_indices)

    def get(self, key: str, idx: int | Sequence[int] | None = None):
        if isinstance(idx, int):
            return self[idx][key]
        return [self[i][key] for i in (self.out_indices if idx is None else idx)]

    def channels(self, idx=None):
        return self.get("num_chs", idx)

    def reduction(self, idx=None):
        return self.get("reduction", idx)

    def module_name(self, idx=None):
        return self.get("module", idx)


def feature_levels(outputs: list[tuple[str, tuple[int, ...]]], input_side: int,
                   taps: Sequence[str] = ()) -> FeatureInfo:
    """The feature levels of a network whose layers put out ``outputs`` (name, shape) on a square
    input of side ``input_side``.

    A level's reduction is the input side over its output side, rounded down to a power of two (299
    -> 149 is 2, -> 8 is 32, as timm counts). Without ``taps``, each level is the last layer at its
    reduction, the output just before the grid shrinks, which gives timm's levels for
    inception_v3 and inception_resnet_v2; ``taps`` names the layers where a family differs.
    """
    reductions = {name: 2 ** int(math.log2(input_side / shape[-1])) for name, shape in outputs}
    channels = {name: shape[1] for name, shape in outputs}
    if not taps:
        names = [name for name, _ in outputs]
        taps = [name for name, following in zip(names, [*names[1:], None])
                if following is None or reductions[name] != reductions[following]]
    return FeatureInfo({"num_chs": channels[name], "reduction": reductions[name], "module": name} for name in taps)


def take_indices(count: int, indices: int | Sequence[int] | None) -> list[int]:
    """timm's ``indices`` of ``forward_intermediates`` over ``count`` levels: all for None, the last
    n for an int n, else those listed (negative ones from the end); sorted, as the layers run."""
    if indices is None:
        return list(range(count))
    if isinstance(indices, int):
        if not 0 < indices <= count:
            raise ConfigError(f"indices={indices} asks for the last {indices} of {count} feature levels: "
                              f"give 1 to {count}")
        return list(range(count - indices, count))
    chosen = sorted({i + count if i < 0 else i for i in indices})
    if not chosen or chosen[0] < 0 or chosen[-1] >= count:
        raise ConfigError(f"feature indices {list(indices)} out of range: this model has {count} feature "
                          f"levels, 0 to {count - 1} (or -{count} to -1)")
    return chosen


@contextlib.contextmanager
def _running_stats_kept(layer: nn.Module):
    """Batch norm layers of ``layer`` in training update copies of their running statistics, thrown
    away afterwards: what the recomputation of a checkpointed layer runs under. (Switching the
    updates off instead would change which tensors batch norm saves, which checkpoint refuses.)"""
    kept = [(m, m.running_mean, m.running_var, m.num_batches_tracked) for m in layer.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats]
    for module, mean, var, count in kept:
        module.running_mean, module.running_var, module.num_batches_tracked = mean.clone(), var.clone(), count.clone()
    try:
        yield
    finally:
        for module, mean, var, count in kept:
            module.running_mean, module.running_var, module.num_batches_tracked = mean, var, count


def checkpointed(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` keeping only its input for the backward pass, which runs it again.

    In training, batch norm would update its running mean and variance in both runs. The forward
    run updates them; the recomputation runs under ``_running_stats_kept`` (checkpoint's
    ``context_fn``): batch norm normalizes with the batch's own statistics as before, so outputs and
    gradients are the same, but its updates of the running ones and of ``num_batches_tracked`` go
    to copies that are thrown away. Dropout draws the same masks in both runs (checkpoint restores
    the RNG state).
    """
    return checkpoint(layer, x, use_reentrant=False,
                      context_fn=lambda: (contextlib.nullcontext(), _running_stats_kept(layer)))
