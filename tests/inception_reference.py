"""Helpers for the reference-equivalence tests of the Inception models against torchvision and timm."""

import torch
from torch import nn

from inceptorch import create_model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def randomize_(model: nn.Module) -> nn.Module:
    """Random weights and BN statistics that keep activations near unit scale, so that a wrong
    layer, order or padding changes the output visibly; returns the model in eval mode."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                module.weight.normal_(0, (2 / module.weight[0].numel()) ** 0.5)
                if module.bias is not None:
                    module.bias.uniform_(-0.1, 0.1)
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def load_reference(name: str, reference: nn.Module, tmp_path, **options):
    """Saves ``reference``'s state dict as a plain .pth file and loads it through ``create_model``."""
    path = tmp_path / f"{name}_reference.pth"
    torch.save(reference.state_dict(), path)
    return create_model(name, weights=path, **options).eval(), path


def max_difference(ours: nn.Module, reference: nn.Module, x: torch.Tensor, reference_input=None) -> float:
    """Largest absolute difference of the logits; the reference sees ``reference_input`` if given."""
    with torch.no_grad():
        return (ours(x) - reference(x if reference_input is None else reference_input)).abs().max().item()


def loss_goes_down(model: nn.Module, size: int, lr: float, steps: int = 4) -> tuple[float, float]:
    """First and last loss of ``steps`` plain SGD steps on one fixed batch of two random images."""
    torch.manual_seed(0)
    x = torch.randn(2, model.in_chans, size, size)
    y = torch.tensor([0, model.num_classes - 1])
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses[0], losses[-1]
