"""The classic CNNs GoogLeNet grew out of: LeNet-5, AlexNet, VGG-11 and Network in Network.

Layouts follow the d2l book (Dive into Deep Learning, chapters 7 and 8), which trains them on 28x28
grey images resized to 224x224 where the architecture needs it. Each net is a ``features`` stack
and a ``classifier`` whose last layer is named ``fc``. Where d2l flattens a map of fixed size into
a linear layer, an adaptive average pool to that size comes first, as in torchvision's AlexNet and
VGG: at the book's input size it changes nothing, and larger images still fit.
"""

from collections import OrderedDict

from torch import nn

from .base import ImageClassifier
from .cfgs import plain_cfg
from .layers import ConvBNAct
from .registry import register


class SequentialNet(ImageClassifier):
    """A ``features`` stack, then a ``classifier`` that pools, flattens and classifies: no aux heads.

    The classifier pools to its own size, so ``global_pool`` is "avg" (that pool) or "" (none, no
    classifier); its pre-logits are what the last layer reads (the hidden layers' output, or for
    NiN the pooled features).
    """

    head_layers = ("classifier.fc",)
    pool_layer = None
    pool_types = ("avg", "")

    def __init__(self, features: nn.Sequential, classifier: nn.Sequential, num_classes: int, in_chans: int,
                 num_features: int):
        super().__init__(num_classes, in_chans)
        self.features = features
        self.classifier = classifier
        head = self.get_submodule(self.head_layers[0])
        self.num_features = num_features
        self.head_hidden_size = head.in_features if isinstance(head, nn.Linear) else head.in_channels

    def head(self, features, pre_logits):
        if not pre_logits:
            return self.classifier(features)
        x = features
        for name, layer in self.classifier.named_children():
            if f"classifier.{name}" not in self.head_layers:
                x = layer(x)
        return x


def _xavier_init(model: nn.Module) -> None:
    """d2l trains these nets from Xavier-uniform weights; the same start here."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(module.weight)


def _conv(in_channels, out_channels, kernel_size, stride=1, padding=0):
    """Convolution with a bias, then ReLU: these nets predate batch normalization."""
    return ConvBNAct(in_channels, out_channels, kernel_size, stride, padding, batch_norm=False)


def _fully_connected(in_features: int, pool_size: int, hidden: tuple[int, ...], num_classes: int,
                     activation: type[nn.Module] = nn.ReLU, drop_rate: float = 0.0) -> nn.Sequential:
    """Pool the map to ``pool_size`` squared, flatten, hidden layers (act, dropout), then ``fc``."""
    layers = OrderedDict(pool=nn.AdaptiveAvgPool2d(pool_size), flatten=nn.Flatten())
    width = in_features * pool_size * pool_size
    for i, out in enumerate(hidden, start=1):
        layers[f"fc{i}"] = nn.Linear(width, out)
        layers[f"act{i}"] = activation()
        if drop_rate:
            layers[f"drop{i}"] = nn.Dropout(drop_rate)
        width = out
    layers["fc"] = nn.Linear(width, num_classes)
    return nn.Sequential(layers)


class LeNet(SequentialNet):
    """LeNet-5 (LeCun et al. 1998) as in d2l: sigmoid activations and average pooling, 28x28 input."""

    default_input_size = 28

    def __init__(self, num_classes: int = 10, in_chans: int = 1):
        features = nn.Sequential(OrderedDict(
            conv1=nn.Conv2d(in_chans, 6, 5, padding=2), act1=nn.Sigmoid(), pool1=nn.AvgPool2d(2),
            conv2=nn.Conv2d(6, 16, 5), act2=nn.Sigmoid(), pool2=nn.AvgPool2d(2),
        ))
        classifier = _fully_connected(16, 5, (120, 84), num_classes, activation=nn.Sigmoid)
        super().__init__(features, classifier, num_classes, in_chans, num_features=16)
        _xavier_init(self)


class AlexNet(SequentialNet):
    """AlexNet (Krizhevsky et al. 2012) on one tower, no LRN, dropout in the dense layers.

    Unlike d2l (first convolution padded by 1, a 5x5 last map), the first convolution is padded by 2
    so that 224x224 inputs give the paper's 55x55, 27x27, 13x13 and 6x6 maps and its 62M
    parameters: the network GoogLeNet's paper compares itself with.
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.5):
        features = nn.Sequential(OrderedDict(
            conv1=_conv(in_chans, 96, 11, stride=4, padding=2), pool1=nn.MaxPool2d(3, stride=2),
            conv2=_conv(96, 256, 5, padding=2), pool2=nn.MaxPool2d(3, stride=2),
            conv3=_conv(256, 384, 3, padding=1),
            conv4=_conv(384, 384, 3, padding=1),
            conv5=_conv(384, 256, 3, padding=1), pool5=nn.MaxPool2d(3, stride=2),
        ))
        classifier = _fully_connected(256, 6, (4096, 4096), num_classes, drop_rate=drop_rate)
        super().__init__(features, classifier, num_classes, in_chans, num_features=256)
        _xavier_init(self)


