"""googlenet against torchvision's, googlenet_paper against Table 1 of Szegedy et al. 2014, and
googlenet_small for 28x28 images."""

import pytest
import torch
import torchvision
from inception_reference import loss_goes_down, max_difference, randomize_
from torch import nn

from inceptorch import create_model
from inceptorch.analysis import count_macs
from inceptorch.errors import ConfigError


def conv_macs(model: nn.Module, x: torch.Tensor, layers: list[str]) -> dict[str, int]:
    """Multiply-adds of the convolutions inside each of ``layers`` (biases not counted, as the paper)."""
    _ = model.min_input_size  # searched on a copy of the model, hooks included: before adding them
    counts = dict.fromkeys(layers, 0)

    def count(name):
        def hook(conv, inputs, output):
            counts[name] += output[0].numel() * conv.weight[0].numel()
        return hook

    hooks = [conv.register_forward_hook(count(name))
             for name in layers for conv in model.get_submodule(name).modules() if isinstance(conv, nn.Conv2d)]
    with torch.no_grad():
        model.eval()(x)
    for hook in hooks:
        hook.remove()
    return counts


def output_shapes(model: nn.Module, x: torch.Tensor, layers: list[str]) -> dict[str, tuple[int, ...]]:
    """Shape (without the batch) of each of ``layers``' outputs in an eval forward_with_aux."""
    _ = model.min_input_size  # searched on a copy of the model, hooks included: before adding them
    shapes = {}

    def record(name):
        def hook(module, inputs, output):
            shapes.setdefault(name, tuple(output.shape[1:]))
        return hook

    hooks = [model.get_submodule(name).register_forward_hook(record(name)) for name in layers]
    with torch.no_grad():
        model.eval().forward_with_aux(x)
    for hook in hooks:
        hook.remove()
    return shapes


# --- googlenet: torchvision's layout, key for key -------------------------------------------------

@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(0)
    return randomize_(torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True))


@pytest.fixture(scope="module")
def checkpoint(reference, tmp_path_factory):
    path = tmp_path_factory.mktemp("googlenet") / "torchvision.pth"
    torch.save(reference.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def ours(checkpoint):
    return create_model("googlenet", aux_logits=True, weights=checkpoint).eval()


def test_parameter_count_is_torchvisions():
    count = lambda model: sum(p.numel() for p in model.parameters())
    with torch.device("meta"):  # counting without allocating or initialising
        assert count(create_model("googlenet")) == 6_624_904  # the number, without aux heads
        assert count(create_model("googlenet", aux_logits=True)) == count(
            torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True))


def test_multiply_adds_and_smallest_input_are_torchvisions():
    meta = torchvision.models.GoogLeNet_Weights.IMAGENET1K_V1.meta
    assert round(count_macs("googlenet") / 1e9, 3) == meta["_ops"]  # 1.498 G at 224x224
    assert (create_model("googlenet").min_input_size,) * 2 == meta["min_size"]


def test_torchvision_checkpoint_loads_key_for_key_and_gives_the_same_logits(ours, reference):
    assert list(ours.state_dict()) == list(reference.state_dict())
    x = torch.randn(1, 3, 224, 224)
    assert max_difference(ours, reference, x) < 1e-5
    with torch.no_grad():
        assert reference(x).abs().max() > 0.1  # not a comparison of two near-zero outputs


def test_aux_heads_read_4a_and_4d_as_torchvisions(ours, reference):
    taps = {}
    hooks = [getattr(reference, name).register_forward_hook(
        lambda module, inputs, output, name=name: taps.setdefault(name, output))
        for name in ("inception4a", "inception4d")]
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        reference(x)
        expected = [reference.aux1(taps["inception4a"]), reference.aux2(taps["inception4d"])]
        logits, aux = ours.forward_with_aux(x)  # eval mode: the heads run, their dropout does not
    for hook in hooks:
        hook.remove()
    assert len(aux) == 2
    assert max((a - e).abs().max().item() for a, e in zip(aux, expected)) < 1e-5
    assert torch.equal(logits, ours(x))


def test_aux_checkpoint_loads_into_a_model_without_aux_heads(checkpoint, reference):
    model = create_model("googlenet", weights=checkpoint).eval()
    assert model.aux1 is None and model.aux2 is None
    assert not any(k.startswith("aux") for k in model.state_dict())
    assert max_difference(model, reference, torch.randn(1, 3, 96, 96)) < 1e-5
    assert model.forward_with_aux(torch.randn(1, 3, 96, 96))[1] == []


def test_transform_input_follows_torchvision(checkpoint, reference):
    model = create_model("googlenet", weights=checkpoint, transform_input=True).eval()
    reference.transform_input = True
    try:
        assert max_difference(model, reference, torch.randn(1, 3, 96, 96)) < 1e-5
    finally:
        reference.transform_input = False
    assert not max_difference(model, reference, torch.randn(1, 3, 96, 96)) < 1e-3  # it does change things
    with pytest.raises(ConfigError, match="transform_input"):
        create_model("googlenet", in_chans=1, transform_input=True)


