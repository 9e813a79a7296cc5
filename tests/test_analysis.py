"""Model analysis: multiply-adds, per-layer summary, branch breakdown, smallest input, and the CLI.

Expected figures come from the issue, the papers, torchvision's published weight metadata, or
formulas written out here; never from the code under test. Counting runs on the meta device, so
even Inception-ResNet v2 costs no arithmetic.
"""

import csv
import io
import json

import pytest
import torch
import torchvision
from torch import nn

import inceptorch
from inceptorch import analysis
from inceptorch.cli import main
from inceptorch.errors import ConfigError, InputSizeError
from inceptorch.models.base import ImageClassifier

ALL_MODELS = inceptorch.list_models()
SHAPE_ERRORS = (RuntimeError, ValueError, IndexError)  # what PyTorch raises deep inside on a too-small map


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _real(model: nn.Module) -> nn.Module:
    """A model built on the meta device, given real storage filled with zeros: shapes are all we test."""
    model = model.to_empty(device="cpu").eval()
    for tensor in model.state_dict().values():
        tensor.zero_()
    return model


# ---------------------------------------------------------------------------------------------------
# count_macs


def test_count_macs_of_a_5x5_convolution_is_the_issue_figure():
    conv = nn.Conv2d(192, 32, 5, padding=2, bias=False)
    assert inceptorch.count_macs(conv, (1, 192, 28, 28)) == 120_422_400


def test_count_macs_of_the_1x1_reduction_before_the_5x5_is_the_issue_figure():
    reduced = nn.Sequential(nn.Conv2d(192, 16, 1, bias=False), nn.Conv2d(16, 32, 5, padding=2, bias=False))
    assert inceptorch.count_macs(reduced, (1, 192, 28, 28)) == 12_443_648


def test_count_macs_counts_matrix_products_per_sample():
    assert inceptorch.count_macs(nn.Linear(1024, 1000), (4, 1024)) == 4 * 1024 * 1000


def test_count_macs_of_a_plain_module_needs_the_full_input_shape():
    with pytest.raises(ConfigError, match="full input shape"):
        inceptorch.count_macs(nn.Conv2d(3, 8, 3), 224)


def test_count_macs_of_torchvision_googlenet_matches_its_published_figure():
    weights = torchvision.models.GoogLeNet_Weights.IMAGENET1K_V1
    with torch.device("meta"):
        reference = torchvision.models.googlenet(init_weights=False, aux_logits=False)
    assert inceptorch.count_macs(reference, (1, 3, 224, 224)) == pytest.approx(weights.meta["_ops"] * 1e9, rel=1e-3)


@pytest.mark.parametrize("name, size, gmacs", [
    ("googlenet", 224, 1.50),
    ("inception_v3", 299, 5.71),
    ("inception_v4", 299, 12.28),
    ("inception_resnet_v2", 299, 13.18),
    ("vgg11", 224, torchvision.models.VGG11_Weights.IMAGENET1K_V1.meta["_ops"]),
])
def test_multiply_adds_match_the_published_figures(name, size, gmacs):
    assert name in ALL_MODELS, f"model {name} is not registered"
    assert inceptorch.count_macs(name, size) == pytest.approx(gmacs * 1e9, rel=0.01)


# ---------------------------------------------------------------------------------------------------
# summary

# Table 1 of the GoogLeNet paper at 224x224: (layer, output channels, output side).
TABLE_1 = [
    ("conv1", 64, 112), ("maxpool1", 64, 56), ("conv3", 192, 56), ("maxpool2", 192, 28),
    ("inception3a", 256, 28), ("inception3b", 480, 28), ("maxpool3", 480, 14),
    ("inception4a", 512, 14), ("inception4b", 512, 14), ("inception4c", 512, 14), ("inception4d", 528, 14),
    ("inception4e", 832, 14), ("maxpool4", 832, 7), ("inception5a", 832, 7), ("inception5b", 1024, 7),
    ("avgpool", 1024, 1),
]


@pytest.mark.parametrize("name", ["googlenet", "googlenet_paper"])
def test_summary_rows_give_the_output_shapes_of_googlenet_table_1(name):
    result = inceptorch.summary(name, 224)
    shapes = {row.name: row.output_shape for row in result.rows}
    assert [shapes.get(layer) for layer, _, _ in TABLE_1] == [(1, c, s, s) for _, c, s in TABLE_1]
    assert result.output_shape == (1, 1000)


def test_summary_of_googlenet_paper_on_the_d2l_fashion_mnist_input():
    model = inceptorch.create_model("googlenet_paper", in_chans=1, num_classes=10)
    result = inceptorch.summary(model, (1, 1, 96, 96))
    stages = list(result.stage_outputs().values())
    assert stages[:4] == [(1, 64, 24, 24), (1, 192, 12, 12), (1, 480, 6, 6), (1, 832, 3, 3)]
    assert result.row("dropout").output_shape == (1, 1024)  # after global pooling and flattening
    assert result.output_shape == (1, 10)


