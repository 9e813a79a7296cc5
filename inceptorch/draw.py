"""Pictures of a network as the papers draw them: one Inception block, or a whole model as a column.

Everything comes from the module and one meta-device pass (``analysis.trace_model``), never from a
table of hand-drawn figures, so a user's modified block draws as it is. A block's branches are its
``branch*`` children; a branch's boxes are its convolutions and pools in the order they ran, side
by side where the branch forks (Inception v3's 1x3 and 3x1). A pool or a residual sum written as a
function in ``forward`` is found among the operators the pass saw. Figures are matplotlib
``Figure`` objects made without pyplot: nothing global stays open, nothing needs closing.
"""

import io
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyBboxPatch
from torch import nn

from .analysis import (
    block_breakdown,
    branch_of,
    full_input_size,
    is_inception_block,
    join_names,
    layer_parts,
    model_for_input,
    trace_model,
)
from .errors import ConfigError
from .models import model_entry
from .outputs import writable_file
from .summary import Summary, summary
from .tables import human
from .weights import write_atomically

COLOURS = {"reduce": "#fff2b3", "conv": "#cfe3f7", "pool": "#f7cfcf", "concat": "#d3efd0", "input": "#e6e6e6",
           "block": "#d3efd0", "other": "#eeeeee", "sum": "#ffffff", "scale": "#f3e3f7"}
BOX_W, BOX_H, SLOT_GAP, COLUMN_GAP, LEVEL_H = 1.5, 0.36, 0.1, 0.3, 0.62
FORMATS = (".svg", ".png", ".pdf")


def paper_label(module: nn.Module) -> str | None:
    """'5x5 conv, 32', '3x3 max pool', '3x3 conv, 384 /2': a layer as the papers' figures label it."""
    parts = layer_parts(module)
    return parts.text(paper=True) if parts else None


def _kind(module: nn.Module) -> str:
    parts = layer_parts(module)
    if parts is None:
        return "other"
    return "pool" if parts.kind != "conv" else "reduce" if parts.kernel == "1x1" else "conv"


def _hwc(shape) -> str:
    """(1, 192, 28, 28) -> '28x28x192', as the papers write a grid."""
    if not shape:
        return "?"
    return "x".join(map(str, (*shape[2:], shape[1]))) if len(shape) > 2 else str(shape[-1])


# ---------------------------------------------------------------------------------------------------
# A block's layout, computed from its children and the pass


@dataclass
class Box:
    label: str
    kind: str  # a key of COLOURS
    level: int  # 0: reads the block's input
    producer: int | None  # the box of the same column it reads; None: the block's input
    slot: int = 0  # place among the column's boxes at the same level


@dataclass
class Column:
    """One branch: its boxes, and the channels, parameters and multiply-adds written under it."""

    name: str
    boxes: list[Box]
    out_channels: int | None
    params: int
    macs: int

    @property
    def slots(self) -> int:
        return max(sum(b.level == level for b in self.boxes) for level in {b.level for b in self.boxes})


@dataclass
class BlockLayout:
    name: str
    type: str
    input_shape: tuple | None
    output_shape: tuple | None
    params: int
    macs: int
    columns: list[Column]
    residual: bool  # a sum with the block's input: a shortcut is drawn
    before_sum: list[tuple[str, str]] = field(default_factory=list)  # (label, kind) after the concatenation
    scale: float | None = None
    after_sum: list[tuple[str, str]] = field(default_factory=list)

    def labels(self) -> list[str]:
        return [b.label for c in self.columns for b in c.boxes]


def _units(model: nn.Module, name: str) -> list[str]:
    """A branch's steps: the children of a Sequential, opened all the way down; else the module."""
    module = model.get_submodule(name)
    if isinstance(module, nn.Sequential):
        return [unit for child, _ in module.named_children() for unit in _units(model, join_names(name, child))]
    return [name]


