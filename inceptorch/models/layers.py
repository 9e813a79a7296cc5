"""Building blocks shared by every model family, written once."""

import torch
from torch import nn

from ..images import IMAGENET_MEAN, IMAGENET_STD


class ConvBNAct(nn.Module):
    """Convolution, batch normalization, ReLU: the unit every Inception branch is made of.

    The children are named ``conv`` and ``bn`` as in torchvision's ``BasicConv2d`` and timm's
    ``ConvNormAct``, so their checkpoints load as they are. ``batch_norm=False`` gives the 2014
    GoogLeNet's plain convolution with a bias.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, *,
                 batch_norm=True, eps=1e-3):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=not batch_norm)
        self.bn = nn.BatchNorm2d(out_channels, eps=eps) if batch_norm else nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


def scaled_width(channels: int, width: float) -> int:
    """``channels * width`` rounded to a multiple of 8, at least 8, the widths vectorized convolution
    kernels run best on. GoogLeNet's and BN-Inception's widths all are multiples of 8, so width 1 changes nothing."""
    return max(8, 8 * round(channels * width / 8))


class Branches(nn.Module):
    """Runs each branch on the same input and concatenates the outputs along channels.

    An Inception block is a ``Branches`` whose children are named as its paper's figure names them;
    analysis finds the branches of every block by those ``branch*`` names.
    """

    def forward(self, x):
        return torch.cat([branch(x) for branch in self.children()], dim=1)


def adapt_first_conv_weight(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Adapts RGB filters to ``in_chans`` inputs, as timm does: grey sums the three, more repeats them.

    Repeating keeps the response to a constant image unchanged by scaling with 3 / in_chans.
    """
    if weight.shape[1] == in_chans:
        return weight
    if weight.shape[1] != 3:
        raise ValueError(f"cannot adapt a first convolution with {weight.shape[1]} input channels")
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = -(-in_chans // 3)
    return weight.repeat(1, repeats, 1, 1)[:, :in_chans] * (3 / in_chans)


class ImageNetToUnitRange(nn.Module):
    """Turns input normalized with ImageNet's mean and std into (pixel - 0.5) / 0.5, the range the
    original GoogLeNet weights (ported by torchvision) were trained on."""

    def __init__(self):
        super().__init__()
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
        # Not saved in checkpoints: constants, so that state dicts stay torchvision's.
        self.register_buffer("scale", (std / 0.5).float(), persistent=False)
        self.register_buffer("shift", ((mean - 0.5) / 0.5).float(), persistent=False)

    def forward(self, x):
        return x * self.scale + self.shift