def test_grey_input_with_an_rgb_checkpoint_sees_the_grey_image_as_rgb(checkpoint, reference):
    model = create_model("googlenet", in_chans=1, weights=checkpoint).eval()
    assert model.conv1.conv.weight.shape[1] == 1
    grey = torch.randn(1, 1, 96, 96)
    assert max_difference(model, reference, grey, reference_input=grey.expand(-1, 3, -1, -1)) < 1e-4


def test_checkpoint_for_1000_classes_keeps_the_backbone_for_10(checkpoint, reference):
    model = create_model("googlenet", num_classes=10, aux_logits=True, weights=checkpoint)
    assert model.fc.out_features == model.aux1.fc2.out_features == model.aux2.fc2.out_features == 10
    assert torch.equal(model.inception5b.branch4[1].conv.weight, reference.inception5b.branch4[1].conv.weight)


def test_branch3_is_torchvisions_3x3_and_the_papers_5x5():
    assert create_model("googlenet").inception3a.branch3[1].conv.kernel_size == (3, 3)
    assert create_model("googlenet_paper").inception3a.branch3[1].conv.kernel_size == (5, 5)


# --- googlenet_paper: Table 1 -----------------------------------------------------------------------

# Table 1 "output size" (H x W x C) after each layer, as printed; conv3 is the table's
# "convolution 3x3/1" row (1x1 reduce to 64, then 3x3 to 192).
TABLE_1_OUTPUT = {
    "conv1": (112, 112, 64), "maxpool1": (56, 56, 64), "conv3": (56, 56, 192), "maxpool2": (28, 28, 192),
    "inception3a": (28, 28, 256), "inception3b": (28, 28, 480), "maxpool3": (14, 14, 480),
    "inception4a": (14, 14, 512), "inception4b": (14, 14, 512), "inception4c": (14, 14, 512),
    "inception4d": (14, 14, 528), "inception4e": (14, 14, 832), "maxpool4": (7, 7, 832),
    "inception5a": (7, 7, 832), "inception5b": (7, 7, 1024), "avgpool": (1, 1, 1024),
}
# Table 1 "ops" (millions of multiply-adds) of the table's rows. 5a is left out: the table prints
# 54M, but its own columns give 1,042,432 weights on a 7x7 grid, 51M (its other rows agree).
TABLE_1_OPS = {"conv": 360, "inception3a": 128, "inception3b": 304, "inception4a": 73, "inception4b": 88,
               "inception4c": 100, "inception4d": 119, "inception4e": 170, "inception5b": 71}


@pytest.fixture(scope="module")
def paper():
    return create_model("googlenet_paper", aux_logits=True).eval()


def test_paper_layer_shapes_are_table_1s(paper):
    aux_pools = {"aux1.pool.0": (4, 4, 512), "aux2.pool.0": (4, 4, 528)}  # section 5's text
    shapes = output_shapes(paper, torch.randn(1, 3, 224, 224), [*TABLE_1_OUTPUT, *aux_pools, "fc"])
    for name, (height, width, channels) in (TABLE_1_OUTPUT | aux_pools).items():
        assert shapes[name] == (channels, height, width), name
    assert shapes["fc"] == (1000,)


def test_paper_multiply_adds_are_table_1s(paper):
    macs = conv_macs(paper, torch.randn(1, 3, 224, 224), ["conv2", "conv3", *list(TABLE_1_OPS)[1:]])
    macs["conv"] = macs.pop("conv2") + macs.pop("conv3")
    for name, millions in TABLE_1_OPS.items():
        assert abs(macs[name] / 1e6 - millions) < 1, name


def test_paper_layers_are_the_papers(paper):
    modules = list(paper.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in modules)
    assert all(m.bias is not None for m in modules if isinstance(m, nn.Conv2d))
    assert [n for n, m in paper.named_children() if isinstance(m, nn.LocalResponseNorm)] == ["lrn1", "lrn2"]
    assert paper.stages["stem"] == ("conv1", "maxpool1", "lrn1")  # LRN after the first pool...
    assert paper.stages["conv"] == ("conv2", "conv3", "lrn2", "maxpool2")  # ...and after the 3x3 conv
    assert paper.dropout.p == 0.4 and paper.aux1.dropout.p == paper.aux2.dropout.p == 0.7
    pool = paper.aux1.pool[0]
    assert isinstance(pool, nn.AvgPool2d) and (pool.kernel_size, pool.stride) == (5, 3)
    assert paper.aux1.conv.conv.out_channels == 128 and paper.aux1.fc1.out_features == 1024
    assert paper.pretrained_cfg["aux_weight"] == create_model("googlenet").pretrained_cfg["aux_weight"] == 0.3
    assert paper.pretrained_cfg["tag"] is None  # no published weights


