"""bn_inception against Figure 5 of Ioffe and Szegedy 2015 (the BN-Inception network)."""

import pytest
import torch
from inception_reference import loss_goes_down
from test_googlenet import output_shapes
from torch import nn

from inceptorch import create_model
from inceptorch.errors import ConfigError

PASS = "pass through"  # the pooled input goes on unprojected: its channels count
# Figure 5 as printed: the "output size" column (H, W, C), then the columns whose sum is a block's
# channels: #1x1, #3x3, double #3x3, pool + proj.
FIGURE_5 = {
    "inception3a": ((28, 28, 256), (64, 64, 96, 32)),
    "inception3b": ((28, 28, 320), (64, 96, 96, 64)),
    "inception3c": ((28, 28, 576), (0, 160, 96, PASS)),
    "inception4a": ((14, 14, 576), (224, 96, 128, 128)),
    "inception4b": ((14, 14, 576), (192, 128, 128, 128)),
    "inception4c": ((14, 14, 576), (160, 160, 160, 128)),
    "inception4d": ((14, 14, 576), (96, 192, 192, 128)),
    "inception4e": ((14, 14, 1024), (0, 192, 256, PASS)),
    "inception5a": ((7, 7, 1024), (352, 320, 224, 128)),
    "inception5b": ((7, 7, 1024), (352, 320, 224, 128)),
}
STRIDE_2 = ("inception3c", "inception4e")  # the blocks marked "stride 2"
POOL = {"avg": ["inception3a", "inception3b", "inception4a", "inception4b", "inception4c", "inception4d",
                "inception5a"],
        "max": ["inception3c", "inception4e", "inception5b"]}


@pytest.fixture(scope="module")
def model():
    return create_model("bn_inception").eval()


def test_shapes_follow_figure_5(model):
    stem = {"conv1": (112, 112, 64), "maxpool1": (56, 56, 64), "conv2": (56, 56, 192), "maxpool2": (28, 28, 192),
            "avgpool": (1, 1, 1024)}
    shapes = output_shapes(model, torch.randn(1, 3, 224, 224), [*stem, *FIGURE_5])
    for name, (height, width, channels) in stem.items():
        assert shapes[name] == (channels, height, width), name
    channels, printed_otherwise = 192, []
    for name, ((height, width, printed), columns) in FIGURE_5.items():
        channels = sum(channels if c == PASS else c for c in columns)
        if name in STRIDE_2:  # the row prints the grid the block starts from; the next row the halved one
            height, width = height // 2, width // 2
        assert shapes[name] == (channels, height, width), name
        if printed != channels:
            printed_otherwise.append(name)
    # The figure's output column says 576, 576 and 1024 where its own branch columns add up to
    # 608, 608 and 1056; the columns are what the released model has.
    assert printed_otherwise == ["inception4c", "inception4d", "inception4e"]


def test_layers_are_the_papers(model):
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # BN after every conv
    assert {m.kernel_size for m in convs} == {(7, 7), (3, 3), (1, 1)}  # each 5x5 became two 3x3s
    for kind, names in POOL.items():
        for name in names:
            block = getattr(model, name)
            pool = block.branch_pool[0] if isinstance(block.branch_pool, nn.Sequential) else block.branch_pool
            assert isinstance(pool, nn.AvgPool2d if kind == "avg" else nn.MaxPool2d), name
            assert pool.stride == (2 if name in STRIDE_2 else 1), name
    assert not model.has_aux and model.forward_with_aux(torch.randn(1, 3, 64, 64))[1] == []
    assert list(model.stages) == ["stem", "conv", "inception3", "inception4", "inception5"]


def test_trains_on_grey_input():
    first, last = loss_goes_down(create_model("bn_inception", num_classes=5, in_chans=1), 64, lr=0.01)
    assert last < 0.8 * first


def test_forward_is_a_tensor_and_reset_classifier_resizes_the_head():
    model = create_model("bn_inception", num_classes=5, in_chans=1)
    model.reset_classifier(7)
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        for train in (True, False):
            assert type(model.train(train)(x)) is torch.Tensor and model(x).shape == (2, 7)


# --- bn_inception_small ------------------------------------------------------------------------------

def test_small_runs_figure_5s_blocks_3a_to_4b_at_a_quarter_width():
    model = create_model("bn_inception_small", num_classes=10, in_chans=1, width=0.25).eval()
    assert model.default_input_size == 28 and not model.has_aux
    # Figure 5's columns divided by 4; 3c passes its 80 input channels through and halves the grid
    expected = {"conv1": (16, 28, 28), "maxpool1": (16, 14, 14), "conv2": (48, 14, 14),
                "inception3a": (16 + 16 + 24 + 8, 14, 14), "inception3b": (16 + 24 + 24 + 16, 14, 14),
                "inception3c": (0 + 40 + 24 + 80, 7, 7), "inception4a": (56 + 24 + 32 + 32, 7, 7),
                "inception4b": (48 + 32 + 32 + 32, 7, 7)}
    assert output_shapes(model, torch.randn(1, 1, 28, 28), list(expected)) == expected
    assert list(model.stages) == ["stem", "conv", "inception3", "inception4"]
    assert model.fc.in_features == 144
    assert isinstance(model.inception3a.branch_pool[0], nn.AvgPool2d)
    assert isinstance(model.inception3c.branch_pool, nn.MaxPool2d) and model.inception3c.branch_pool.stride == 2
    assert {m.kernel_size for m in model.modules() if isinstance(m, nn.Conv2d)} == {(3, 3), (1, 1)}
    with pytest.raises(ConfigError, match="width must be positive"):
        create_model("bn_inception_small", width=0)


def test_small_trains_on_32x32_colour_input():
    model = create_model("bn_inception_small", num_classes=5, in_chans=3, dropout=0.0)
    first, last = loss_goes_down(model, 32, lr=0.05)
    assert last < 0.8 * first
