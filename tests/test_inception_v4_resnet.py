"""inception_v4 and inception_resnet_v2 against timm's; inception_resnet_v1 against the paper."""

import pytest
import torch
from inception_reference import count_parameters, load_reference, loss_goes_down, max_difference, randomize_

from inceptorch import create_model

SMALL = 75  # the smallest input all three accept: five unpadded stride-2 steps leave a 1x1 grid
TIMM_MODELS = {"inception_v4": 42_679_816, "inception_resnet_v2": 55_843_464}  # counts from the issue
FIRST_CONV = {"inception_v4": "features.0.conv.weight", "inception_resnet_v2": "conv2d_1a.conv.weight"}


@pytest.mark.slow
@pytest.mark.parametrize("name", TIMM_MODELS)
def test_timm_checkpoint_loads_key_for_key_and_gives_the_same_logits(name, tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    reference = randomize_(timm.create_model(name, pretrained=False))
    model, path = load_reference(name, reference, tmp_path)
    assert list(model.state_dict()) == list(reference.state_dict())
    assert count_parameters(model) == count_parameters(reference) == TIMM_MODELS[name]
    x = torch.randn(1, 3, SMALL, SMALL)
    assert max_difference(model, reference, x) < 1e-5
    with torch.no_grad():
        assert reference(x).abs().max() > 0.1  # not a comparison of two near-zero outputs

    grey = create_model(name, in_chans=1, num_classes=10, weights=path)  # first conv: the RGB filters summed
    rgb_filters = reference.get_parameter(FIRST_CONV[name])
    assert torch.allclose(grey.get_parameter(FIRST_CONV[name]), rgb_filters.sum(1, keepdim=True))
    assert grey.num_classes == 10


@pytest.mark.parametrize("name, head", [("inception_v4", "last_linear"), ("inception_resnet_v1", "classif"),
                                        ("inception_resnet_v2", "classif")])
def test_other_channels_and_classes(name, head):
    model = create_model(name, in_chans=2, num_classes=7).to("meta").eval()
    assert model(torch.empty(1, 2, SMALL, SMALL, device="meta")).shape == (1, 7)
    assert model.forward_with_aux(torch.empty(1, 2, SMALL, SMALL, device="meta"))[1] == []
    model.reset_classifier(4)
    assert getattr(model, head).out_features == model.num_classes == 4


def test_inception_resnet_v1_has_the_papers_shapes():
    """Figure 15 with the stem of Figure 14, Reduction-A of Figure 7 (k, l, m, n = 192, 192, 256, 384
    in Table 1) and Reduction-B of Figure 12, at 299x299."""
    model = create_model("inception_resnet_v1").to("meta").eval()
    points = model.endpoints(torch.empty(1, 3, 299, 299, device="meta"))
    shapes = {stage: tuple(points[names[-1]].shape[1:]) for stage, names in model.stages.items()}
    assert shapes == {"stem": (256, 35, 35), "inception_resnet_a": (256, 35, 35),
                      "reduction_a": (896, 17, 17), "inception_resnet_b": (896, 17, 17),
                      "reduction_b": (1792, 8, 8), "inception_resnet_c": (1792, 8, 8)}
    assert [len(model.repeat), len(model.repeat_1), len(model.repeat_2)] == [5, 10, 5]


def test_inception_resnet_blocks_add_a_scaled_residual():
    """Section 3.3: each block computes relu(x + scale * residual), with scale between 0.1 and 0.3."""
    model = create_model("inception_resnet_v1").eval()
    blocks = [*model.repeat, *model.repeat_1, *model.repeat_2]
    assert all(0.1 <= block.scale <= 0.3 for block in blocks)
    block = model.repeat[0]
    x = torch.randn(1, 256, 5, 5)
    with torch.no_grad():
        residual = block(x) - torch.relu(x)  # where x + scale * r stays positive, r is the difference / scale
        torch.nn.init.zeros_(block.conv2d.weight)
        torch.nn.init.zeros_(block.conv2d.bias)
        assert torch.equal(block(x), torch.relu(x))  # without its residual, a block passes x through
    assert residual.abs().max() > 0


@pytest.mark.slow
@pytest.mark.parametrize("name, lr", [("inception_v4", 0.003), ("inception_resnet_v2", 0.003),
                                      ("inception_resnet_v1", 0.001)])  # v1's features are not normalized
def test_trains(name, lr):
    first, last = loss_goes_down(create_model(name, num_classes=5, dropout=0.0), SMALL, lr=lr)
    assert last < 0.8 * first