def test_summary_default_rows_are_the_top_level_layers_when_the_blocks_are_top_level():
    model = inceptorch.create_model("googlenet")
    result = inceptorch.summary(model)
    assert [row.name for row in result.rows] == [name for name, _ in model.named_children()]
    assert result.input_size == (1, 3, 224, 224)


def test_summary_default_rows_show_blocks_inside_a_stage_with_their_siblings():
    names = [row.name for row in inceptorch.summary("mnist_inception").rows]
    assert {"features", "classifier", "features.conv1", "features.inception1", "features.conv2",
            "features.inception2"} <= set(names)
    assert not any(name.startswith("features.inception1.") for name in names)
    assert not any(name.startswith("classifier.") for name in names)


def test_summary_depth_gives_every_module_down_to_that_depth():
    model = inceptorch.create_model("mnist_inception")
    assert [r.name for r in inceptorch.summary(model, depth=1).rows] == [n for n, _ in model.named_children()]
    deeper = inceptorch.summary(model, depth=3).rows
    assert [r.name for r in deeper] == [n for n, _ in model.named_modules() if n and n.count(".") < 3]
    assert {r.depth for r in deeper} == {1, 2, 3}
    with pytest.raises(ConfigError):
        inceptorch.summary(model, depth=0)


def test_summary_totals_are_the_whole_models():
    model = inceptorch.create_model("googlenet")
    result = inceptorch.summary(model)
    assert result.params == sum(p.numel() for p in model.parameters()) == 6_624_904  # torchvision's count
    assert result.macs == inceptorch.count_macs(model)
    assert sum(row.macs for row in result.rows) == result.macs  # the top-level rows partition googlenet
    assert sum(row.params for row in result.rows) == result.params


def test_summary_converts_to_json_csv_and_text():
    result = inceptorch.summary("googlenet_small")
    data = json.loads(result.to_json())
    assert [row["name"] for row in data["rows"]] == [row.name for row in result.rows]
    assert data["macs"] == result.macs and data["blocks"][0]["branches"]
    rows = list(csv.DictReader(io.StringIO(result.to_csv())))
    assert rows[-1]["name"] == "total" and int(rows[-1]["params"]) == result.params
    branch_rows = list(csv.DictReader(io.StringIO(result.to_csv(branches=True))))
    assert len(branch_rows) == sum(len(block.branches) for block in result.blocks)
    text = str(result)
    assert "inception3a" in text and f"{result.params:,} parameters" in text


def test_summary_of_a_too_small_input_names_the_model_and_the_minimum():
    with pytest.raises(InputSizeError, match="googlenet.*15x15"):
        inceptorch.summary("googlenet", 14)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_summary_works_for_every_registered_model(name):
    with torch.device("meta"):
        model = inceptorch.create_model(name)
    result = inceptorch.summary(model)
    assert result.output_shape == (1, 1000)
    assert result.params == sum(p.numel() for p in model.parameters())
    assert 0 < max(row.macs for row in result.rows) <= result.macs


# ---------------------------------------------------------------------------------------------------
# branch breakdown


@pytest.mark.parametrize("child, branch", [
    ("branch1", "branch1"), ("branch_pool", "branch_pool"), ("branch5x5_1", "branch5x5"),
    ("branch5x5_2", "branch5x5"), ("branch1_0", "branch1"), ("branch1_1a", "branch1"),
    ("branch3x3dbl_3b", "branch3x3dbl"), ("branch7x7x3_4", "branch7x7x3"), ("conv2d", None),
])
def test_branch_of_groups_flat_children_by_their_step_names(child, branch):
    assert analysis.branch_of(child) == branch


def test_branch_breakdown_of_googlenet_paper_3a_shows_the_5x5_reduction():
    block = next(b for b in inceptorch.branch_breakdown("googlenet_paper", 224) if b.name == "inception3a")
    five = next(b for b in block.branches if b.name == "branch3")
    assert five.layers == "1x1 conv 192->16, 5x5 conv 16->32"
    assert five.macs == 28 * 28 * (192 * 16 + 16 * 32 * 25)
    assert five.params == (192 * 16 + 16) + (16 * 32 * 25 + 32)  # weights and biases: no batch norm
    assert [b.out_channels for b in block.branches] == [64, 128, 32, 32]  # Table 1: 64, 128, 32, 32
    assert sum(b.macs for b in block.branches) == block.macs