def _labelled(trace, name: str) -> list[tuple[str, str]]:
    """(label, kind) of each convolution and pool inside module ``name``, in the order they ran."""
    ran = dict.fromkeys(n for n in trace.call_order if n == name or n.startswith(name + "."))
    modules = [trace.model.get_submodule(n) for n in ran]
    return [(paper_label(m), _kind(m)) for m in modules if paper_label(m)]


def _pool_label(op) -> str:
    stride = "" if max(op.stride) == 1 else f" /{op.stride[0]}"
    return f"{'x'.join(map(str, op.kernel))} {op.kind}{stride}"


def block_layout(trace, name: str) -> BlockLayout:
    """The picture of block ``name`` of a traced model, as data: columns of boxes and the residual tail."""
    block = trace.model.get_submodule(name)
    breakdown = block_breakdown(trace, name, block)
    children = {child: join_names(name, child) for child, _ in block.named_children()}
    start, end = trace.spans.get(name, (0, 0))
    inside_children = {i for child in children.values() if child in trace.spans for i in range(*trace.spans[child])}
    functional = {id(trace.ops[i].output): trace.ops[i] for i in range(start, end) if i not in inside_children}
    block_input = trace.inputs.get(name, (None,))[0]
    consumed = set()
    columns = []
    for row in breakdown.branches:
        units = [u for child, full in children.items() if branch_of(child) == row.name for u in _units(trace.model, full)]
        boxes, made = [], {}
        for unit in sorted((u for u in units if u in trace.outputs), key=trace.call_order.index):
            source = trace.inputs[unit][0]
            consumed.add(id(source))
            producer = made.get(id(source))
            if producer is None and id(source) in functional and functional[id(source)].kind != "add":
                boxes.append(Box(_pool_label(functional[id(source)]), "pool", 0, None))
                producer = made[id(source)] = len(boxes) - 1
            for label, kind in _labelled(trace, unit):
                level = boxes[producer].level + 1 if producer is not None else 0
                boxes.append(Box(label, kind, level, producer))
                producer = len(boxes) - 1
            made[id(trace.outputs[unit])] = producer
        if not boxes:  # a branch of modules that are neither convolutions nor pools
            boxes.append(Box(type(trace.model.get_submodule(units[0])).__name__, "other", 0, None))
        columns.append(Column(row.name, boxes, row.out_channels, row.params, row.macs))
    for op in functional.values():  # a pool written in forward that no branch reads: a path of its own
        if op.kind != "add" and id(op.output) not in consumed and any(t is block_input for t in op.inputs):
            columns.append(Column(op.kind, [Box(_pool_label(op), "pool", 0, None)],
                                  breakdown.other_channels, 0, 0))
    for column in columns:
        for level in {b.level for b in column.boxes}:
            for slot, box in enumerate(b for b in column.boxes if b.level == level):
                box.slot = slot
    sums = [i for i in range(start, end) if i not in inside_children and trace.ops[i].kind == "add"
            and any(t is block_input for t in trace.ops[i].inputs)]
    layout = BlockLayout(name, type(block).__name__, tuple(block_input.shape) if block_input is not None else None,
                         breakdown.output_shape, breakdown.params, breakdown.macs, columns, residual=bool(sums))
    for child, full in children.items():
        if branch_of(child) is not None or full not in trace.spans:
            continue
        module = trace.model.get_submodule(full)
        steps = [(f"{label} (linear)" if isinstance(module, nn.Conv2d) else label, kind)
                 for label, kind in _labelled(trace, full)]
        if isinstance(module, (nn.ReLU, nn.ReLU6)):
            steps = [("ReLU", "other")]
        after = bool(sums) and trace.spans[full][0] >= sums[0]
        (layout.after_sum if after else layout.before_sum).extend(steps)
    scale = getattr(block, "scale", None)
    if layout.residual and isinstance(scale, (int, float)) and scale != 1:
        layout.scale = float(scale)
    return layout


# ---------------------------------------------------------------------------------------------------
# Drawing


