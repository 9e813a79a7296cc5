"""Model analysis: per-layer summary, multiply-adds, per-branch breakdown, smallest input."""

import copy

import torch


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

    ``train=True`` asks for training mode through ``forward_with_aux`` (aux heads included, when on).
    The search runs on a copy of the model on the meta device: shapes only, no arithmetic.
    """
    meta_model = copy.deepcopy(model).to("meta").train(train)
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