@pytest.mark.parametrize("name", ["googlenet", "googlenet_paper"])
def test_stages_at_96_grey_are_d2ls(name):
    model = create_model(name, num_classes=10, in_chans=1).eval()
    with torch.no_grad():
        points = model.endpoints(torch.randn(1, 1, 96, 96))
    outputs = {stage: points[names[-1]] for stage, names in model.stages.items()}
    pooled = points["global_pool"]
    assert [tuple(o.shape) for o in list(outputs.values())[:4]] == [
        (1, 64, 24, 24), (1, 192, 12, 12), (1, 480, 6, 6), (1, 832, 3, 3)]
    assert pooled.shape == (1, 1024)
    assert list(outputs) == list(model.stages) == ["stem", "conv", "inception3", "inception4", "inception5"]


def test_paper_aux_losses_reach_the_whole_network():
    model = create_model("googlenet_paper", num_classes=5, aux_logits=True).train()
    _, aux = model.forward_with_aux(torch.randn(2, 3, 96, 96))
    target = torch.tensor([0, 4])
    loss = sum(model.pretrained_cfg["aux_weight"] * nn.functional.cross_entropy(a, target) for a in aux)
    loss.backward()  # aux losses only: the main head gets no gradient, the stem does
    assert model.fc.weight.grad is None
    assert model.aux1.fc2.weight.grad.abs().sum() > 0 and model.conv1.conv.weight.grad.abs().sum() > 0


# --- googlenet_small ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("in_chans", "size"), [(1, 28), (3, 32)])
def test_small_keeps_full_resolution_then_pools_twice(in_chans, size):
    model = create_model("googlenet_small", num_classes=10, in_chans=in_chans).eval()
    assert model.default_input_size == 28 and not model.has_aux
    x = torch.randn(1, in_chans, size, size)
    assert output_shapes(model, x, ["conv1"])["conv1"][1:] == (size, size)
    with torch.no_grad():
        points = model.endpoints(x)
        assert model(x).shape == (1, 10)
    outputs = {stage: points[names[-1]] for stage, names in model.stages.items()}
    assert [o.shape[-1] for o in outputs.values()] == [size // 2, size // 2, size // 4, size // 4]


def test_small_costs_20_to_60_million_multiply_adds_and_scales_with_width():
    def total(model):
        names = [n for names in model.stages.values() for n in names]
        return sum(conv_macs(model, torch.randn(1, 1, 28, 28), names).values())

    default = total(create_model("googlenet_small", num_classes=10, in_chans=1))
    assert 20e6 <= default <= 60e6
    assert total(create_model("googlenet_small", num_classes=10, in_chans=1, width=0.75)) > 2 * default
    with pytest.raises(ConfigError, match="width"):
        create_model("googlenet_small", width=0)


def test_small_runs_table_1s_blocks_up_to_last_block():
    model = create_model("googlenet_small", num_classes=10, in_chans=1, width=0.25, last_block="4e")
    assert list(model.stages["inception4"]) == [f"inception4{b}" for b in "abcde"]
    # 4e at a quarter of Table 1's widths: 256/4 + 320/4 + 128/4 + 128/4 channels into the classifier
    assert model.fc.in_features == 64 + 80 + 32 + 32
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert list(create_model("googlenet_small").stages["inception4"]) == ["inception4a", "inception4b"]
    with pytest.raises(ConfigError, match="last_block must be one of 4a, 4b, 4c, 4d, 4e"):
        create_model("googlenet_small", last_block="5b")


# --- all three ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "size", "lr"), [("googlenet", 64, 0.01), ("googlenet_paper", 64, 0.001),
                                                  ("googlenet_small", 28, 0.05)])
def test_trains(name, size, lr):
    model = create_model(name, num_classes=5, in_chans=1, dropout=0.0)
    first, last = loss_goes_down(model, size, lr=lr)
    assert last < 0.8 * first


@pytest.mark.parametrize("name", ["googlenet", "googlenet_paper", "googlenet_small"])
def test_forward_is_a_tensor_and_reset_classifier_resizes_every_head(name):
    aux = name != "googlenet_small"
    model = create_model(name, num_classes=5, in_chans=1, **({"aux_logits": True} if aux else {}))
    model.reset_classifier(7)
    x = torch.randn(2, 1, 96, 96)
    with torch.no_grad():
        for train in (True, False):
            assert type(model.train(train)(x)) is torch.Tensor and model(x).shape == (2, 7)
            logits, aux_logits = model.forward_with_aux(x)
            assert logits.shape == (2, 7) and [a.shape for a in aux_logits] == [(2, 7)] * (2 if aux else 0)