def _box(ax, x, y, text, kind, width=BOX_W, height=BOX_H, gid=None, size=8):
    patch = FancyBboxPatch((x - width / 2, y - height / 2), width, height, boxstyle="round,pad=0,rounding_size=0.06",
                           facecolor=COLOURS[kind], edgecolor="#555555", linewidth=0.8, zorder=2)
    if gid:
        patch.set_gid(gid)
    ax.add_patch(patch)
    ax.text(x, y, text, ha="center", va="center", fontsize=size, zorder=3)
    return patch


def _line(ax, points, arrow=True):
    (x0, y0), (x1, y1) = points[-2], points[-1]
    if len(points) > 2:
        ax.plot([p[0] for p in points[:-1]], [p[1] for p in points[:-1]], color="#555555", lw=0.8, zorder=1)
    ax.annotate("", xy=(x1, y1), xytext=(x0, y0), zorder=1,
                arrowprops={"arrowstyle": "-|>" if arrow else "-", "color": "#555555", "lw": 0.8,
                            "shrinkA": 0, "shrinkB": 0, "mutation_scale": 8})


def _canvas(width: float, height: float) -> tuple[Figure, object]:
    """A figure whose data units are inches, so boxes and text keep their sizes in every picture."""
    fig = Figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_axis_off()
    return fig, ax


def draw_block(layout: BlockLayout) -> Figure:
    """Previous layer at the bottom, a column per branch, the filter concatenation on top; for a
    residual block the linear projection, the scale and the sum with the shortcut above it."""
    widths = [c.slots * (BOX_W + SLOT_GAP) - SLOT_GAP for c in layout.columns]
    left = 0.35 + (0.55 if layout.residual else 0)
    span = sum(widths) + COLUMN_GAP * (len(widths) - 1)
    tail = len(layout.before_sum) + (layout.scale is not None) + layout.residual + len(layout.after_sum)
    levels = max(b.level for c in layout.columns for b in c.boxes) + 1
    base = 1.75
    concat_y = base + levels * LEVEL_H
    title = (f"{layout.name or 'block'} ({layout.type})\n{_hwc(layout.input_shape)} -> {_hwc(layout.output_shape)}, "
             f"{layout.params:,} params, {layout.macs:,} MACs")
    width = max(left + span + 0.35, 4.6)
    height = concat_y + tail * LEVEL_H + 1.05
    fig, ax = _canvas(width, height)
    middle = left + span / 2
    _box(ax, middle, 0.35, f"Previous layer  {_hwc(layout.input_shape)}", "input", width=span)
    x = left
    for column, column_width in zip(layout.columns, widths):
        centre = x + column_width / 2
        top_aligned = levels - 1 - max(b.level for b in column.boxes)  # the papers end every branch on one row
        spots = {}
        for i, box in enumerate(column.boxes):
            count = sum(b.level == box.level for b in column.boxes)
            spots[i] = (centre + (box.slot - (count - 1) / 2) * (BOX_W + SLOT_GAP),
                        base + (box.level + top_aligned) * LEVEL_H)
            bx, by = spots[i]
            start = (bx, 0.35 + BOX_H / 2) if box.producer is None else (spots[box.producer][0],
                                                                          spots[box.producer][1] + BOX_H / 2)
            _line(ax, [start, (bx, by - BOX_H / 2)])
            _box(ax, bx, by, box.label, box.kind)
        for i, (bx, by) in spots.items():
            if not any(b.producer == i for b in column.boxes):
                _line(ax, [(bx, by + BOX_H / 2), (bx, concat_y - BOX_H / 2)])
        channels = f"{column.out_channels} channels" if column.out_channels else "channels ?"
        ax.text(centre, 1.0, f"{column.name}\n{channels}\n{column.params:,} params\n{column.macs:,} MACs",
                ha="center", va="center", fontsize=6.5, color="#333333", linespacing=1.15, zorder=3,
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 1})
        x += column_width + COLUMN_GAP
    _box(ax, middle, concat_y, f"Filter concatenation  {_hwc(layout.output_shape) if not tail else ''}".rstrip(),
         "concat", width=span)
    y = concat_y
    steps = [*layout.before_sum, *([(f"x {layout.scale:g}  scale", "scale")] if layout.scale is not None else [])]
    for label, kind in steps:
        _line(ax, [(middle, y + BOX_H / 2), (middle, y + LEVEL_H - BOX_H / 2)])
        y += LEVEL_H
        _box(ax, middle, y, label, kind)
    if layout.residual:
        _line(ax, [(middle, y + BOX_H / 2), (middle, y + LEVEL_H - 0.14)])
        y += LEVEL_H
        ax.add_patch(Circle((middle, y), 0.14, facecolor="white", edgecolor="#555555", lw=0.8, zorder=2))
        ax.text(middle, y, "+", ha="center", va="center", fontsize=11, zorder=3)
        lane = left - 0.4
        _line(ax, [(left, 0.35), (lane, 0.35), (lane, y), (middle - 0.14, y)])
        ax.text(lane - 0.08, (0.35 + y) / 2, "shortcut (identity)", rotation=90, ha="right", va="center",
                fontsize=7, color="#333333")
        ax.text(middle + 0.22, y, "sum", ha="left", va="center", fontsize=7, color="#333333")
        for label, kind in layout.after_sum:
            _line(ax, [(middle, y + 0.14), (middle, y + LEVEL_H - BOX_H / 2)])
            y += LEVEL_H
            _box(ax, middle, y, label, kind)
    ax.text(0.2, height - 0.35, title, ha="left", va="center", fontsize=9, weight="bold", linespacing=1.4)
    return fig


