"""Building blocks shared by every model family, written once."""

import torch
from torch import nn

from ..errors import ConfigError
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


def head_shape(layer: nn.Module) -> dict:
    """What a fresh head like ``layer`` needs besides its number of classes: a Linear's input width,
    or the form of NiN's 1x1 Conv2d."""
    if isinstance(layer, nn.Linear):
        return {"in_features": layer.in_features, "bias": layer.bias is not None}
    if isinstance(layer, nn.Conv2d):
        return {"in_channels": layer.in_channels, "kernel_size": layer.kernel_size, "stride": layer.stride,
                "padding": layer.padding, "bias": layer.bias is not None}
    raise TypeError(f"cannot resize a head of type {type(layer).__name__}")


def fresh_head(shape: dict, num_classes: int) -> nn.Module:
    """A head of ``shape`` (see ``head_shape``) with ``num_classes`` outputs; the identity for 0."""
    if num_classes == 0:
        return nn.Identity()
    if "in_features" in shape:
        return nn.Linear(shape["in_features"], num_classes, bias=shape["bias"])
    return nn.Conv2d(shape["in_channels"], num_classes, shape["kernel_size"], shape["stride"], shape["padding"],
                     bias=shape["bias"])


POOL_TYPES = ("avg", "max", "")


def pool_type_of(global_pool) -> str:
    """timm's ``global_pool`` strings, and the bools ``create_model`` took before (True: "avg", False: "")."""
    if isinstance(global_pool, bool):
        return "avg" if global_pool else ""
    if global_pool not in POOL_TYPES:
        raise ConfigError(f"global_pool must be 'avg', 'max' or '' (no pooling: the feature map), got {global_pool!r}")
    return global_pool


def global_pool_layer(pool_type: str) -> nn.Module:
    return nn.AdaptiveAvgPool2d(1) if pool_type == "avg" else nn.AdaptiveMaxPool2d(1)
