"""Inception-ResNet v1 and v2: Szegedy et al. 2016, "Inception-v4, Inception-ResNet and the Impact of
Residual Connections on Learning", Figures 7 and 10-19.

Both networks share one set of blocks, parametrized by the widths of the paper's figures (Table 1
for Reduction-A). ``inception_resnet_v2`` follows timm's layout and names (``conv2d_1a`` ...
``mixed_5b``, ``repeat``, ``mixed_6a``, ``repeat_1``, ``mixed_7a``, ``repeat_2``, ``block8``,
``conv2d_7b``, ``classif``), so its checkpoints load key for key; that layout is Google's released
network, whose stem ends in a 35x35 Inception block rather than the paper's Figure 3 stem.
``inception_resnet_v1`` is the paper's network (stem of Figure 14) under the same names; with
``layout="facenet"`` it is facenet-pytorch's (David Sandberg's face-recognition port): the three
block stages named ``repeat_1``-``repeat_3``, a sixth C block ``block8`` without ReLU or scaling,
and a 512-d embedding head (``last_linear``, ``last_bn``) before the classifier ``logits``, so its
VGGFace2 and CASIA-WebFace checkpoints load key for key.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .base import InceptionNet, init_weights
from .cfgs import facenet_tag, plain_cfg, timm_tag
from .inception_v4 import PAPER, ReductionA, avg_pool_3x3, max_pool_3x3_s2
from .layers import Branches, ConvBNAct
from .registry import register


class Mixed5b(Branches):
    """The end of the released v2 stem, 35x35x192 -> 35x35x320: 1x1, 1x1 -> 5x5, 1x1 -> 3x3 -> 3x3,
    avg pool -> 1x1."""

    def __init__(self, in_channels: int = 192):
        super().__init__()
        self.branch0 = ConvBNAct(in_channels, 96, 1)
        self.branch1 = nn.Sequential(ConvBNAct(in_channels, 48, 1), ConvBNAct(48, 64, 5, padding=2))
        self.branch2 = nn.Sequential(
            ConvBNAct(in_channels, 64, 1),
            ConvBNAct(64, 96, 3, padding=1),
            ConvBNAct(96, 96, 3, padding=1),
        )
        self.branch3 = nn.Sequential(avg_pool_3x3(), ConvBNAct(in_channels, 64, 1))


class ResidualInception(nn.Module):
    """``relu(x + scale * conv1x1(concat(branches(x))))``: the Inception-ResNet block.

    The 1x1 convolution is linear (no BN, no activation) and brings the branches back to the
    residual stream's width. Scaling the residual by 0.1-0.3 before the addition (section 3.3)
    keeps the wide residual networks from dying early in training. ``relu=False`` leaves the sum
    as it is, as the released v2 does in its last block.
    """

    def __init__(self, channels: int, scale: float, relu: bool = True, **branches: nn.Module):
        super().__init__()
        for name, branch in branches.items():
            self.add_module(name, branch)
        mixed = sum([m for m in branch.modules() if isinstance(m, nn.Conv2d)][-1].out_channels
                    for branch in branches.values())
        self.conv2d = nn.Conv2d(mixed, channels, 1)
        self.scale = scale
        self.act = nn.ReLU(inplace=True) if relu else nn.Identity()

    def forward(self, x):
        branches = [branch for name, branch in self.named_children() if name.startswith("branch")]
        mixed = torch.cat([branch(x) for branch in branches], dim=1)
        return self.act(x + self.scale * self.conv2d(mixed))


class ResidualBlock35(ResidualInception):
    """Inception-ResNet-A at 35x35 (Figure 10 for v1, 16 for v2): 1x1; 1x1 -> 3x3; 1x1 -> 3x3 -> 3x3.

    ``widths`` = (1x1, (1x1, 3x3), (1x1, 3x3, 3x3)).
    """

    def __init__(self, channels: int, widths, scale: float):
        one, (two_in, two), (three_in, three_mid, three) = widths
        super().__init__(
            channels, scale,
            branch0=ConvBNAct(channels, one, 1),
            branch1=nn.Sequential(ConvBNAct(channels, two_in, 1), ConvBNAct(two_in, two, 3, padding=1)),
            branch2=nn.Sequential(
                ConvBNAct(channels, three_in, 1),
                ConvBNAct(three_in, three_mid, 3, padding=1),
                ConvBNAct(three_mid, three, 3, padding=1),
            ),
        )


class ResidualBlockAsymmetric(ResidualInception):
    """Inception-ResNet-B (n = 7, 17x17; Figures 11, 17) and -C (n = 3, 8x8; Figures 13, 19):
    a 1x1 beside a 1x1 -> 1xn -> nx1. ``widths`` = (1x1, (1x1, 1xn, nx1))."""

    def __init__(self, channels: int, widths, n: int, scale: float, relu: bool = True):
        one, (two_in, two_mid, two) = widths
        super().__init__(
            channels, scale, relu,
            branch0=ConvBNAct(channels, one, 1),
            branch1=nn.Sequential(
                ConvBNAct(channels, two_in, 1),
                ConvBNAct(two_in, two_mid, (1, n), padding=(0, n // 2)),
                ConvBNAct(two_mid, two, (n, 1), padding=(n // 2, 0)),
            ),
        )


class ResidualReductionB(Branches):
    """Reduction-B of Inception-ResNet, 17x17 -> 8x8 (Figure 12 for v1, 18 for v2): three 1x1 -> stride-2
    3x3 branches (the last with one more 3x3 first) beside a stride-2 max pool.

    ``widths`` = (1x1, (3x3 of branch 0), (3x3 of branch 1), (3x3, 3x3 of branch 2)).
    """

    def __init__(self, in_channels: int, widths):
        super().__init__()
        reduce, zero, one, (two_mid, two) = widths
        self.branch0 = nn.Sequential(ConvBNAct(in_channels, reduce, 1), ConvBNAct(reduce, zero, 3, stride=2))
        self.branch1 = nn.Sequential(ConvBNAct(in_channels, reduce, 1), ConvBNAct(reduce, one, 3, stride=2))
        self.branch2 = nn.Sequential(
            ConvBNAct(in_channels, reduce, 1),
            ConvBNAct(reduce, two_mid, 3, padding=1),
            ConvBNAct(two_mid, two, 3, stride=2),
        )
        self.branch3 = max_pool_3x3_s2()
        self.out_channels = in_channels + zero + one + two


@dataclass(frozen=True)
class Variant:
    """Depths and widths of one Inception-ResNet (Figure 15 and the block figures)."""

    repeats: tuple[int, int, int]  # blocks A, B, C
    block_a: tuple
    reduction_a: tuple[int, int, int, int]  # k, l, m, n of Table 1
    block_b: tuple
    reduction_b: tuple
    block_c: tuple


V1 = Variant(repeats=(5, 10, 5), block_a=(32, (32, 32), (32, 32, 32)), reduction_a=(192, 192, 256, 384),
             block_b=(128, (128, 128, 128)), reduction_b=(256, 384, 256, (256, 256)),
             block_c=(192, (192, 192, 192)))
V2 = Variant(repeats=(10, 20, 10), block_a=(32, (32, 32), (32, 48, 64)), reduction_a=(256, 256, 384, 384),
             block_b=(192, (128, 160, 192)), reduction_b=(256, 384, 288, (288, 320)),
             block_c=(192, (192, 224, 256)))
SCALES = (0.17, 0.10, 0.20)  # residual scaling of blocks A, B, C, as in Google's released networks


class InceptionResNet(InceptionNet):
    """Figure 15: stem, Inception-ResNet-A blocks, Reduction-A, -B blocks, Reduction-B, -C blocks,
    average pool, dropout (keep 0.8) and the classifier ``classif``, run as named stages.

    ``version=2`` is the released v2 (timm's layout): its stem ends with ``mixed_5b``, its last C
    block (``block8``) has no ReLU and no scaling, and a 1x1 convolution to 1536 channels
    (``conv2d_7b``) comes before the pool. ``version=1`` is the paper's v1: Figure 14's stem and
    every C block as in Figure 13. ``layout="facenet"`` (v1 only) is facenet-pytorch's v1, whose
    ``forward`` with ``num_classes=0`` returns its L2-normalized 512-d face embedding.
    """

    default_input_size = 299
    head_layers = ("classif",)

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, *, version: int = 2, dropout: float = 0.2,
                 layout: str = "paper"):
        super().__init__(num_classes, in_chans)
        if layout not in ("paper", "facenet") or (layout == "facenet" and version != 1):
            raise ConfigError(f"layout '{layout}' is unknown for inception_resnet_v{version}: choose paper"
                              + (" or facenet" if version == 1 else ""))
        variant = {1: V1, 2: V2}[version]
        self.facenet = layout == "facenet"
        names = ("repeat_1", "repeat_2", "repeat_3") if self.facenet else ("repeat", "repeat_1", "repeat_2")
        stem = {
            "conv2d_1a": ConvBNAct(in_chans, 32, 3, stride=2),  # 149x149x32
            "conv2d_2a": ConvBNAct(32, 32, 3),  # 147x147x32
            "conv2d_2b": ConvBNAct(32, 64, 3, padding=1),  # 147x147x64
            "maxpool_3a": max_pool_3x3_s2(),  # 73x73x64
            "conv2d_3b": ConvBNAct(64, 80, 1),  # 73x73x80
            "conv2d_4a": ConvBNAct(80, 192, 3),  # 71x71x192
        }
        if version == 1:
            stem["conv2d_4b"] = ConvBNAct(192, 256, 3, stride=2)  # 35x35x256
            channels = 256
        else:
            stem |= {"maxpool_5a": max_pool_3x3_s2(), "mixed_5b": Mixed5b(192)}  # 35x35x320
            channels = 320
        self.add_stage("stem", stem)

        repeats_a, repeats_b, repeats_c = variant.repeats
        scale_a, scale_b, scale_c = SCALES
        self.add_stage("inception_resnet_a", {names[0]: nn.Sequential(
            *[ResidualBlock35(channels, variant.block_a, scale_a) for _ in range(repeats_a)])})
        reduction = ReductionA(channels, *variant.reduction_a)  # 17x17
        self.add_stage("reduction_a", {"mixed_6a": reduction})
        channels = reduction.out_channels
        self.add_stage("inception_resnet_b", {names[1]: nn.Sequential(
            *[ResidualBlockAsymmetric(channels, variant.block_b, 7, scale_b) for _ in range(repeats_b)])})
        reduction = ResidualReductionB(channels, variant.reduction_b)  # 8x8
        self.add_stage("reduction_b", {"mixed_7a": reduction})
        channels = reduction.out_channels
        blocks_c = [ResidualBlockAsymmetric(channels, variant.block_c, 3, scale_c)
                    for _ in range(repeats_c - 1 if version == 2 else repeats_c)]
        stage_c = {names[2]: nn.Sequential(*blocks_c)}
        if version == 2 or self.facenet:  # the released networks' ending
            stage_c["block8"] = ResidualBlockAsymmetric(channels, variant.block_c, 3, scale=1.0, relu=False)
        if version == 2:
            stage_c["conv2d_7b"] = ConvBNAct(channels, 1536, 1)
            channels = 1536
        self.add_stage("inception_resnet_c", stage_c)
        self.num_features = self.head_hidden_size = channels
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        if self.facenet:
            self.head_hidden_size = 512
            self.head_layers = ("logits",)
            self.default_input_size = 160
            self.last_linear = nn.Linear(channels, 512, bias=False)
            self.last_bn = nn.BatchNorm1d(512, eps=1e-3)
            self.logits = nn.Linear(512, num_classes)
        else:
            self.classif = nn.Linear(channels, num_classes)
        init_weights(self)

    def head(self, features, pre_logits):
        """For facenet's layout, the pre-logits are the 512-d embedding before its L2 normalization."""
        x = self.dropout(torch.flatten(self.avgpool(features), 1))
        if not self.facenet:
            return x if pre_logits else self.classif(x)
        embedding = self.last_bn(self.last_linear(x))
        if pre_logits:
            return embedding
        return self.logits(embedding) if self.num_classes else F.normalize(embedding, p=2, dim=1)


_ARCH = {"input_size": 299, "pool_size": (8, 8), "first_conv": "conv2d_1a.conv", "classifier": "classif"}
_FACENET = {**_ARCH, "input_size": 160, "pool_size": (3, 3), "classifier": "logits"}
default_cfgs = {
    "inception_resnet_v1": plain_cfg(_ARCH),  # the paper's layout; the tags need facenet's
    "inception_resnet_v1.vggface2": facenet_tag(_FACENET, "20180402-114759-vggface2.pt", 8631, size_mb=111.8),
    "inception_resnet_v1.casia-webface": facenet_tag(_FACENET, "20180408-102900-casia-webface.pt", 10575,
                                                     size_mb=115.7),
    "inception_resnet_v2.tf_in1k": timm_tag(_ARCH, top1=80.434, size_mb=223.6, crop_pct=0.8975),
    "inception_resnet_v2.tf_ens_adv_in1k": timm_tag(_ARCH, top1=79.998, size_mb=223.6, crop_pct=0.8975,
                                                    description="ensemble adversarial training"),
}


@register(paper=PAPER + " (Inception-ResNet-v1)", cfgs=default_cfgs)
def inception_resnet_v1(num_classes=1000, in_chans=3, **kwargs):
    """The paper's Inception-ResNet-v1. Options: ``dropout`` (0.2, the paper's keep probability of 0.8;
    0.6 with facenet's layout), ``layout`` (``"paper"``, or ``"facenet"`` for facenet-pytorch's checkpoints)."""
    if kwargs.get("layout") == "facenet":
        kwargs.setdefault("dropout", 0.6)
    return InceptionResNet(num_classes, in_chans, version=1, **kwargs)


@register(paper=PAPER + " (Inception-ResNet-v2, timm's layout)", cfgs=default_cfgs)
def inception_resnet_v2(num_classes=1000, in_chans=3, **kwargs):
    """Inception-ResNet-v2 as released by Google and ported by timm. Options: ``dropout`` (0.2)."""
    return InceptionResNet(num_classes, in_chans, version=2, **kwargs)
