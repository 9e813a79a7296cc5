"""timm's feature API (features_only, feature_info, forward_intermediates, forward_head, heads and
pooling, gradient checkpointing, torch.fx) against timm itself and against the papers' tables."""

import copy

import pytest
import timm
import torch
import torchvision
from inception_reference import randomize_
from torch import fx

from inceptorch import create_model
from inceptorch.errors import ConfigError

SMALL = 107  # above the three networks' smallest input (75), five levels of at least 2x2


@pytest.fixture(scope="module", params=["inception_v3", "inception_v4", "inception_resnet_v2"])
def timm_pair(request, tmp_path_factory):
    """timm's model with random weights that keep activations alive, and its state dict as a file."""
    torch.manual_seed(0)
    reference = randomize_(timm.create_model(request.param))
    path = tmp_path_factory.mktemp("timm") / f"{request.param}.pth"
    torch.save(reference.state_dict(), path)
    return request.param, reference, path


def test_features_only_gives_timms_maps_channels_and_reductions(timm_pair):
    name, _, path = timm_pair
    theirs = timm.create_model(name, features_only=True, pretrained=True,
                               pretrained_cfg_overlay={"file": str(path)}).eval()
    ours = create_model(name, features_only=True, weights=path).eval()  # the full checkpoint, heads left out
    x = torch.randn(2, 3, SMALL, SMALL)
    with torch.no_grad():
        expected, got = theirs(x), ours(x)
    assert ours.feature_info.channels() == theirs.feature_info.channels()
    assert ours.feature_info.reduction() == theirs.feature_info.reduction()
    assert len(got) == len(expected) == 5
    for level, (a, b) in enumerate(zip(got, expected)):
        assert a.shape == b.shape, level
        assert b.std() > 0.1, level  # alive, so that equality means something
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert not any(k.startswith(("fc.", "last_linear.", "classif.", "AuxLogits.")) for k in ours.state_dict())


def test_forward_head_pre_logits_and_the_classifier_are_timms(timm_pair):
    name, reference, path = timm_pair
    ours = create_model(name, weights=path).eval()
    x = torch.randn(2, 3, SMALL, SMALL)
    with torch.no_grad():
        features = ours.forward_features(x)
        torch.testing.assert_close(features, reference.forward_features(x), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(ours.forward_head(features, pre_logits=True),
                                   reference.forward_head(reference.forward_features(x), pre_logits=True),
                                   rtol=1e-4, atol=1e-4)
    assert ours.num_features == ours.head_hidden_size == reference.num_features == reference.head_hidden_size
    assert ours.get_classifier().weight.shape == reference.get_classifier().weight.shape
    assert [d["module"] for d in ours.feature_info] == [d["module"] for d in reference.feature_info]


def test_out_indices_pick_timms_levels_and_nothing_past_the_last_is_kept(tmp_path):
    torch.manual_seed(0)
    reference = randomize_(timm.create_model("inception_v3"))
    torch.save(reference.state_dict(), tmp_path / "v3.pth")
    theirs = timm.create_model("inception_v3", features_only=True, out_indices=(1, 3), pretrained=True,
                               pretrained_cfg_overlay={"file": str(tmp_path / "v3.pth")}).eval()
    ours = create_model("inception_v3", features_only=True, out_indices=(1, 3), weights=tmp_path / "v3.pth").eval()
    x = torch.randn(1, 3, SMALL, SMALL)
    with torch.no_grad():
        for a, b in zip(ours(x), theirs(x), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert ours.feature_info.channels() == theirs.feature_info.channels() == [192, 768]
    assert not any(k.startswith(("Mixed_7", "fc.")) for k in ours.state_dict())
    assert ours.build_config["out_indices"] == [1, 3]


def test_a_torchvision_checkpoint_with_aux_head_loads_into_a_features_model(tmp_path):
    torch.manual_seed(0)
    reference = randomize_(torchvision.models.inception_v3(aux_logits=True, init_weights=False))
    torch.save(reference.state_dict(), tmp_path / "tv.pth")
    ours = create_model("inception_v3", features_only=True, out_indices=(4,), weights=tmp_path / "tv.pth").eval()
    x = torch.randn(1, 3, SMALL, SMALL)
    with torch.no_grad():
        (features,) = ours(x)
        torch.testing.assert_close(features, _torchvision_v3_features(reference, x), rtol=1e-4, atol=1e-4)


def _torchvision_v3_features(model, x):
    """torchvision's Mixed_7c output: its forward up to the average pool."""
    for name, layer in model.named_children():
        if name == "avgpool":
            return x
        if name != "AuxLogits":
            x = layer(x)
    raise AssertionError("no avgpool")


def test_forward_intermediates_follows_timms_indices():
    model = create_model("googlenet").eval()
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x))
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        picked = model.forward_intermediates(x, indices=[-1, 0], intermediates_only=True)
        _, early = model.forward_intermediates(x, indices=[1], stop_early=True)
    assert [m.shape[1] for m in maps] == model.feature_info.channels()
    assert [m.shape[1] for m in last_two] == [832, 1024]
    assert [m.shape[1] for m in picked] == [64, 1024]  # in the order the layers run, as timm's
    torch.testing.assert_close(early[0], maps[1])
    with pytest.raises(ConfigError, match="out of range"):
        model.forward_intermediates(x, indices=[5])


