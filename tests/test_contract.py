"""The contract of DESIGN.md, checked on every registered model at its smallest input, batch 2.

Each model is built once (grey input, 5 classes, aux heads on where it has them) and shared by the
checks; those that change it work on a copy. Models over 20M parameters are marked slow.
"""

import copy
from dataclasses import dataclass

import pytest
import torch
from inception_reference import load_reference, randomize_

import inceptorch
from inceptorch import min_input_size
from inceptorch.models.meta import meta_copy
from inceptorch.models.registry import model_entry

CLASSES = 5


def _param(name: str):
    with torch.device("meta"):  # counting parameters without allocating or initialising them
        params = sum(p.numel() for p in inceptorch.create_model(name).parameters())
    return pytest.param(name, id=name, marks=[pytest.mark.slow] if params > 20_000_000 else [])


@dataclass
class Built:
    name: str
    model: torch.nn.Module
    eval_size: int
    train_size: int  # for forward_with_aux: aux heads may need a larger input than the main path

    def batch(self, train: bool = False) -> torch.Tensor:
        size = self.train_size if train else self.eval_size
        return torch.randn(2, 1, size, size)


@pytest.fixture(scope="module", params=[_param(name) for name in inceptorch.list_models()])
def built(request) -> Built:
    name = request.param
    has_aux = model_entry(name).has_aux
    model = inceptorch.create_model(name, num_classes=CLASSES, in_chans=1, aux_logits=has_aux)
    eval_size = model.min_input_size
    train_size = min_input_size(model, train=True) if has_aux else eval_size
    return Built(name, model, eval_size, train_size)


def _aux_heads_on(model) -> int:
    return sum(getattr(model, head, None) is not None for head in model.aux_heads)


def test_attributes_name_and_grey_input(built):
    model = built.model
    assert model.model_name == built.name
    assert (model.num_classes, model.in_chans) == (CLASSES, 1)
    assert isinstance(model.default_input_size, int) and model.default_input_size >= built.eval_size


TIMM_CFG_KEYS = {"input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode", "num_classes", "pool_size",
                 "first_conv", "classifier", "architecture", "tag", "hf_hub_id", "url", "license", "label_names"}


def test_pretrained_cfg_has_timms_keys_and_names_the_models_own_layers(built):
    """What timm's test_model_default_cfgs asks of a config: its first convolution takes the input's
    channels, its classifier gives the classes, and pool_size is the feature map at input_size."""
    model, cfg = built.model, built.model.pretrained_cfg
    assert TIMM_CFG_KEYS <= set(cfg) and model.default_cfg is cfg and cfg["architecture"] == built.name
    assert cfg["input_size"] == (3, model.default_input_size, model.default_input_size)
    first = model.get_submodule(cfg["first_conv"])
    assert isinstance(first, torch.nn.Conv2d) and first.in_channels == 1
    head = model.get_submodule(cfg["classifier"])
    assert getattr(head, "out_features", getattr(head, "out_channels", None)) == CLASSES
    with torch.no_grad():
        features = meta_copy(model).eval().forward_features(torch.empty(1, 1, *cfg["input_size"][1:], device="meta"))
    assert tuple(features.shape[-2:]) == cfg["pool_size"]


def test_forward_returns_logits_in_eval_and_train_mode(built):
    model = built.model
    with torch.no_grad():
        for train in (False, True):
            out = model.train(train)(built.batch(train))
            assert type(out) is torch.Tensor and out.shape == (2, CLASSES), f"train={train}"
            assert torch.isfinite(out).all()


def test_forward_with_aux_returns_logits_and_a_list(built):
    model = built.model
    with torch.no_grad():
        logits, aux = model.train().forward_with_aux(built.batch(train=True))
        assert type(logits) is torch.Tensor and logits.shape == (2, CLASSES)
        assert isinstance(aux, list) and len(aux) == _aux_heads_on(model)
        assert all(a.shape == (2, CLASSES) for a in aux)
        logits, aux = model.eval().forward_with_aux(built.batch(train=True))
        assert type(logits) is torch.Tensor and logits.shape == (2, CLASSES) and isinstance(aux, list)


# The models whose checkpoints load key for key from timm's (test_inception_v3.py, test_inception_v4_resnet.py)
TIMM_TWINS = [pytest.param("inception_v3", id="inception_v3"),
              *(pytest.param(name, id=name, marks=pytest.mark.slow) for name in ("inception_v4", "inception_resnet_v2"))]


@pytest.mark.parametrize("name", TIMM_TWINS)
def test_forward_features_and_forward_head_equal_timms_on_the_same_random_weights(name, tmp_path):
    """The split of forward into features and head is timm's: the same map (N, C, H, W) before pooling,
    the same pooled features (pre_logits) and logits from it."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    reference = randomize_(timm.create_model(name, pretrained=False))
    model, _ = load_reference(name, reference, tmp_path)
    x = torch.randn(2, 3, 75, 75)  # the smallest input all three accept
    with torch.no_grad():
        features, expected = model.forward_features(x), reference.forward_features(x)
        assert features.dim() == 4 and features.shape[0] == 2
        assert expected.abs().max() > 0.1  # not a comparison of two near-zero maps
        torch.testing.assert_close(features, expected, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(model.forward_head(features, pre_logits=True),
                                   reference.forward_head(expected, pre_logits=True), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(model.forward_head(features), reference.forward_head(expected),
                                   rtol=1e-4, atol=1e-5)


def test_reset_classifier_resizes_main_and_aux_heads(built):
    model = copy.deepcopy(built.model)
    model.reset_classifier(7)
    assert model.num_classes == 7
    with torch.no_grad():
        assert model.eval()(built.batch()).shape == (2, 7)
        logits, aux = model.train().forward_with_aux(built.batch(train=True))
    assert logits.shape == (2, 7)
    assert len(aux) == _aux_heads_on(built.model)
    assert all(a.shape == (2, 7) for a in aux)


@pytest.mark.parametrize("name", [_param(name) for name in inceptorch.list_models()])
def test_defaults_are_1000_classes_and_rgb(name):
    with torch.device("meta"):  # shapes only: no weights allocated
        model = inceptorch.create_model(name)
    assert (model.num_classes, model.in_chans) == (1000, 3)
    size = model.default_input_size
    assert model.eval()(torch.empty(1, 3, size, size, device="meta")).shape == (1, 1000)
