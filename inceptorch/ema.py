"""The exponential moving average of a model's weights (``--model-ema DECAY``), warmed up as timm's.

timm's ``ModelEmaV3`` with ``use_warmup``: the decay after ``step`` optimizer steps is
``1 - (1 + (step - 1)) ** -2/3``, capped at DECAY, so the average follows the raw weights closely at first
(decay 0 at the first step: a copy) instead of holding on to the random initialisation for thousands
of steps. Buffers (batch-norm statistics) are averaged too, as timm does by default.
"""

import copy

import torch
from torch import nn

WARMUP_POWER = 2 / 3  # timm's ModelEmaV3 default (warmup_gamma 1.0)


def ema_decay(step: int, decay: float) -> float:
    """The decay of the update made after optimizer step ``step`` (counted from 1)."""
    if step <= 1:
        return 0.0
    return min(decay, 1 - step ** -WARMUP_POWER)  # (1 + (step - 1) / gamma) with gamma 1


class ModelEma:
    """A frozen copy of the model whose floating-point tensors move towards the model's after each step."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        weight = 1 - ema_decay(step, self.decay)
        for ema_value, value in zip(self.module.state_dict().values(), model.state_dict().values()):
            if ema_value.is_floating_point():
                ema_value.lerp_(value, weight)
            else:  # counters such as num_batches_tracked are copied
                ema_value.copy_(value)

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)