# GoogLeNet's Table 1 and BN-Inception's Figure 5 at 224x224: the output before each grid reduction.
PAPER_LEVELS = {
    "googlenet": [(64, 2, "conv1"), (192, 4, "conv3"), (480, 8, "inception3b"), (832, 16, "inception4e"),
                  (1024, 32, "inception5b")],
    "bn_inception": [(64, 2, "conv1"), (192, 4, "conv2"), (320, 8, "inception3b"), (608, 16, "inception4d"),
                     (1024, 32, "inception5b")],
}


@pytest.mark.parametrize("name", list(PAPER_LEVELS))
def test_feature_levels_are_the_papers_grid_reductions(name):
    info = create_model(name).feature_info
    assert [(d["num_chs"], d["reduction"], d["module"]) for d in info] == PAPER_LEVELS[name]


def test_small_nets_levels_end_at_the_last_map():
    model = create_model("googlenet_small", num_classes=10, in_chans=1).eval()
    maps = model.forward_intermediates(torch.randn(1, 1, 28, 28), intermediates_only=True)
    assert [m.shape[-1] for m in maps] == [28, 14, 7] == [28 // r for r in model.feature_info.reduction()]
    assert model.feature_info.module_name()[-1] == "inception4b"


def test_reset_classifier_and_global_pool_take_timms_strings():
    model = create_model("inception_v3", num_classes=5).eval()
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        pre_logits = model.forward_head(model.forward_features(x), pre_logits=True)
        assert model.get_classifier() is model.fc and model.fc.out_features == 5
        model.reset_classifier(0)
        torch.testing.assert_close(model(x), pre_logits)
        model.reset_classifier(0, "")
        assert model(x).shape == (1, 2048, 1, 1)
        model.reset_classifier(3, "avg")
        assert model(x).shape == (1, 3)
    assert create_model("inception_v4", num_classes=0, global_pool="").eval()(torch.randn(1, 3, 96, 96)).dim() == 4
    with pytest.raises(ConfigError, match="num_classes=0"):
        model.reset_classifier(3, "")
    with pytest.raises(ConfigError, match="takes global_pool 'avg' or ''"):
        create_model("lenet", num_classes=0, global_pool="max")


def test_features_only_refuses_options_it_would_ignore():
    with pytest.raises(ConfigError, match="features_only=True too"):
        create_model("googlenet", out_indices=(1, 2))
    with pytest.raises(ConfigError, match="leave num_classes, aux_logits and global_pool out"):
        create_model("googlenet", features_only=True, aux_logits=True)


@pytest.mark.parametrize("options", [{}, {"features_only": True}])
def test_symbolic_trace_gives_the_eager_outputs(options):
    torch.manual_seed(0)
    model = randomize_(create_model("inception_v3", **options))
    traced = fx.symbolic_trace(model)
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        eager, graph = model(x), traced(x)
    for a, b in zip(eager if isinstance(eager, list) else [eager], graph if isinstance(graph, list) else [graph],
                    strict=True):
        assert torch.equal(a, b)


def _step(model, x):
    torch.manual_seed(1)  # the same dropout masks in both models
    out = model(x)
    out.square().mean().backward()
    return out.detach(), {n: p.grad for n, p in model.named_parameters()}


@pytest.mark.parametrize(("name", "size"), [("bn_inception_small", 28), ("inception_resnet_v1", 75)])
def test_grad_checkpointing_keeps_outputs_gradients_and_one_batch_norm_update(name, size):
    torch.manual_seed(0)
    start = randomize_(create_model(name, num_classes=4))
    plain, checkpointed = copy.deepcopy(start).train(), copy.deepcopy(start).train()
    checkpointed.set_grad_checkpointing(True)
    x = torch.randn(2, 3, size, size)
    out, grads = _step(plain, x)
    out_checkpointed, grads_checkpointed = _step(checkpointed, x)
    torch.testing.assert_close(out_checkpointed, out, rtol=0, atol=0)
    for key, grad in grads.items():
        torch.testing.assert_close(grads_checkpointed[key], grad, rtol=1e-6, atol=1e-7, msg=key)
    stats, stats_checkpointed, stats_start = plain.state_dict(), checkpointed.state_dict(), start.state_dict()
    for key in (k for k in stats if "running_" in k or "num_batches_tracked" in k):
        assert torch.equal(stats_checkpointed[key], stats[key]), key
        if "num_batches_tracked" in key:
            assert stats[key] == 1, key  # one training step, one update
        else:
            assert not torch.equal(stats[key], stats_start[key]), key
