"""RMSProp as TensorFlow computes it (``--optimizer rmsproptf``), for the Inception v3 paper's recipe.

Szegedy et al. (2016), section 8, trained with "RMSProp with decay of 0.9 and epsilon = 1.0" in
TensorFlow, whose RMSProp differs from PyTorch's in three ways that matter at epsilon 1.0: the mean
square starts at one (PyTorch: zero), epsilon is added inside the square root (PyTorch: outside), and the
learning rate scales the gradient before it enters the momentum buffer. timm's ``RMSpropTF`` does the
same; tests/test_timm_training.py compares the two.
"""

import torch


class RMSpropTF(torch.optim.Optimizer):
    def __init__(self, params, lr: float, alpha: float = 0.9, eps: float = 1.0, momentum: float = 0.9,
                 weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "alpha": alpha, "eps": eps, "momentum": momentum,
                                  "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.add(p, alpha=group["weight_decay"]) if group["weight_decay"] else p.grad
                state = self.state[p]
                if not state:
                    state["square_avg"] = torch.ones_like(p)
                    state["momentum_buffer"] = torch.zeros_like(p)
                square_avg, buffer = state["square_avg"], state["momentum_buffer"]
                square_avg.add_(grad.square() - square_avg, alpha=1 - group["alpha"])
                scaled = grad.div((square_avg + group["eps"]).sqrt()).mul_(group["lr"])
                buffer.mul_(group["momentum"]).add_(scaled)
                p.sub_(buffer)
        return loss
