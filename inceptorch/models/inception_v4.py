"""Inception-v4: Szegedy et al. 2016, "Inception-v4, Inception-ResNet and the Impact of Residual
Connections on Learning", Figures 3-9.

The layout and every name follow timm's ``inception_v4`` (``features.0`` ... ``features.21``,
``last_linear``), so its checkpoints load key for key. The blocks are ``Branches``: children
``branch0``, ``branch1``, ... run on the same input and are concatenated. "V" in the paper's
figures marks an unpadded ("valid") convolution; the others keep the grid size. Shapes in the
comments are for the paper's 299x299 input.
"""

import torch
from torch import nn

from .base import ImageClassifier, init_weights
from .cfgs import timm_tag
from .layers import Branches, ConvBNAct
from .registry import register

PAPER = ("Szegedy et al. 2016, Inception-v4, Inception-ResNet and the Impact of Residual Connections on "
         "Learning")


def avg_pool_3x3() -> nn.AvgPool2d:
    """The pooling branch's 3x3 average; as in TensorFlow, zero padding is not counted."""
    return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)


def max_pool_3x3_s2() -> nn.MaxPool2d:
    return nn.MaxPool2d(3, stride=2)


class PoolAndConv(Branches):
    """Figure 3's stride-2 filter concatenations: a 3x3 max pool beside a stride-2 3x3 conv.

    ``pool_first`` orders the two as the stem does: pool first at 147x147, conv first at 71x71.
    """

    def __init__(self, in_channels: int, out_channels: int, *, pool_first: bool):
        super().__init__()
        if pool_first:
            self.maxpool = max_pool_3x3_s2()
        self.conv = ConvBNAct(in_channels, out_channels, 3, stride=2)
        if not pool_first:
            self.maxpool = max_pool_3x3_s2()


class StemFactorized(Branches):
    """Figure 3's middle concatenation at 73x73: a 1x1 -> 3x3 branch beside one with a factorized
    7x7 (as 1x7 then 7x1) before its 3x3; both end unpadded, at 71x71x96."""

    def __init__(self, in_channels: int = 160):
        super().__init__()
        self.branch0 = nn.Sequential(ConvBNAct(in_channels, 64, 1), ConvBNAct(64, 96, 3))
        self.branch1 = nn.Sequential(
            ConvBNAct(in_channels, 64, 1),
            ConvBNAct(64, 64, (1, 7), padding=(0, 3)),
            ConvBNAct(64, 64, (7, 1), padding=(3, 0)),
            ConvBNAct(64, 96, 3),
        )


class InceptionA(Branches):
    """Figure 4, the 35x35 block: 1x1, 1x1 -> 3x3, 1x1 -> 3x3 -> 3x3, avg pool -> 1x1; 384 channels."""

    def __init__(self, in_channels: int = 384):
        super().__init__()
        self.branch0 = ConvBNAct(in_channels, 96, 1)
        self.branch1 = nn.Sequential(ConvBNAct(in_channels, 64, 1), ConvBNAct(64, 96, 3, padding=1))
        self.branch2 = nn.Sequential(
            ConvBNAct(in_channels, 64, 1),
            ConvBNAct(64, 96, 3, padding=1),
            ConvBNAct(96, 96, 3, padding=1),
        )
        self.branch3 = nn.Sequential(avg_pool_3x3(), ConvBNAct(in_channels, 96, 1))


class ReductionA(Branches):
    """Figure 7, 35x35 -> 17x17: a stride-2 3x3 (n filters), a 1x1 (k) -> 3x3 (l) -> stride-2 3x3 (m),
    and a stride-2 max pool. Table 1 gives k, l, m, n for each network; Inception-ResNet uses it too."""

    def __init__(self, in_channels: int, k: int, l: int, m: int, n: int):
        super().__init__()
        self.branch0 = ConvBNAct(in_channels, n, 3, stride=2)
        self.branch1 = nn.Sequential(
            ConvBNAct(in_channels, k, 1),
            ConvBNAct(k, l, 3, padding=1),
            ConvBNAct(l, m, 3, stride=2),
        )
        self.branch2 = max_pool_3x3_s2()
        self.out_channels = in_channels + m + n


class InceptionB(Branches):
    """Figure 5, the 17x17 block: 7x7 convolutions factorized into 1x7 and 7x1; 1024 channels."""

    def __init__(self, in_channels: int = 1024):
        super().__init__()
        self.branch0 = ConvBNAct(in_channels, 384, 1)
        self.branch1 = nn.Sequential(
            ConvBNAct(in_channels, 192, 1),
            ConvBNAct(192, 224, (1, 7), padding=(0, 3)),
            ConvBNAct(224, 256, (7, 1), padding=(3, 0)),
        )
        self.branch2 = nn.Sequential(
            ConvBNAct(in_channels, 192, 1),
            ConvBNAct(192, 192, (7, 1), padding=(3, 0)),
            ConvBNAct(192, 224, (1, 7), padding=(0, 3)),
            ConvBNAct(224, 224, (7, 1), padding=(3, 0)),
            ConvBNAct(224, 256, (1, 7), padding=(0, 3)),
        )
        self.branch3 = nn.Sequential(avg_pool_3x3(), ConvBNAct(in_channels, 128, 1))


