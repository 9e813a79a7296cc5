"""BN-Inception (Inception v2): Ioffe and Szegedy 2015, "Batch Normalization: Accelerating Deep
Network Training by Reducing Internal Covariate Shift", the network of Figure 5 (appendix).

GoogLeNet with batch normalization after every convolution, each 5x5 replaced by two 3x3s, blocks
3c and 4e that halve the grid themselves (stride-2 convolutions beside a max pool whose output passes
through), and an average or max pool in each block's pooling branch. Shapes in comments are for
224x224 inputs. Figure 5 prints 576 channels after 4c and 4d and 1024 after 4e, but its own branch
columns add up to 608, 608 and 1056, the widths the released Caffe model has; these columns are
followed here. There are no auxiliary classifiers: the paper trains this network without them.
"""

from typing import NamedTuple

from torch import nn

from .base import InceptionNet, init_weights
from .cfgs import plain_cfg
from .layers import Branches, ConvBNAct, scaled_width
from .registry import register


class Row(NamedTuple):
    """A row of Figure 5; ``pool_proj`` 0 means the pooled input passes through unprojected."""

    ch1x1: int
    ch3x3_reduce: int
    ch3x3: int
    double_reduce: int
    double3x3: int
    pool: str  # "avg" or "max"
    pool_proj: int
    stride: int = 1


CHANNEL_FIELDS = ("ch1x1", "ch3x3_reduce", "ch3x3", "double_reduce", "double3x3", "pool_proj")

FIGURE_5 = {
    "inception3a": Row(64, 64, 64, 64, 96, "avg", 32),  # 28x28x256
    "inception3b": Row(64, 64, 96, 64, 96, "avg", 64),  # 28x28x320
    "inception3c": Row(0, 128, 160, 64, 96, "max", 0, stride=2),  # 14x14x576
    "inception4a": Row(224, 64, 96, 96, 128, "avg", 128),  # 14x14x576
    "inception4b": Row(192, 96, 128, 96, 128, "avg", 128),  # 14x14x576
    "inception4c": Row(160, 128, 160, 128, 160, "avg", 128),  # 14x14x608
    "inception4d": Row(96, 128, 192, 160, 192, "avg", 128),  # 14x14x608
    "inception4e": Row(0, 128, 192, 192, 256, "max", 0, stride=2),  # 7x7x1056
    "inception5a": Row(352, 192, 320, 160, 224, "avg", 128),  # 7x7x1024
    "inception5b": Row(352, 192, 320, 192, 224, "max", 128),  # 7x7x1024
}


class InceptionBN(Branches):
    """An Inception block of Figure 5: 1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 -> 3x3 | pool -> 1x1 projection.

    With ``stride=2`` the last convolution of each branch and the pool stride, there is no 1x1
    branch and the pooled input passes through: the block halves the grid as it widens the channels.
    """

    def __init__(self, in_channels: int, row: Row):
        super().__init__()
        if row.ch1x1:
            self.branch1x1 = ConvBNAct(in_channels, row.ch1x1, 1)
        self.branch3x3 = nn.Sequential(ConvBNAct(in_channels, row.ch3x3_reduce, 1),
                                       ConvBNAct(row.ch3x3_reduce, row.ch3x3, 3, stride=row.stride, padding=1))
        self.branch3x3dbl = nn.Sequential(ConvBNAct(in_channels, row.double_reduce, 1),
                                          ConvBNAct(row.double_reduce, row.double3x3, 3, padding=1),
                                          ConvBNAct(row.double3x3, row.double3x3, 3, stride=row.stride, padding=1))
        pool = (nn.AvgPool2d if row.pool == "avg" else nn.MaxPool2d)(3, stride=row.stride, padding=1)
        self.branch_pool = nn.Sequential(pool, ConvBNAct(in_channels, row.pool_proj, 1)) if row.pool_proj else pool
        self.out_channels = row.ch1x1 + row.ch3x3 + row.double3x3 + (row.pool_proj or in_channels)