VGG11_BLOCKS = ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))  # (convolutions, channels): VGG-A


class VGG(SequentialNet):
    """VGG (Simonyan and Zisserman 2014): blocks of 3x3 convolutions, each closed by a 2x2 max pool."""

    def __init__(self, blocks=VGG11_BLOCKS, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.5):
        stages = OrderedDict()
        channels = in_chans
        for b, (convs, out) in enumerate(blocks, start=1):
            stage = OrderedDict()
            for c in range(1, convs + 1):
                stage[f"conv{c}"] = _conv(channels, out, 3, padding=1)
                channels = out
            stage["pool"] = nn.MaxPool2d(2, stride=2)
            stages[f"block{b}"] = nn.Sequential(stage)
        classifier = _fully_connected(channels, 7, (4096, 4096), num_classes, drop_rate=drop_rate)
        super().__init__(nn.Sequential(stages), classifier, num_classes, in_chans, num_features=channels)
        _xavier_init(self)


def _mlpconv(in_channels, out_channels, kernel_size, stride=1, padding=0) -> nn.Sequential:
    """NiN's micro network: a convolution, then two 1x1 convolutions (an MLP shared by all positions)."""
    return nn.Sequential(OrderedDict(
        conv=_conv(in_channels, out_channels, kernel_size, stride, padding),
        mlp1=_conv(out_channels, out_channels, 1),
        mlp2=_conv(out_channels, out_channels, 1),
    ))


class NiN(SequentialNet):
    """Network in Network (Lin et al. 2014) at d2l's widths: mlpconv blocks, no dense layers.

    The classifier is a 1x1 convolution to one map per class, ReLU and a global average pool. d2l
    makes the whole last block ``num_classes`` wide; here, as in the paper's ImageNet model, the
    last block keeps its width and only its final 1x1 convolution maps to the classes, so that
    ``reset_classifier`` and checkpoints for another number of classes replace the head alone.
    """

    head_layers = ("classifier.conv",)

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.5):
        features = nn.Sequential(OrderedDict(
            block1=_mlpconv(in_chans, 96, 11, stride=4), pool1=nn.MaxPool2d(3, stride=2),
            block2=_mlpconv(96, 256, 5, padding=2), pool2=nn.MaxPool2d(3, stride=2),
            block3=_mlpconv(256, 384, 3, padding=1), pool3=nn.MaxPool2d(3, stride=2),
            drop=nn.Dropout(drop_rate),
            block4=nn.Sequential(OrderedDict(conv=_conv(384, 384, 3, padding=1), mlp1=_conv(384, 384, 1))),
        ))
        classifier = nn.Sequential(OrderedDict(
            conv=nn.Conv2d(384, num_classes, 1), act=nn.ReLU(inplace=True),
            pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(),
        ))
        super().__init__(features, classifier, num_classes, in_chans, num_features=384)
        _xavier_init(self)


default_cfgs = {
    "lenet": plain_cfg({"input_size": 28, "pool_size": (5, 5), "first_conv": "features.conv1",
                        "classifier": "classifier.fc"}),
    "alexnet": plain_cfg({"input_size": 224, "pool_size": (6, 6), "first_conv": "features.conv1.conv",
                          "classifier": "classifier.fc"}),
    "vgg11": plain_cfg({"input_size": 224, "pool_size": (7, 7), "first_conv": "features.block1.conv1.conv",
                        "classifier": "classifier.fc"}),
    "nin": plain_cfg({"input_size": 224, "pool_size": (5, 5), "first_conv": "features.block1.conv.conv",
                      "classifier": "classifier.conv"}),
}


@register(paper="LeCun et al. 1998, Gradient-based learning applied to document recognition", cfgs=default_cfgs)
def lenet(num_classes=1000, in_chans=3, **kwargs):
    return LeNet(num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(paper="Krizhevsky et al. 2012, ImageNet classification with deep convolutional neural networks", cfgs=default_cfgs)
def alexnet(num_classes=1000, in_chans=3, **kwargs):
    return AlexNet(num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(paper="Simonyan and Zisserman 2014, Very deep convolutional networks (configuration A)", cfgs=default_cfgs)
def vgg11(num_classes=1000, in_chans=3, **kwargs):
    return VGG(VGG11_BLOCKS, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(paper="Lin et al. 2014, Network in network", cfgs=default_cfgs)
def nin(num_classes=1000, in_chans=3, **kwargs):
    return NiN(num_classes=num_classes, in_chans=in_chans, **kwargs)
