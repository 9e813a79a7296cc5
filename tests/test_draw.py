"""Pictures and pages of the network: checked by what they hold, never by pixels.

Expected figures are written out by hand from Table 1 of the GoogLeNet paper (layer widths, kernel
sizes, strides) and TF-slim's published parameter count, never taken from the code under test.
"""

import re
import struct

import pytest
import torch
from matplotlib.image import imread
from torch import nn

import inceptorch
from inceptorch.analysis import branch_of, full_input_size, trace_model
from inceptorch.cli import main
from inceptorch.draw import block_layout, block_names, draw, draw_block, drawable_model, save_figure, svg_text
from inceptorch.errors import ConfigError
from inceptorch.models.layers import Branches, ConvBNAct

ALL_MODELS = inceptorch.list_models()


def _svg_texts(svg: str) -> str:
    """The text of every <text> element (matplotlib may split none: svg.fonttype none keeps each whole)."""
    return "\n".join(re.findall(r"<text[^>]*>([^<]*)</text>", svg))


def test_inception3a_svg_names_every_layer_and_the_5x5_branch_cost(tmp_path):
    assert main(["draw", "googlenet_paper", "--block", "inception3a", "--out", str(tmp_path / "3a.svg")]) == 0
    text = _svg_texts((tmp_path / "3a.svg").read_text())
    # Figure 2(b) with Table 1's widths for 3a: 64 | 96 -> 128 | 16 -> 32 | pool -> 32.
    for label in ["1x1 conv, 64", "1x1 conv, 96", "3x3 conv, 128", "1x1 conv, 16", "5x5 conv, 32",
                  "3x3 max pool", "1x1 conv, 32", "Filter concatenation", "Previous layer  28x28x192"]:
        assert label in text, label
    # 5x5 branch: 28*28*16*192 (1x1 reduce) + 28*28*32*5*5*16 (5x5) multiply-adds.
    assert f"{28 * 28 * 16 * 192 + 28 * 28 * 32 * 5 * 5 * 16:,} MACs" == "12,443,648 MACs"
    assert "12,443,648 MACs" in text
    # its parameters: 192*16 + 16 and 16*32*25 + 32 (the paper's network has biases, no BN)
    assert f"{192 * 16 + 16 + 16 * 32 * 25 + 32:,} params" in text


def test_residual_block_draws_shortcut_projection_scale_and_sum():
    text = _svg_texts(svg_text(draw("inception_resnet_v2", block="repeat.0")))
    # Figure 16: 1x1 32 | 1x1 32 -> 3x3 32 | 1x1 32 -> 3x3 48 -> 3x3 64, 1x1 linear to 320, scale 0.17
    for label in ["3x3 conv, 48", "3x3 conv, 64", "1x1 conv, 320 (linear)", "x 0.17  scale", "+",
                  "shortcut (identity)", "ReLU"]:
        assert label in text, label


def test_inception_v3_draws_its_functional_pools_and_forks():
    text = _svg_texts(svg_text(draw("inception_v3", block="Mixed_7b")))
    assert "3x3 avg pool" in text  # F.avg_pool2d in forward, before branch_pool's 1x1
    assert text.count("1x3 conv, 384") == 2 and text.count("3x1 conv, 384") == 2  # Figure 7's side-by-side pairs
    text = _svg_texts(svg_text(draw("inception_v3", block="Mixed_6a")))
    assert "3x3 max pool /2" in text and "3x3 conv, 384 /2" in text  # Figure 10's grid reduction


@pytest.mark.parametrize("name", ALL_MODELS)
def test_every_block_of_every_model_draws(name):
    """Every block is laid out from one pass; each distinct block (by structure and input) is drawn."""
    model = drawable_model(name)
    svg = svg_text(draw(model))  # the whole model
    blocks = block_names(model)
    assert all(f'id="block-{b}"' in svg for b in blocks)
    trace = trace_model(model, full_input_size(model))
    drawn = set()
    for block in blocks:
        layout = block_layout(trace, block)
        branches = sum(branch_of(child) is not None for child, _ in model.get_submodule(block).named_children())
        assert len(layout.columns) >= 2 and all(c.boxes for c in layout.columns), block
        assert sum(c.out_channels or 0 for c in layout.columns) == layout.output_shape[1] or layout.residual
        assert len({c.name for c in layout.columns} - {"max pool", "avg pool"}) <= branches
        key = (repr(model.get_submodule(block)), layout.input_shape)
        if key not in drawn:
            drawn.add(key)
            text = _svg_texts(svg_text(draw_block(layout)))
            assert "Filter concatenation" in text and " MACs" in text, block


def test_a_users_modified_block_draws_as_it_is():
    class Mine(Branches):  # a 7x7 branch and a dilated 3x3 instead of the paper's
        def __init__(self):
            super().__init__()
            self.branch_a = ConvBNAct(64, 8, 1)
            self.branch_b = nn.Sequential(ConvBNAct(64, 4, 1), ConvBNAct(4, 8, 7, padding=3))
            self.branch_c = nn.Sequential(nn.AvgPool2d(5, stride=1, padding=2), ConvBNAct(64, 8, 1))

    text = _svg_texts(svg_text(draw(Mine(), input_size=(1, 64, 14, 14))))
    assert {"1x1 conv, 8", "1x1 conv, 4", "7x7 conv, 8", "5x5 avg pool"} <= set(text.split("\n"))
    assert f"{14 * 14 * 8 * 4 * 49 + 14 * 14 * 4 * 64:,} MACs" in text


