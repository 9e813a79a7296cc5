"""The classic CNNs and the compact MNIST Inception net against the reference code they come from.

References are written out here as their sources give them (the d2l book's ``nn.Sequential``
definitions, the PyTorch Zero to All tutorial's MNIST net, torchvision's VGG-11); the inceptorch
model's weights are copied into the reference in order, and both must give the same logits.
"""

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from inceptorch import create_model, min_input_size


def _copy_weights_in_order(model: nn.Module, reference: nn.Module) -> None:
    """Gives ``reference`` (built on the meta device or not) ``model``'s tensors by position.

    Strict loading checks every key and shape; ``assign`` shares the tensors instead of copying.
    """
    ours, theirs = model.state_dict(), reference.state_dict()
    assert len(ours) == len(theirs)
    reference.load_state_dict(dict(zip(theirs, ours.values())), assign=True)


def _assert_same_logits(model, reference, x):
    model.eval()
    reference.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-6)


def d2l_lenet():
    return nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5, padding=2), nn.Sigmoid(), nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Conv2d(6, 16, kernel_size=5), nn.Sigmoid(), nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.Sigmoid(),
        nn.Linear(120, 84), nn.Sigmoid(),
        nn.Linear(84, 10))


def paper_alexnet():
    """Krizhevsky et al. 2012 on one tower: 224 -> 55 -> 27 -> 13 -> 6, then 6*6*256 = 9216 features."""
    return nn.Sequential(
        nn.Conv2d(1, 96, kernel_size=11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(96, 256, kernel_size=5, padding=2), nn.ReLU(), nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(256, 384, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 384, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2), nn.Flatten(),
        nn.Linear(9216, 4096), nn.ReLU(), nn.Dropout(p=0.5),
        nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(p=0.5),
        nn.Linear(4096, 10))


def d2l_nin_block(in_channels, out_channels, kernel_size, strides, padding):
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, strides, padding), nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, kernel_size=1), nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, kernel_size=1), nn.ReLU())


class TutorialInceptionA(nn.Module):
    def __init__(self, in_channels):
        super().__init__()
        self.branch1x1 = nn.Conv2d(in_channels, 16, kernel_size=1)
        self.branch5x5_1 = nn.Conv2d(in_channels, 16, kernel_size=1)
        self.branch5x5_2 = nn.Conv2d(16, 24, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = nn.Conv2d(in_channels, 16, kernel_size=1)
        self.branch3x3dbl_2 = nn.Conv2d(16, 24, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = nn.Conv2d(24, 24, kernel_size=3, padding=1)
        self.branch_pool = nn.Conv2d(in_channels, 24, kernel_size=1)

    def forward(self, x):
        branch1x1 = self.branch1x1(x)
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return torch.cat([branch1x1, branch5x5, branch3x3dbl, branch_pool], 1)


class TutorialNet(nn.Module):
    """The tutorial's net (logits instead of its log-softmax), layers declared in the order they run."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.incept1 = TutorialInceptionA(in_channels=10)
        self.conv2 = nn.Conv2d(88, 20, kernel_size=5)
        self.incept2 = TutorialInceptionA(in_channels=20)
        self.mp = nn.MaxPool2d(2)
        self.fc = nn.Linear(1408, 10)

    def forward(self, x):
        x = F.relu(self.mp(self.conv1(x)))
        x = self.incept1(x)
        x = F.relu(self.mp(self.conv2(x)))
        x = self.incept2(x)
        return self.fc(x.view(x.size(0), -1))


def test_lenet_is_d2l_lenet():
    model = create_model("lenet", num_classes=10, in_chans=1)
    reference = d2l_lenet()
    _copy_weights_in_order(model, reference)
    _assert_same_logits(model, reference, torch.randn(2, 1, 28, 28))
    assert model.default_input_size == 28


def test_alexnet_is_the_papers_alexnet_at_224():
    model = create_model("alexnet", num_classes=10, in_chans=1)
    with torch.device("meta"):  # no time spent initialising weights that are replaced anyway
        reference = paper_alexnet()
    _copy_weights_in_order(model, reference)
    _assert_same_logits(model, reference, torch.randn(1, 1, 224, 224))


@pytest.mark.slow
def test_vgg11_is_torchvision_vgg11():
    model = create_model("vgg11", num_classes=10)
    with torch.device("meta"):
        reference = torchvision.models.vgg11(num_classes=10)
    _copy_weights_in_order(model, reference)
    _assert_same_logits(model, reference, torch.randn(1, 3, 32, 32))


def test_nin_blocks_are_d2l_nin_blocks_and_head_is_a_1x1_conv_and_global_pool():
    model = create_model("nin", num_classes=10, in_chans=1).eval()
    blocks = nn.Sequential(
        d2l_nin_block(1, 96, kernel_size=11, strides=4, padding=0), nn.MaxPool2d(3, stride=2),
        d2l_nin_block(96, 256, kernel_size=5, strides=1, padding=2), nn.MaxPool2d(3, stride=2),
        d2l_nin_block(256, 384, kernel_size=3, strides=1, padding=1), nn.MaxPool2d(3, stride=2)).eval()
    first_blocks = model.features[:6]
    _copy_weights_in_order(first_blocks, blocks)
    x = torch.randn(1, 1, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(first_blocks(x), blocks(x))
        features = model.forward_features(x)
        head = model.get_submodule(model.head_layers[0])
        assert isinstance(head, nn.Conv2d) and head.kernel_size == (1, 1)
        expected = F.relu(head(features)).mean(dim=(2, 3))
        torch.testing.assert_close(model(x), expected)


def test_mnist_inception_is_the_tutorial_net():
    model = create_model("mnist_inception", num_classes=10, in_chans=1)
    reference = TutorialNet()
    _copy_weights_in_order(model, reference)
    _assert_same_logits(model, reference, torch.randn(2, 1, 28, 28))
    assert model.default_input_size == 28


def test_mnist_inception_blocks_have_the_issue_branches():
    model = create_model("mnist_inception", num_classes=10, in_chans=1)
    for block, in_channels in ((model.features.inception1, 10), (model.features.inception2, 20)):
        names = [name for name, _ in block.named_children()]
        assert names == ["branch1x1", "branch5x5", "branch3x3dbl", "branch_pool"]
        x = torch.randn(1, in_channels, 12, 12)
        assert [branch(x).shape[1] for branch in block.children()] == [16, 24, 24, 24]
        assert block(x).shape == (1, 88, 12, 12)
    assert model.classifier.fc.in_features == 1408


@pytest.mark.parametrize(("name", "lr"), [("lenet", 0.5), ("mnist_inception", 0.1), ("nin", 0.1),
                                          ("alexnet", 0.02), pytest.param("vgg11", 0.02, marks=pytest.mark.slow)])
def test_trains_on_grey_28x28_resized_where_needed(name, lr):
    model = create_model(name, num_classes=10, in_chans=1)
    size = max(28, min_input_size(model, train=True))
    digits = torch.rand(8, 1, 28, 28)
    images = digits if size == 28 else F.interpolate(digits, size=(size, size), mode="bilinear")
    labels = torch.arange(8) % 10
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)  # plain SGD: no extra copies of VGG's 129M weights

    def loss_in_eval_mode():
        model.eval()
        with torch.no_grad():
            return F.cross_entropy(model(images), labels).item()

    before = loss_in_eval_mode()
    model.train()
    for _ in range(3):
        optimizer.zero_grad()
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()
    assert loss_in_eval_mode() < before
