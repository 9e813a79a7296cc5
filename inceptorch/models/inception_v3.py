"""Inception v3: Szegedy et al. 2015, "Rethinking the Inception Architecture for Computer Vision".

The layout and every name follow torchvision's ``inception_v3`` (timm's uses the same names), so
their checkpoints load key for key. Each block keeps its layers as flat children named
``branch<kind>_<step>``, as those checkpoints do, and its ``forward`` reads like the paper's figure.
Shapes in the comments are for the paper's 299x299 input.
"""

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..images import IMAGENET_MEAN, IMAGENET_STD, INCEPTION_MEAN, INCEPTION_STD
from .base import InceptionNet, init_weights
from .cfgs import plain_cfg, timm_tag, torchvision_tag
from .layers import ConvBNAct, ImageNetToUnitRange
from .registry import register

PAPER = "Szegedy et al. 2015, Rethinking the Inception Architecture for Computer Vision"


def _avg_pool_3x3(x):
    """The pooling branch's 3x3 average, zero padding counted as torchvision counts it."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1)


def _tf_avg_pool_3x3(x):
    """TensorFlow's 3x3 average, which divides by the pixels inside the image only (the FID graph)."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def _max_pool_3x3(x):
    """The 3x3 max pool the last block of TF's 2015 graph uses where the paper has an average."""
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


# The pooling branch of the 35x35, 17x17 and 8x8 blocks: torchvision's, or TensorFlow's 2015 graph's.
POOLS = {"torchvision": _avg_pool_3x3, "tf": _tf_avg_pool_3x3, "tf_max": _max_pool_3x3}


class FactorizedBlock(nn.Module):
    """35x35 block (Mixed_5b-d), Figure 5: a 5x5 convolution factorized into two 3x3s.

    The released network keeps a true 5x5 branch beside the factorized one (``branch5x5``), and
    torchvision follows it; only the pooling branch's width changes from block to block.
    """

    def __init__(self, in_channels: int, pool_channels: int, pool: str = "torchvision"):
        super().__init__()
        self.pool = pool
        self.branch1x1 = ConvBNAct(in_channels, 64, 1)
        self.branch5x5_1 = ConvBNAct(in_channels, 48, 1)
        self.branch5x5_2 = ConvBNAct(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBNAct(in_channels, 64, 1)
        self.branch3x3dbl_2 = ConvBNAct(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBNAct(96, 96, 3, padding=1)
        self.branch_pool = ConvBNAct(in_channels, pool_channels, 1)

    def forward(self, x):
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(POOLS[self.pool](x)),
        ], dim=1)


