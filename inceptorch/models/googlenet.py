"""GoogLeNet (Inception v1): Szegedy et al. 2014, "Going Deeper with Convolutions", in three editions.

- ``googlenet``: torchvision's layout and key names, so its checkpoints load as they are. It is the
  paper's network with batch normalization after every convolution, a 3x3 kernel in the branch the
  paper makes 5x5 (a slip of the original port, torchvision issue 906, kept because its weights were
  trained with it) and a 2x2 last max pool.
- ``googlenet_paper``: Table 1 of the paper as printed: true 5x5 branches, no batch normalization,
  local response normalization in the stem, 40% dropout.
- ``googlenet_small``: the same blocks, narrower, on a stem that keeps 28x28 or 32x32 images at
  full resolution, for Fashion-MNIST and CIFAR on a CPU.

All three run as named stages (``model.stages``), as in d2l's b1..b5: ``stem`` (7x7 conv, pool),
``conv`` (1x1 and 3x3 convs, pool), ``inception3`` (3a, 3b, pool), ``inception4`` (4a-4e, pool),
``inception5`` (5a, 5b). Shapes in comments are for 224x224 inputs.
"""

from functools import partial
from typing import ClassVar

import torch
from torch import nn

from ..errors import ConfigError
from .base import InceptionNet, init_weights
from .cfgs import plain_cfg, torchvision_tag
from .layers import Branches, ConvBNAct, ImageNetToUnitRange, scaled_width
from .registry import register

PAPER = "Szegedy et al. 2014, Going Deeper with Convolutions"

# Table 1 of the paper: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj.
INCEPTION_V1_TABLE = {
    "inception3a": (64, 96, 128, 16, 32, 32),
    "inception3b": (128, 128, 192, 32, 96, 64),
    "inception4a": (192, 96, 208, 16, 48, 64),
    "inception4b": (160, 112, 224, 24, 64, 64),
    "inception4c": (128, 128, 256, 24, 64, 64),
    "inception4d": (112, 144, 288, 32, 64, 64),
    "inception4e": (256, 160, 320, 32, 128, 128),
    "inception5a": (256, 160, 320, 32, 128, 128),
    "inception5b": (384, 192, 384, 48, 128, 128),
}