def draw_model(result: Summary, model: nn.Module) -> Figure:
    """The stages as a column, input at the bottom: each Inception block one box with its output
    shape, the pools between grids, aux heads beside the layer they read, and a bar per layer
    for its share of the multiply-adds. Block boxes carry the SVG id ``block-NAME``."""
    aux = set(getattr(model, "aux_heads", ()))
    names = [r.name for r in result.rows]
    rows = [r for r in result.rows if r.name.split(".")[0] not in aux
            and not any(n.startswith(r.name + ".") for n in names)]
    blocks = {b.name for b in result.blocks}
    row_h, box_w, x_box, bar_w = 0.3, 3.3, 1.5, 1.5
    x_bar = x_box + box_w + 0.2
    taps = {tap: head for tap, head in getattr(model, "aux_taps", {}).items()
            if getattr(model, head, None) is not None}
    width = x_bar + bar_w + (2.9 if taps else 0.6)
    height = (len(rows) + 2) * row_h + 0.7
    fig, ax = _canvas(width, height)
    modules = dict(model.named_modules())
    biggest = max((r.macs for r in rows), default=0) or 1
    heads = " (aux heads included)" if taps else ""
    ax.text(0.2, height - 0.3, f"{result.model}: {result.params:,} params{heads}, {human(result.macs)} MACs "
            f"({_hwc(result.input_size)} input)", ha="left", va="center", fontsize=9, weight="bold")
    ax.text(x_bar + 0.05, (len(rows) + 1) * row_h + 0.05, "share of MACs", fontsize=6.5, color="#333333")
    _box(ax, x_box + box_w / 2, row_h / 2 + 0.05, f"input  {_hwc(result.input_size)}", "input", box_w, 0.22, size=7)
    ys = {}
    for i, r in enumerate(rows, start=1):
        y = ys[r.name] = i * row_h + row_h / 2 + 0.05
        module = modules[r.name]
        inner = _labelled_modules(module)
        kind = "block" if r.name in blocks else _kind(inner[0]) if len(inner) == 1 else "other"
        what = r.type if r.name in blocks or len(inner) != 1 else paper_label(inner[0])
        _line(ax, [(x_box + box_w / 2, y - row_h + 0.11), (x_box + box_w / 2, y - 0.11)])
        _box(ax, x_box + box_w / 2, y, "", kind, box_w, 0.22, gid=f"block-{r.name}" if r.name in blocks else None)
        ax.text(x_box + 0.08, y, f"{r.name}  {what}", ha="left", va="center", fontsize=7, zorder=3)
        ax.text(x_box + box_w - 0.08, y, _hwc(r.output_shape), ha="right", va="center", fontsize=7, zorder=3)
        share = r.macs / result.macs if result.macs else 0
        if r.macs:
            ax.add_patch(FancyBboxPatch((x_bar, y - 0.07), bar_w * r.macs / biggest, 0.14, boxstyle="square,pad=0",
                                        facecolor="#7fa7d9", edgecolor="none"))
            ax.text(x_bar + bar_w * r.macs / biggest + 0.05, y, f"{share:.1%}", va="center", fontsize=6)
    stage_rows: dict[str, list[float]] = {}
    for r in rows:
        if r.stage:
            stage_rows.setdefault(r.stage, []).append(ys[r.name])
    for stage, stage_ys in stage_rows.items():
        low, high = min(stage_ys) - 0.11, max(stage_ys) + 0.11
        ax.plot([x_box - 0.12, x_box - 0.18, x_box - 0.18, x_box - 0.12], [low, low, high, high], color="#777777", lw=0.8)
        ax.text(x_box - 0.25, (low + high) / 2, stage, ha="right", va="center", fontsize=7, color="#333333")
    for tap, head in taps.items():  # between two rows, clear of the bars
        if tap in ys:
            y, x = ys[tap] + row_h / 2, x_bar + bar_w + 0.5
            _line(ax, [(x_box + box_w, ys[tap]), (x_box + box_w + 0.1, y), (x, y)])
            params = sum(p.numel() for p in modules[head].parameters())
            _box(ax, x + 1.1, y, f"{head}: auxiliary head\n{params:,} params", "other", 2.2, 0.36, size=7)
    return fig