class AsymmetricBlock(nn.Module):
    """17x17 block (Mixed_6b-e), Figure 6 with n = 7: each 7x7 is a 1x7 followed by a 7x1.

    ``width`` is the inner width of the two factorized branches (128, 160, 160, 192 in turn).
    """

    def __init__(self, in_channels: int, width: int, pool: str = "torchvision"):
        super().__init__()
        self.pool = pool
        self.branch1x1 = ConvBNAct(in_channels, 192, 1)
        self.branch7x7_1 = ConvBNAct(in_channels, width, 1)
        self.branch7x7_2 = ConvBNAct(width, width, (1, 7), padding=(0, 3))
        self.branch7x7_3 = ConvBNAct(width, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = ConvBNAct(in_channels, width, 1)
        self.branch7x7dbl_2 = ConvBNAct(width, width, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = ConvBNAct(width, width, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = ConvBNAct(width, width, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = ConvBNAct(width, 192, (1, 7), padding=(0, 3))
        self.branch_pool = ConvBNAct(in_channels, 192, 1)

    def forward(self, x):
        double = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            double = layer(double)
        return torch.cat([
            self.branch1x1(x),
            self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
            double,
            self.branch_pool(POOLS[self.pool](x)),
        ], dim=1)


class ExpandedBlock(nn.Module):
    """8x8 block (Mixed_7b-c), Figure 7: the 3x3s end in a 1x3 and a 3x1 side by side, not in
    sequence, widening the filter bank where the grid is coarsest."""

    def __init__(self, in_channels: int, pool: str = "torchvision"):
        super().__init__()
        self.pool = pool
        self.branch1x1 = ConvBNAct(in_channels, 320, 1)
        self.branch3x3_1 = ConvBNAct(in_channels, 384, 1)
        self.branch3x3_2a = ConvBNAct(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBNAct(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBNAct(in_channels, 448, 1)
        self.branch3x3dbl_2 = ConvBNAct(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBNAct(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBNAct(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBNAct(in_channels, 192, 1)

    def forward(self, x):
        single = self.branch3x3_1(x)
        double = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(single), self.branch3x3_2b(single),
            self.branch3x3dbl_3a(double), self.branch3x3dbl_3b(double),
            self.branch_pool(POOLS[self.pool](x)),
        ], dim=1)


class GridReduction35(nn.Module):
    """35x35 -> 17x17 (Mixed_6a), Figure 10: stride-2 convolutions beside a stride-2 pool, so the
    grid shrinks while the filter bank grows, without a representational bottleneck."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3 = ConvBNAct(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBNAct(in_channels, 64, 1)
        self.branch3x3dbl_2 = ConvBNAct(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBNAct(96, 96, 3, stride=2)

    def forward(self, x):
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, kernel_size=3, stride=2),
        ], dim=1)


class GridReduction17(nn.Module):
    """17x17 -> 8x8 (Mixed_7a), Figure 10 again, one branch with a factorized 7x7 before its stride."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3_1 = ConvBNAct(in_channels, 192, 1)
        self.branch3x3_2 = ConvBNAct(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBNAct(in_channels, 192, 1)
        self.branch7x7x3_2 = ConvBNAct(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBNAct(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBNAct(192, 192, 3, stride=2)

    def forward(self, x):
        factorized = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            factorized = layer(factorized)
        return torch.cat([
            self.branch3x3_2(self.branch3x3_1(x)),
            factorized,
            F.max_pool2d(x, kernel_size=3, stride=2),
        ], dim=1)


class AuxHead(nn.Module):
    """The auxiliary classifier on the 17x17 grid (Figure 8), a regularizer in the paper's reading.

    Average pool 5x5/3 to 5x5, 1x1 conv to 128, 5x5 conv to 768 (so it needs the full 17x17
    grid, that is 299x299 inputs), then a linear layer.
    """

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.conv0 = ConvBNAct(in_channels, 128, 1)
        self.conv1 = ConvBNAct(128, 768, 5)
        self.fc = nn.Linear(768, num_classes)

    def forward(self, x):
        x = self.conv1(self.conv0(F.avg_pool2d(x, kernel_size=5, stride=3)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class InceptionV3(InceptionNet):
    """Inception v3 (Table 1 of the paper), in torchvision's layout, run as named stages: ``stem``
    (to 35x35x192), ``mixed5`` (Figure 5 x 3), ``mixed6`` (reduction, Figure 6 x 4, aux head on the
    last), ``mixed7`` (reduction, Figure 7 x 2, to 8x8x2048).

    ``transform_input=True`` takes inputs normalized with ImageNet's mean and std and rescales them
    to the [-1, 1] range Google's weights were trained on (torchvision's convention for its
    pretrained checkpoint); without it, feed Google's weights [-1, 1] pixels (mean and std 0.5).
    ``forward`` never computes the aux head; ``forward_with_aux`` does, in either mode.
    ``tf_pooling=True`` pools as TensorFlow's 2015 graph does (``inception_v3_fid``).
    """

    default_input_size = 299
    head_layers = ("fc", "AuxLogits.fc")
    aux_heads = ("AuxLogits",)
    aux_taps: ClassVar[dict[str, str]] = {"Mixed_6e": "AuxLogits"}

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, aux_logits: bool = False, *,
                 transform_input: bool = False, dropout: float = 0.5, tf_pooling: bool = False):
        super().__init__(num_classes, in_chans)
        if transform_input and in_chans != 3:
            raise ConfigError(f"transform_input converts RGB ImageNet normalization, but in_chans={in_chans}:"
                              " leave transform_input off for non-RGB input")
        self.transform_input = transform_input
        average, last = ("tf", "tf_max") if tf_pooling else ("torchvision", "torchvision")
        stem = {"input_transform": ImageNetToUnitRange()} if transform_input else {}
        self.add_stage("stem", stem | {
            "Conv2d_1a_3x3": ConvBNAct(in_chans, 32, 3, stride=2),  # 149x149x32
            "Conv2d_2a_3x3": ConvBNAct(32, 32, 3),  # 147x147x32
            "Conv2d_2b_3x3": ConvBNAct(32, 64, 3, padding=1),  # 147x147x64
            "maxpool1": nn.MaxPool2d(3, stride=2),  # 73x73x64
            "Conv2d_3b_1x1": ConvBNAct(64, 80, 1),  # 73x73x80
            "Conv2d_4a_3x3": ConvBNAct(80, 192, 3),  # 71x71x192
            "maxpool2": nn.MaxPool2d(3, stride=2),  # 35x35x192
        })
        self.add_stage("mixed5", {
            "Mixed_5b": FactorizedBlock(192, pool_channels=32, pool=average),  # 35x35x256
            "Mixed_5c": FactorizedBlock(256, pool_channels=64, pool=average),  # 35x35x288
            "Mixed_5d": FactorizedBlock(288, pool_channels=64, pool=average),  # 35x35x288
        })
        self.add_stage("mixed6", {
            "Mixed_6a": GridReduction35(288),  # 17x17x768
            "Mixed_6b": AsymmetricBlock(768, width=128, pool=average),
            "Mixed_6c": AsymmetricBlock(768, width=160, pool=average),
            "Mixed_6d": AsymmetricBlock(768, width=160, pool=average),
            "Mixed_6e": AsymmetricBlock(768, width=192, pool=average),
        })
        self.AuxLogits = AuxHead(768, num_classes) if aux_logits else None
        self.add_stage("mixed7", {
            "Mixed_7a": GridReduction17(768),  # 8x8x1280
            "Mixed_7b": ExpandedBlock(1280, pool=average),  # 8x8x2048
            "Mixed_7c": ExpandedBlock(2048, pool=last),
        })
        self.add_head(2048, dropout)
        init_weights(self)


_ARCH = {"input_size": 299, "pool_size": (8, 8), "first_conv": "Conv2d_1a_3x3.conv", "classifier": "fc",
         "aux_weight": 0.4}  # aux_weight: the trainer's default weight of the aux loss
default_cfgs = {
    "inception_v3.tv_in1k": torchvision_tag(
        _ARCH, "inception_v3_google-0cc3c7bd.pth", top1=77.294, size_mb=103.9, crop_pct=299 / 342,
        description="torchvision's file and preprocessing: bilinear resize to 342, crop 299, ImageNet "
                    "statistics that the model turns into [-1, 1] pixels (transform_input); timm's port of it "
                    "(inception_v3.tv_in1k there) is fed bicubic 341 -> 299 at mean and std 0.5"),
    "inception_v3.tf_in1k": timm_tag(_ARCH, top1=77.866, size_mb=95.5),
    "inception_v3.gluon_in1k": timm_tag(_ARCH, top1=78.806, size_mb=95.5, mean=IMAGENET_MEAN, std=IMAGENET_STD),
    "inception_v3.tf_adv_in1k": timm_tag(_ARCH, top1=77.598, size_mb=95.5, description="adversarially trained"),
    # pytorch-fid's port of TF's 2015-12-05 graph; torch-fidelity caches the same file (same sha256) by another name
    "inception_v3_fid.tf_in1k": plain_cfg(
        {**_ARCH, "aux_weight": None}, source="pytorch-fid", license="Apache-2.0", num_classes=1008, crop_pct=1.0,
        url="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
        hash_prefix="6726825d", other_files=("weights-inception-2015-12-05-6726825d.pth",), size_mb=95.6,
        mean=INCEPTION_MEAN, std=INCEPTION_STD,
        description="the Inception of FID, KID and IS (see: inceptorch fid): 299x299 pixels in [-1, 1], 1008 classes"),
}


@register(has_aux=True, paper=PAPER, cfgs=default_cfgs)
def inception_v3(num_classes=1000, in_chans=3, aux_logits=False, **kwargs):
    """Options: ``transform_input`` (torchvision's convention), ``dropout`` (0.5)."""
    return InceptionV3(num_classes=num_classes, in_chans=in_chans, aux_logits=aux_logits, **kwargs)


# Where pytorch-fid's four feature depths are read (each map averaged over its grid): the two stem
# pools, the 17x17 grid before the aux head, and the last block (the pooled features).
FID_FEATURE_LAYERS = {64: "maxpool1", 192: "maxpool2", 768: "Mixed_6e", 2048: "Mixed_7c"}


@register(paper=PAPER, cfgs=default_cfgs)
def inception_v3_fid(num_classes=1008, in_chans=3, **kwargs):
    """The Inception v3 of the Frechet Inception Distance: TensorFlow's 2015-12-05 graph as pytorch-fid
    ports it. 1008 classes, no aux head, and TF's pooling: the averages of the 35x35, 17x17 and first
    8x8 blocks skip the zero padding, and the last block max-pools (TF's quirk, kept for equal numbers).
    Its weights: ``--pretrained`` (pytorch-fid's file); its features: ``FID_FEATURE_LAYERS``.
    """
    return InceptionV3(num_classes=num_classes, in_chans=in_chans, tf_pooling=True, **kwargs)