class Inception(Branches):
    """The Inception module of Figure 2(b): four branches on the same input, concatenated.

    ``branch1`` 1x1; ``branch2`` 1x1 reduce -> 3x3; ``branch3`` 1x1 reduce -> 5x5 (``wide_kernel``);
    ``branch4`` 3x3 max pool -> 1x1 pool projection. The 1x1 reductions keep the wide kernels cheap.
    """

    def __init__(self, in_channels: int, ch1x1: int, ch3x3_reduce: int, ch3x3: int, ch5x5_reduce: int,
                 ch5x5: int, pool_proj: int, *, wide_kernel: int = 5, batch_norm: bool = True):
        super().__init__()
        conv = partial(ConvBNAct, batch_norm=batch_norm)
        self.branch1 = conv(in_channels, ch1x1, 1)
        self.branch2 = nn.Sequential(conv(in_channels, ch3x3_reduce, 1),
                                     conv(ch3x3_reduce, ch3x3, 3, padding=1))
        self.branch3 = nn.Sequential(conv(in_channels, ch5x5_reduce, 1),
                                     conv(ch5x5_reduce, ch5x5, wide_kernel, padding=wide_kernel // 2))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), conv(in_channels, pool_proj, 1))
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj


def inception_blocks(names, in_channels: int, width: float = 1.0, **options) -> tuple[dict, int]:
    """Table 1's blocks ``names`` in sequence from ``in_channels``, every width scaled by ``width``.

    Returns the blocks by name and the number of channels the last one puts out.
    """
    blocks = {}
    for name in names:
        widths = [scaled_width(c, width) for c in INCEPTION_V1_TABLE[name]]
        blocks[name] = Inception(in_channels, *widths, **options)
        in_channels = blocks[name].out_channels
    return blocks, in_channels


class AuxHead(nn.Module):
    """An auxiliary classifier (section 5): pool to 4x4, 1x1 conv to 128, FC 1024, dropout, FC.

    Its loss, weighted by the model's ``aux_weight``, feeds gradient into the middle of the network.
    """

    def __init__(self, in_channels: int, num_classes: int, pool: nn.Module, dropout: float, batch_norm: bool):
        super().__init__()
        self.pool = pool
        self.conv = ConvBNAct(in_channels, 128, 1, batch_norm=batch_norm)
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.act = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(1024, num_classes)

    def forward(self, x):
        x = torch.flatten(self.conv(self.pool(x)), 1)
        return self.fc2(self.dropout(self.act(self.fc1(x))))


def _max_pool(kernel_size: int = 3) -> nn.MaxPool2d:
    """The stride-2 max pool between stages; ceil mode as in the original Caffe network: 112 -> 56."""
    return nn.MaxPool2d(kernel_size, stride=2, ceil_mode=True)


def _lrn() -> nn.LocalResponseNorm:
    """Local response normalization with the constants of the Caffe reference GoogLeNet."""
    return nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75)


class GoogLeNet(InceptionNet):
    """GoogLeNet in torchvision's layout (``paper=False``) or as Table 1 of the paper (``paper=True``).

    ``forward`` returns the logits and never runs the aux heads; ``forward_with_aux`` runs them (in
    train and eval mode alike) when the model was built with ``aux_logits=True``.
    """

    default_input_size = 224
    head_layers = ("fc", "aux1.fc2", "aux2.fc2")
    aux_heads = ("aux1", "aux2")
    aux_taps: ClassVar[dict[str, str]] = {"inception4a": "aux1", "inception4d": "aux2"}

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, aux_logits: bool = False, *,
                 paper: bool = False, transform_input: bool = False, dropout: float = 0.2,
                 dropout_aux: float = 0.7):
        super().__init__(num_classes, in_chans)
        if transform_input and (paper or in_chans != 3):
            raise ConfigError("transform_input rescales RGB input for torchvision's googlenet weights: "
                              "use it only with googlenet and in_chans=3")
        self.transform_input = transform_input
        conv = partial(ConvBNAct, batch_norm=not paper)
        stem = {"input_transform": ImageNetToUnitRange()} if transform_input else {}
        stem |= {"conv1": conv(in_chans, 64, 7, stride=2, padding=3), "maxpool1": _max_pool()}  # 56x56x64
        self.add_stage("stem", stem | ({"lrn1": _lrn()} if paper else {}))
        self.add_stage("conv", {"conv2": conv(64, 64, 1), "conv3": conv(64, 192, 3, padding=1),
                                **({"lrn2": _lrn()} if paper else {}), "maxpool2": _max_pool()})  # 28x28x192

        options = {"wide_kernel": 5 if paper else 3, "batch_norm": not paper}
        blocks, channels = inception_blocks(("inception3a", "inception3b"), 192, **options)
        self.add_stage("inception3", {**blocks, "maxpool3": _max_pool()})  # 14x14x480
        blocks, channels = inception_blocks(
            ("inception4a", "inception4b", "inception4c", "inception4d", "inception4e"), channels, **options)
        aux_channels = blocks["inception4a"].out_channels, blocks["inception4d"].out_channels
        self.add_stage("inception4", {**blocks, "maxpool4": _max_pool(3 if paper else 2)})  # 7x7x832
        blocks, channels = inception_blocks(("inception5a", "inception5b"), channels, **options)
        self.add_stage("inception5", blocks)  # 7x7x1024

        if aux_logits:
            head = partial(AuxHead, num_classes=num_classes, dropout=dropout_aux, batch_norm=not paper)
            self.aux1 = head(aux_channels[0], pool=self._aux_pool(paper))
            self.aux2 = head(aux_channels[1], pool=self._aux_pool(paper))
        else:
            self.aux1 = self.aux2 = None
        self.add_head(channels, dropout)
        init_weights(self)

    @staticmethod
    def _aux_pool(paper: bool) -> nn.Module:
        """To the aux heads' 4x4 grid. The paper's 5x5/3 average pool gives it on 14x14 maps; the
        adaptive pool after it changes nothing there and keeps the FC's input size on other inputs."""
        if paper:
            return nn.Sequential(nn.AvgPool2d(5, stride=3), nn.AdaptiveAvgPool2d(4))
        return nn.AdaptiveAvgPool2d(4)


SMALL_LAST_BLOCKS = ("4a", "4b", "4c", "4d", "4e")