def _labelled_modules(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if layer_parts(m) is not None]


# ---------------------------------------------------------------------------------------------------
# The public door, and files


def drawable_model(model_or_name, input_size=None) -> nn.Module:
    """A module as it is; a registered model's name built on the meta device, with its aux heads."""
    if isinstance(model_or_name, str):
        aux = {"aux_logits": True} if model_entry(model_or_name).has_aux else {}
        return model_for_input(model_or_name, input_size, **aux)
    return model_or_name


def block_names(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if is_inception_block(module)]


def draw(model_or_name, block: str | None = None, input_size=None) -> Figure:
    """A matplotlib Figure: Inception block ``block`` of the model as its paper draws it, or, with
    no block, the whole model as a column of stages. ``model_or_name`` is a registered model's
    name (built with its aux heads, on the meta device) or any module; a module that is itself an
    Inception block draws as one, given the full ``input_size`` it takes."""
    model = drawable_model(model_or_name, input_size)
    if block is None and is_inception_block(model):
        block = ""
    if block is None:
        return draw_model(summary(model, input_size), model)
    names = block_names(model)
    if block not in names:
        shown = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
        raise ConfigError(f"no Inception block named '{block}' in {getattr(model, 'model_name', type(model).__name__)}"
                          f": choose one of {shown or '(it has none)'}")
    trace = trace_model(model, full_input_size(model, input_size))
    return draw_block(block_layout(trace, block))


def _rc():
    """Text stays text in SVG (searchable, selectable, small); ids are stable from run to run."""
    return matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "inceptorch", "font.family": "DejaVu Sans"})


def svg_text(fig: Figure) -> str:
    out = io.StringIO()
    with _rc():
        fig.savefig(out, format="svg")
    return out.getvalue()


def save_figure(fig: Figure, path, dpi: int = 150) -> Path:
    """Writes ``fig`` as .svg, .png or .pdf (by the suffix); a file is only ever complete or absent."""
    path = writable_file(path, FORMATS)
    out = io.BytesIO()
    with _rc():
        fig.savefig(out, format=path.suffix[1:].lower(), dpi=dpi)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, out.getvalue())
    return path