def test_png_has_the_figure_size_and_is_not_blank(tmp_path):
    fig = draw("googlenet_paper", block="inception3a")
    path = save_figure(fig, tmp_path / "3a.png", dpi=100)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == tuple(round(s * 100) for s in fig.get_size_inches())
    assert width >= 4 * 150  # four branch columns of 1.5-inch boxes
    pixels = imread(path)[..., :3]
    assert (pixels.min(axis=2) < 0.9).mean() > 0.1  # boxes and text cover a good part of it
    assert len({tuple(p) for p in (pixels[::7, ::7] * 255).astype(int).reshape(-1, 3)}) > 8  # several colours


def test_draw_refuses_an_unknown_block_and_a_bad_suffix(tmp_path, capsys):
    with pytest.raises(ConfigError, match="no Inception block named 'inception9z'.*inception3a"):
        draw("googlenet", block="inception9z")
    assert main(["draw", "googlenet", "--out", str(tmp_path / "g.jpg")]) == 2
    assert "must end in .svg, .png, .pdf" in capsys.readouterr().err
    assert not (tmp_path / "g.jpg").exists()


# ---------------------------------------------------------------------------------------------------
# summary: receptive fields and the parameter split


def test_receptive_fields_of_googlenet_by_hand():
    result = inceptorch.summary("googlenet_paper")
    rf = {r.name: (r.receptive_field, r.effective_stride) for r in result.rows}
    # r_out = r_in + (k - 1) * j_in, j_out = j_in * s
    assert rf["conv1"] == ((7, 7), (2, 2))  # 7x7/2
    assert rf["maxpool1"] == ((11, 11), (4, 4))  # 7 + 2*2, 3x3/2
    assert rf["conv2"] == ((11, 11), (4, 4))  # 1x1
    assert rf["conv3"] == ((19, 19), (4, 4))  # 11 + 2*4
    assert rf["maxpool2"] == ((27, 27), (8, 8))  # 19 + 2*4, 3x3/2
    assert rf["inception3a"] == ((27 + 4 * 8,) * 2, (8, 8))  # its widest path, the 5x5: 59


def test_receptive_field_of_a_factorized_and_dilated_stack():
    model = nn.Sequential(nn.Conv2d(1, 1, (1, 7), padding=(0, 3)), nn.Conv2d(1, 1, 3, stride=2, dilation=2))
    result = inceptorch.summary(model, (1, 1, 32, 32), depth=1)
    assert result.row("0").receptive_field == (1, 7)
    assert result.row("1").receptive_field == (1 + 4, 7 + 4) and result.row("1").effective_stride == (2, 2)


def test_parameter_split_reads_tf_slims_inception_v1_count():
    split = inceptorch.summary("googlenet").split
    # TF-slim's Inception v1: 5,607,184 = conv weights + BN offsets + BN moving mean and variance.
    assert split.by_kind["conv weights"] + split.by_kind["BN offsets"] + split.bn_statistics == 5_607_184
    assert split.by_kind["BN offsets"] == split.by_kind["BN scales"] == 7_280  # 57 BN layers, 7,280 channels
    assert split.head == 1024 * 1000 + 1000 and split.backbone + split.head == 6_624_904  # torchvision's count
    assert split.trainable == 6_624_904 and split.frozen == 0


def test_parameter_split_follows_freezing(capsys):
    model = inceptorch.freeze(inceptorch.create_model("googlenet_small", num_classes=10), "backbone")
    split = inceptorch.summary(model).split
    assert split.trainable == split.head and split.frozen == split.backbone
    assert main(["summary", "googlenet"]) == 0
    out = capsys.readouterr().out
    assert "conv weights 5,585,344" in out and "batch-norm running means and variances 14,560" in out


# ---------------------------------------------------------------------------------------------------
# explorer and comparison pages (their browser test: test_explore_browser.py)


def test_explorer_page_needs_no_network(tmp_path):
    assert main(["explore", "inception_resnet_v2", "--out", str(tmp_path / "m.html")]) == 0
    page = (tmp_path / "m.html").read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing fetched from elsewhere
    assert "@import" not in page and "url(http" not in page
    assert page.count('data-block="repeat_1.') == 20  # every B block a row; they share one picture
    assert page.count('class="block-picture"') < 10
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))  # prefixed ids: the pictures cannot collide


def test_compare_writes_page_and_chart(tmp_path, capsys):
    code = main(["compare", "googlenet", "inception_v3", "alexnet", "--out", str(tmp_path / "c.html"),
                 "--plot", str(tmp_path / "c.png")])
    assert code == 0
    page = (tmp_path / "c.html").read_text()
    assert "Multiply-adds against parameters" in page and "parameters (millions)" in page
    assert "69.78%" in page  # torchvision's googlenet weights report acc@1 69.778
    assert imread(tmp_path / "c.png").shape[0] > 300
    assert main(["compare", "googlenet", "--out", str(tmp_path / "c.png")]) == 2


def test_meta_tracing_keeps_drawing_cheap():
    """Drawing never allocates weights: a name is built on the meta device."""
    assert all(p.device == torch.device("meta") for p in drawable_model("inception_resnet_v2").parameters())