def test_branch_breakdown_of_torchvision_layout_googlenet_shows_its_3x3_in_the_5x5_branch():
    block = inceptorch.summary("googlenet").block("inception3a")
    assert block.branches[2].macs == 28 * 28 * (192 * 16 + 16 * 32 * 9)


def test_branch_breakdown_sums_the_two_ends_of_a_forking_branch():
    # Inception v3's 8x8 block (Figure 7): 320 | 384 -> (1x3: 384, 3x1: 384) | 448 -> 384 -> (384, 384) | 192
    block = inceptorch.summary("inception_v3").block("Mixed_7b")
    assert {b.name: b.out_channels for b in block.branches} == {
        "branch1x1": 320, "branch3x3": 768, "branch3x3dbl": 768, "branch_pool": 192}
    assert block.output_shape == (1, 2048, 8, 8)


def test_branch_breakdown_counts_a_functional_pooling_path_as_other_channels():
    # Mixed_6a halves 35x35x288; its max pool branch has no module and passes the 288 channels on.
    block = inceptorch.summary("inception_v3").block("Mixed_6a")
    assert block.other_channels == 288 and block.other_params == 0
    assert sum(b.out_channels for b in block.branches) + 288 == 768


def test_branch_breakdown_groups_timm_step_names_of_inception_v4():
    # Inception v4's 8x8 block (Figure 6): 256 | 384 -> (256, 256) | 384 -> 448 -> 512 -> (256, 256) | 256
    blocks = [b for b in inceptorch.branch_breakdown("inception_v4") if b.type == "InceptionC"]
    assert len(blocks) == 3
    assert [(b.name, b.out_channels) for b in blocks[0].branches] == [
        ("branch0", 256), ("branch1", 512), ("branch2", 512), ("branch3", 256)]


def test_branch_breakdown_of_a_residual_block_keeps_its_projection_outside_the_branches():
    # Inception-ResNet v2's 35x35 block (Figure 16): 32 | 32 -> 32 | 32 -> 48 -> 64, then 1x1 128 -> 320
    block = inceptorch.summary("inception_resnet_v2").block("repeat.0")
    assert [b.out_channels for b in block.branches] == [32, 32, 64]
    assert block.other_params == 128 * 320 + 320
    assert block.other_channels is None


# ---------------------------------------------------------------------------------------------------
# smallest input


class _TwoConvNet(ImageClassifier):
    """3x3 conv, 2x2 max pool, 3x3 conv, no padding: by hand, s - 2 >= 2 and (s - 2) // 2 >= 3, so s >= 8."""

    def __init__(self):
        super().__init__(num_classes=2, in_chans=1)
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3))
        self.fc = nn.Linear(4, 2)

    def forward_features(self, x):
        return self.features(x)

    def forward_head(self, features):
        return self.fc(features.mean((2, 3)))


def test_min_input_size_of_a_hand_counted_net():
    model = _TwoConvNet().eval()
    assert inceptorch.min_input_size(model) == 8
    model(torch.randn(1, 1, 8, 8))
    with pytest.raises(SHAPE_ERRORS):
        model.forward(torch.randn(1, 1, 7, 7))  # .forward skips the input check: PyTorch's own failure
    with pytest.raises(InputSizeError, match="7x7.*8x8"):
        model(torch.randn(1, 1, 7, 7))


@pytest.mark.parametrize("name, weights", [
    ("googlenet", torchvision.models.GoogLeNet_Weights.IMAGENET1K_V1),
    ("inception_v3", torchvision.models.Inception_V3_Weights.IMAGENET1K_V1),
    ("vgg11", torchvision.models.VGG11_Weights.IMAGENET1K_V1),
])
def test_min_input_size_matches_torchvisions_published_minimum(name, weights):
    with torch.device("meta"):
        model = inceptorch.create_model(name)
    assert inceptorch.min_input_size(model) == weights.meta["min_size"][0]


BIG_MODELS = {"inception_v3", "inception_v4", "inception_resnet_v1", "inception_resnet_v2"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in BIG_MODELS else n
                                  for n in ALL_MODELS])
def test_every_model_runs_at_its_smallest_input_and_fails_one_below(name):
    with torch.device("meta"):
        model = inceptorch.create_model(name)
    smallest = model.min_input_size  # computed by min_input_size, kept for the input check
    model = _real(model)
    with torch.no_grad():
        assert model(torch.randn(1, 3, smallest, smallest)).shape == (1, 1000)
        if smallest > 1:
            with pytest.raises(SHAPE_ERRORS):
                model.forward(torch.randn(1, 3, smallest - 1, smallest - 1))