class ReductionB(Branches):
    """Figure 8, 17x17 -> 8x8: 1x1 -> stride-2 3x3, 1x1 -> 1x7 -> 7x1 -> stride-2 3x3, and a max pool."""

    def __init__(self, in_channels: int = 1024):
        super().__init__()
        self.branch0 = nn.Sequential(ConvBNAct(in_channels, 192, 1), ConvBNAct(192, 192, 3, stride=2))
        self.branch1 = nn.Sequential(
            ConvBNAct(in_channels, 256, 1),
            ConvBNAct(256, 256, (1, 7), padding=(0, 3)),
            ConvBNAct(256, 320, (7, 1), padding=(3, 0)),
            ConvBNAct(320, 320, 3, stride=2),
        )
        self.branch2 = max_pool_3x3_s2()


class InceptionC(nn.Module):
    """Figure 6, the 8x8 block: two branches end in a 1x3 and a 3x1 side by side; 1536 channels.

    Those split ends are flat children (``branch1_1a``, ``branch1_1b``, ...) as in timm's layout.
    """

    def __init__(self, in_channels: int = 1536):
        super().__init__()
        self.branch0 = ConvBNAct(in_channels, 256, 1)
        self.branch1_0 = ConvBNAct(in_channels, 384, 1)
        self.branch1_1a = ConvBNAct(384, 256, (1, 3), padding=(0, 1))
        self.branch1_1b = ConvBNAct(384, 256, (3, 1), padding=(1, 0))
        self.branch2_0 = ConvBNAct(in_channels, 384, 1)
        self.branch2_1 = ConvBNAct(384, 448, (3, 1), padding=(1, 0))
        self.branch2_2 = ConvBNAct(448, 512, (1, 3), padding=(0, 1))
        self.branch2_3a = ConvBNAct(512, 256, (1, 3), padding=(0, 1))
        self.branch2_3b = ConvBNAct(512, 256, (3, 1), padding=(1, 0))
        self.branch3 = nn.Sequential(avg_pool_3x3(), ConvBNAct(in_channels, 256, 1))

    def forward(self, x):
        one = self.branch1_0(x)
        two = self.branch2_2(self.branch2_1(self.branch2_0(x)))
        return torch.cat([
            self.branch0(x),
            self.branch1_1a(one), self.branch1_1b(one),
            self.branch2_3a(two), self.branch2_3b(two),
            self.branch3(x),
        ], dim=1)


class InceptionV4(ImageClassifier):
    """Figure 9: the stem of Figure 3, then 4 x Inception-A, Reduction-A, 7 x Inception-B,
    Reduction-B, 3 x Inception-C, average pool, dropout (keep 0.8) and the classifier.

    timm's checkpoints (converted from Google's) expect pixels scaled to [-1, 1] (its ``pretrained_cfg``).
    """

    default_input_size = 299
    head_layers = ("last_linear",)
    pool_layer = "global_pool"
    # timm's levels: its stride-2 stem concatenation at 73x73 (160 channels), not the 71x71 one after it
    feature_taps = ("features.2", "features.3", "features.9", "features.17", "features.21")

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, *, dropout: float = 0.2):
        super().__init__(num_classes, in_chans)
        self.features = nn.Sequential(
            ConvBNAct(in_chans, 32, 3, stride=2),  # 149x149x32
            ConvBNAct(32, 32, 3),  # 147x147x32
            ConvBNAct(32, 64, 3, padding=1),  # 147x147x64
            PoolAndConv(64, 96, pool_first=True),  # 73x73x160
            StemFactorized(160),  # 71x71x192
            PoolAndConv(192, 192, pool_first=False),  # 35x35x384
            *[InceptionA(384) for _ in range(4)],
            ReductionA(384, k=192, l=224, m=256, n=384),  # 17x17x1024
            *[InceptionB(1024) for _ in range(7)],
            ReductionB(1024),  # 8x8x1536
            *[InceptionC(1536) for _ in range(3)],
        )
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.head_drop = nn.Dropout(dropout)
        self.last_linear = nn.Linear(1536, num_classes)
        self.num_features = self.head_hidden_size = 1536
        init_weights(self)

    def head(self, features, pre_logits):
        x = self.head_drop(torch.flatten(self.global_pool(features), 1))
        return x if pre_logits else self.last_linear(x)


default_cfgs = {
    "inception_v4.tf_in1k": timm_tag({"input_size": 299, "pool_size": (8, 8), "first_conv": "features.0.conv",
                                      "classifier": "last_linear"}, top1=80.144, size_mb=171.0),
}


@register(paper=PAPER + " (timm's layout)", cfgs=default_cfgs)
def inception_v4(num_classes=1000, in_chans=3, **kwargs):
    """Inception-v4. Options: ``dropout`` (0.2, the paper's keep probability of 0.8)."""
    return InceptionV4(num_classes, in_chans, **kwargs)
