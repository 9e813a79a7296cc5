"""The compact Inception net for MNIST from the well-known PyTorch tutorial (Sung Kim, "PyTorch Zero
to All", lecture 11): two 5x5 convolutions, each followed by a small Inception block.

28x28 grey digits: conv 5x5 (10) -> 24x24 -> max pool -> 12x12 -> InceptionA (88) -> conv 5x5 (20)
-> 8x8 -> max pool -> 4x4 -> InceptionA (88) -> 88 * 4 * 4 = 1408 features -> FC.
"""

from collections import OrderedDict

from torch import nn

from .cfgs import plain_cfg
from .classic import SequentialNet
from .layers import Branches
from .registry import register


class InceptionA(Branches):
    """Four branches, 16 + 24 + 24 + 24 = 88 channels, all at the input's resolution.

    As in the tutorial, the branches are plain convolutions without activations; the net's ReLUs
    follow the stem convolutions and their pools.
    """

    out_channels = 88

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch1x1 = nn.Conv2d(in_channels, 16, 1)
        self.branch5x5 = nn.Sequential(nn.Conv2d(in_channels, 16, 1), nn.Conv2d(16, 24, 5, padding=2))
        self.branch3x3dbl = nn.Sequential(nn.Conv2d(in_channels, 16, 1), nn.Conv2d(16, 24, 3, padding=1),
                                          nn.Conv2d(24, 24, 3, padding=1))
        self.branch_pool = nn.Sequential(nn.AvgPool2d(3, stride=1, padding=1), nn.Conv2d(in_channels, 24, 1))


class MnistInception(SequentialNet):
    """The tutorial's net; an adaptive pool to 4x4 before the FC lets inputs larger than 28x28 through."""

    default_input_size = 28

    def __init__(self, num_classes: int = 10, in_chans: int = 1):
        features = nn.Sequential(OrderedDict(
            conv1=nn.Conv2d(in_chans, 10, 5), pool1=nn.MaxPool2d(2), act1=nn.ReLU(inplace=True),
            inception1=InceptionA(10),
            conv2=nn.Conv2d(InceptionA.out_channels, 20, 5), pool2=nn.MaxPool2d(2), act2=nn.ReLU(inplace=True),
            inception2=InceptionA(20),
        ))
        classifier = nn.Sequential(OrderedDict(
            pool=nn.AdaptiveAvgPool2d(4), flatten=nn.Flatten(),
            fc=nn.Linear(InceptionA.out_channels * 4 * 4, num_classes),
        ))
        super().__init__(features, classifier, num_classes, in_chans, num_features=InceptionA.out_channels)


default_cfgs = {
    "mnist_inception": plain_cfg({"input_size": 28, "pool_size": (4, 4), "first_conv": "features.conv1",
                                  "classifier": "classifier.fc"}),
}


@register(paper="Szegedy et al. 2015 (Inception v3's InceptionA), scaled down for MNIST in PyTorch Zero to All",
          cfgs=default_cfgs)
def mnist_inception(num_classes=1000, in_chans=3, **kwargs):
    return MnistInception(num_classes=num_classes, in_chans=in_chans, **kwargs)