class SmallGoogLeNet(InceptionNet):
    """GoogLeNet for 28x28 and 32x32 images: Table 1's blocks 3a-4b, ``width`` times as wide.

    A 3x3 convolution sees the full resolution and the net pools twice, 28 -> 14 (before the
    1x1/3x3 convs and blocks 3a, 3b) -> 7 (blocks 4a, 4b), with batch normalization throughout and
    no aux heads. ``last_block`` runs Table 1's blocks on to 4c, 4d or 4e: depth at 7x7, where each
    block costs a fraction of the full-resolution layers.

    The default width 0.375 costs about 22M multiply-adds per 28x28 image (200k parameters); on two
    CPU cores it trains at about 500 images/s in channels-last memory format, 100-120 s per
    Fashion-MNIST epoch (about half that speed in the default NCHW format).
    """

    default_input_size = 28

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, *, width: float = 0.375,
                 dropout: float = 0.2, last_block: str = "4b"):
        super().__init__(num_classes, in_chans)
        if last_block not in SMALL_LAST_BLOCKS:
            raise ConfigError(f"last_block must be one of {', '.join(SMALL_LAST_BLOCKS)}, got {last_block!r}")
        conv_width = self.add_small_image_stem(width, ("conv2", "conv3"))  # 14x14 from 28x28
        blocks, channels = inception_blocks(("inception3a", "inception3b"), conv_width, width, wide_kernel=3)
        self.add_stage("inception3", {**blocks, "maxpool3": nn.MaxPool2d(3, stride=2, padding=1)})  # 7x7
        names = [f"inception{block}" for block in SMALL_LAST_BLOCKS[:SMALL_LAST_BLOCKS.index(last_block) + 1]]
        blocks, channels = inception_blocks(names, channels, width, wide_kernel=3)
        self.add_stage("inception4", blocks)
        self.add_head(channels, dropout)
        init_weights(self)


_ARCH = {"input_size": 224, "pool_size": (7, 7), "first_conv": "conv1.conv", "classifier": "fc",
         "aux_weight": 0.3}  # aux_weight: the paper's weight of each aux loss, the trainer's default
_SMALL = {"input_size": 28, "pool_size": (7, 7), "first_conv": "conv1.conv", "classifier": "fc"}
default_cfgs = {
    "googlenet.tv_in1k": torchvision_tag(
        _ARCH, "googlenet-1378be20.pth", top1=69.778, size_mb=49.7, untrained_heads=("aux1", "aux2"),
        description="aux heads never trained (torchvision's docs): started fresh"),
    "googlenet_paper": plain_cfg(_ARCH),
    "googlenet_small": plain_cfg(_SMALL),
}


@register(has_aux=True, paper=PAPER + " (torchvision's layout)", cfgs=default_cfgs)
def googlenet(num_classes=1000, in_chans=3, aux_logits=False, **kwargs):
    """torchvision's GoogLeNet. Options: ``transform_input`` (False), ``dropout`` (0.2), ``dropout_aux`` (0.7).

    torchvision turns ``transform_input`` on when it loads its ImageNet weights, which expect pixels
    scaled to [-1, 1]: with those weights, either pass ``transform_input=True`` and normalize with
    ImageNet's mean and std, or leave it off and normalize with mean 0.5 and std 0.5.
    """
    return GoogLeNet(num_classes, in_chans, aux_logits, **kwargs)


@register(has_aux=True, paper=PAPER + " (Table 1)", cfgs=default_cfgs)
def googlenet_paper(num_classes=1000, in_chans=3, aux_logits=False, **kwargs):
    """The paper's GoogLeNet. Options: ``dropout`` (0.4), ``dropout_aux`` (0.7)."""
    return GoogLeNet(num_classes, in_chans, aux_logits, paper=True, **{"dropout": 0.4, **kwargs})


@register(paper=PAPER + " (blocks 3a-4b, scaled for 28x28 and 32x32 images)", cfgs=default_cfgs)
def googlenet_small(num_classes=1000, in_chans=3, **kwargs):
    """GoogLeNet for small images. Options: ``width`` (0.375, scales every channel count), ``dropout``
    (0.2), ``last_block`` ("4b"; up to "4e" adds Table 1's blocks 4c-4e at 7x7)."""
    return SmallGoogLeNet(num_classes, in_chans, **kwargs)