def test_too_small_input_to_googlenet_names_the_model_the_size_and_the_minimum():
    model = inceptorch.create_model("googlenet").eval()
    with torch.no_grad():
        model(torch.randn(1, 3, 15, 15))
        with pytest.raises(InputSizeError) as error:
            model(torch.randn(1, 3, 14, 14))
    assert "googlenet" in str(error.value) and "14x14" in str(error.value) and "15" in str(error.value)


def _check_train_minimum(name: str) -> int:
    """The train-mode-with-aux minimum, checked by real passes at it (runs) and one below (fails)."""
    with torch.device("meta"):
        model = inceptorch.create_model(name, aux_logits=True)
    smallest = inceptorch.min_input_size(model, train=True)
    model = _real(model).train()
    with torch.no_grad():
        logits, aux = model.forward_with_aux(torch.randn(2, 3, smallest, smallest))
        assert logits.shape == (2, 1000) and aux and all(a.shape == (2, 1000) for a in aux)
        with pytest.raises(SHAPE_ERRORS + (InputSizeError,)):
            model.forward_with_aux(torch.randn(2, 3, smallest - 1, smallest - 1))
    return smallest


def test_train_minimum_of_googlenet_paper_is_set_by_its_aux_heads_5x5_pool():
    # The paper's aux heads average-pool 5x5 with stride 3 the output of 4a, so they need more than the trunk.
    with torch.device("meta"):
        without_aux = inceptorch.create_model("googlenet_paper")
    assert _check_train_minimum("googlenet_paper") > inceptorch.min_input_size(without_aux)


@pytest.mark.slow
def test_inception_v3_with_aux_head_needs_299_in_training():
    assert _check_train_minimum("inception_v3") == 299  # the issue's figure


# ---------------------------------------------------------------------------------------------------
# compare and the CLI


def test_compare_shows_googlenet_with_about_12_times_fewer_parameters_than_alexnet(capsys):
    code, out, _ = _run(capsys, "compare", "alexnet", "vgg11", "nin", "googlenet", "--format", "json")
    assert code == 0
    rows = {row["model"]: row for row in json.loads(out)}
    assert list(rows) == ["alexnet", "vgg11", "nin", "googlenet"]
    assert rows["googlenet"]["params"] == 6_624_904
    assert 9 <= rows["alexnet"]["params"] / rows["googlenet"]["params"] <= 15
    assert rows["googlenet"]["params_vs_first"] == pytest.approx(6_624_904 / rows["alexnet"]["params"])
    assert rows["googlenet"]["min_input"] == 15


def test_compare_table_has_the_ratio_column_and_the_train_minimum_where_it_differs(capsys):
    code, out, _ = _run(capsys, "compare", "googlenet", "googlenet_paper")
    assert code == 0
    assert "params vs googlenet" in out.splitlines()[0]
    paper_row = next(line for line in out.splitlines() if line.startswith("googlenet_paper"))
    assert "train+aux" in paper_row


def test_compare_bench_reports_cpu_throughput(capsys):
    code, out, _ = _run(capsys, "compare", "lenet", "--bench", "--format", "csv")
    assert code == 0
    (row,) = csv.DictReader(io.StringIO(out))
    assert row["model"] == "lenet" and float(row["images_per_s"]) > 0


def test_cli_summary_json_has_rows_totals_and_branches(capsys):
    code, out, _ = _run(capsys, "summary", "googlenet", "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert data["macs"] == pytest.approx(1.50e9, rel=0.01)
    assert data["input_size"] == [1, 3, 224, 224]
    assert "inception3a" in [row["name"] for row in data["rows"]]
    assert len(data["blocks"]) == 9


def test_cli_summary_csv_has_a_header_and_a_total_row(capsys):
    code, out, _ = _run(capsys, "summary", "mnist_inception", "--format", "csv", "--depth", "2")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["name", "type", "depth", "output_shape", "params", "macs", "stage",
                            "receptive_field", "effective_stride"]
    assert rows[-1]["name"] == "total" and all(int(row["depth"]) <= 2 for row in rows)


def test_cli_summary_branches_table_shows_the_reduction(capsys):
    code, out, _ = _run(capsys, "summary", "googlenet_paper", "--input", "1x96x96", "--num-classes", "10",
                        "--branches")
    assert code == 0
    assert "1x64x24x24" in out and "1x1024x3x3" in out
    assert "1x1 conv 192->16, 5x5 conv 16->32" in out
    assert f"{12 * 12 * (192 * 16 + 16 * 32 * 25):,}" in out  # the 5x5 branch of 3a at 12x12


def test_cli_summary_of_a_too_small_input_is_a_one_line_error(capsys):
    code, out, err = _run(capsys, "summary", "googlenet", "--input", "14")
    assert code == 2 and not out
    assert "15x15" in err and len(err.strip().splitlines()) == 1