def figure_5_blocks(names, in_channels: int, width: float = 1.0) -> tuple[dict, int]:
    """Figure 5's blocks ``names`` in sequence from ``in_channels``, every channel count scaled by
    ``width`` (a zero, no 1x1 branch or an unprojected pool, stays zero).

    Returns the blocks by name and the number of channels the last one puts out.
    """
    blocks = {}
    for name in names:
        row = FIGURE_5[name]
        channels = {field: scaled_width(getattr(row, field), width) for field in CHANNEL_FIELDS if getattr(row, field)}
        blocks[name] = InceptionBN(in_channels, row._replace(**channels))
        in_channels = blocks[name].out_channels
    return blocks, in_channels


class BNInception(InceptionNet):
    """The network of Figure 5, in stages ``stem``, ``conv``, ``inception3``, ``inception4``, ``inception5``."""

    default_input_size = 224

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, *, dropout: float = 0.0):
        super().__init__(num_classes, in_chans)
        self.add_stage("stem", {"conv1": ConvBNAct(in_chans, 64, 7, stride=2, padding=3),
                                "maxpool1": nn.MaxPool2d(3, stride=2, padding=1)})  # 56x56x64
        self.add_stage("conv", {"conv2_reduce": ConvBNAct(64, 64, 1), "conv2": ConvBNAct(64, 192, 3, padding=1),
                                "maxpool2": nn.MaxPool2d(3, stride=2, padding=1)})  # 28x28x192
        channels = 192
        for stage in ("inception3", "inception4", "inception5"):
            blocks, channels = figure_5_blocks([name for name in FIGURE_5 if name.startswith(stage)], channels)
            self.add_stage(stage, blocks)
        self.add_head(channels, dropout)
        init_weights(self)


class SmallBNInception(InceptionNet):
    """BN-Inception for 28x28 and 32x32 images: Figure 5's blocks 3a-4b, ``width`` times as wide.

    The stem is googlenet_small's, a 3x3 convolution at full resolution and one pool (28 -> 14) before
    the 1x1/3x3 convolutions and blocks 3a and 3b; block 3c then halves the grid itself (14 -> 7) for
    4a and 4b. Beside googlenet_small it differs only where the paper differs from GoogLeNet: two
    3x3s in place of the 5x5, average pools in the pooling branches, and 3c in place of a max pool.
    """

    default_input_size = 28

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, *, width: float = 0.375, dropout: float = 0.2):
        super().__init__(num_classes, in_chans)
        conv_width = self.add_small_image_stem(width, ("conv2_reduce", "conv2"))  # 14x14 from 28x28
        blocks, channels = figure_5_blocks(("inception3a", "inception3b", "inception3c"), conv_width, width)
        self.add_stage("inception3", blocks)  # 7x7 after 3c
        blocks, channels = figure_5_blocks(("inception4a", "inception4b"), channels, width)
        self.add_stage("inception4", blocks)
        self.add_head(channels, dropout)
        init_weights(self)


default_cfgs = {
    "bn_inception": plain_cfg({"input_size": 224, "pool_size": (7, 7), "first_conv": "conv1.conv"}),
    "bn_inception_small": plain_cfg({"input_size": 28, "pool_size": (7, 7), "first_conv": "conv1.conv"}),
}


@register(paper="Ioffe and Szegedy 2015, Batch Normalization (Figure 5)", cfgs=default_cfgs)
def bn_inception(num_classes=1000, in_chans=3, **kwargs):
    """BN-Inception. Option: ``dropout`` (0: the paper removes it, batch normalization regularizing enough)."""
    return BNInception(num_classes, in_chans, **kwargs)


@register(paper="Ioffe and Szegedy 2015, Batch Normalization (Figure 5, blocks 3a-4b, scaled for 28x28 and 32x32 images)",
          cfgs=default_cfgs)
def bn_inception_small(num_classes=1000, in_chans=3, **kwargs):
    """BN-Inception for small images. Options: ``width`` (0.375, scales every channel count), ``dropout`` (0.2)."""
    return SmallBNInception(num_classes, in_chans, **kwargs)
