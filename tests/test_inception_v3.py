"""inception_v3 against torchvision's and timm's: checkpoints load key for key and give the same logits."""

import pytest
import torch
import torchvision
from inception_reference import count_parameters, load_reference, loss_goes_down, max_difference, randomize_

from inceptorch import create_model, min_input_size
from inceptorch.errors import ConfigError

SMALL = 75  # the smallest input torchvision documents for inception_v3 (its weights' "min_size")


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(0)
    return randomize_(torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False))


@pytest.fixture(scope="module")
def checkpoint(reference, tmp_path_factory):
    path = tmp_path_factory.mktemp("inception_v3") / "torchvision.pth"
    torch.save(reference.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def ours(checkpoint):
    return create_model("inception_v3", aux_logits=True, weights=checkpoint).eval()


def test_parameter_counts_match_the_issue_and_torchvision(ours):
    assert count_parameters(ours) == 27_161_264
    assert count_parameters(create_model("inception_v3")) == 23_834_568
    plain_torchvision = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False)
    assert count_parameters(plain_torchvision) == 23_834_568


def test_torchvision_checkpoint_loads_key_for_key_and_gives_the_same_logits(ours, reference):
    assert list(ours.state_dict()) == list(reference.state_dict())
    torch.manual_seed(1)
    x = torch.randn(1, 3, SMALL, SMALL)
    assert max_difference(ours, reference, x) < 1e-5
    with torch.no_grad():
        assert reference(x).abs().max() > 0.1  # not a comparison of two near-zero outputs


def test_aux_checkpoint_loads_into_a_model_without_aux_head(checkpoint, reference):
    model = create_model("inception_v3", weights=checkpoint).eval()
    assert model.AuxLogits is None and not any(k.startswith("AuxLogits") for k in model.state_dict())
    x = torch.randn(1, 3, 91, 91)
    assert max_difference(model, reference, x) < 1e-5


def test_aux_head_matches_torchvision(ours, reference):
    grid17 = torch.randn(2, 768, 17, 17)  # Mixed_6e's output at 299x299
    with torch.no_grad():
        assert (ours.AuxLogits(grid17) - reference.AuxLogits(grid17)).abs().max() < 1e-5


def test_transform_input_follows_torchvision(checkpoint, reference):
    model = create_model("inception_v3", weights=checkpoint, transform_input=True).eval()
    reference.transform_input = True
    try:
        assert max_difference(model, reference, torch.randn(1, 3, SMALL, SMALL)) < 1e-5
    finally:
        reference.transform_input = False
    with pytest.raises(ConfigError, match="transform_input"):
        create_model("inception_v3", in_chans=1, transform_input=True)


def test_timm_checkpoint_loads_and_gives_the_same_logits(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(2)
    reference = randomize_(timm.create_model("inception_v3", pretrained=False, aux_logits=True))
    model, _ = load_reference("inception_v3", reference, tmp_path, aux_logits=True)
    reference.aux_logits = False  # timm runs its aux head in eval mode too, which needs 299x299 input
    assert max_difference(model, reference, torch.randn(1, 3, SMALL, SMALL)) < 1e-5


def test_grey_input_with_an_rgb_checkpoint_sees_the_grey_image_as_rgb(checkpoint, reference):
    model = create_model("inception_v3", in_chans=1, weights=checkpoint).eval()
    grey = torch.randn(1, 1, SMALL, SMALL)
    assert max_difference(model, reference, grey, reference_input=grey.expand(-1, 3, -1, -1)) < 1e-4


def test_forward_returns_logits_and_forward_with_aux_adds_the_aux_head_in_both_modes():
    model = create_model("inception_v3", num_classes=7, in_chans=2, aux_logits=True).to("meta")
    x = torch.empty(2, 2, 299, 299, device="meta")
    assert model.train()(x).shape == (2, 7)
    for train in (True, False):
        logits, aux = model.train(train).forward_with_aux(x)
        assert logits.shape == (2, 7) and [a.shape for a in aux] == [(2, 7)]
    model.AuxLogits = None
    assert model.forward_with_aux(x)[1] == []


def test_aux_head_needs_299_in_training_but_eval_runs_from_75(ours):
    assert min_input_size(ours, train=True) == 299  # the issue: "Inception v3's aux head needs 299"
    assert ours.min_input_size == SMALL


def test_reset_classifier_replaces_main_and_aux_heads(checkpoint, reference):
    model = create_model("inception_v3", num_classes=10, aux_logits=True, weights=checkpoint)
    assert model.fc.out_features == model.AuxLogits.fc.out_features == 10  # fresh heads for 10 classes
    assert torch.equal(model.Mixed_7c.branch_pool.conv.weight, reference.Mixed_7c.branch_pool.conv.weight)
    model.reset_classifier(5)
    assert model.fc.out_features == model.AuxLogits.fc.out_features == model.num_classes == 5
    model.AuxLogits = None  # as built with aux_logits=False
    model.reset_classifier(3)
    assert model.fc.out_features == 3


@pytest.mark.slow
def test_trains():
    first, last = loss_goes_down(create_model("inception_v3", num_classes=5, dropout=0.0), SMALL, lr=0.003)
    assert last < 0.8 * first
