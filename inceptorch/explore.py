"""Self-contained HTML pages: the model explorer and the comparison of models, readable offline.

Each page is one file: the pictures are matplotlib SVGs written inline (text kept as text), the
script and the styles inline too, no CDN, no web font. A block's picture is drawn once for every
distinct block (Inception-ResNet's twenty identical B blocks share one), and the SVG ids of each
picture are prefixed so that the pictures of one page cannot collide.
"""

import html
import re
from pathlib import Path

from matplotlib.figure import Figure

from .analysis import full_input_size, trace_model
from .draw import block_layout, draw_block, draw_model, drawable_model, svg_text
from .models import default_cfg
from .outputs import writable_file
from .summary import Comparison, summary
from .tables import human, pair_text, shape_text
from .weights import write_atomically

STYLE = """
body { font-family: 'DejaVu Sans', sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; margin: 0 0 .3em; } h2 { font-size: 1.1em; }
.split { background: #f6f6f6; padding: .6em; font-size: .85em; }
.pictures { display: flex; gap: 2em; align-items: flex-start; flex-wrap: wrap; }
.pictures svg { max-width: 100%; height: auto; }
#model-picture { flex: 0 1 560px; } #block-view { flex: 1 1 600px; min-width: 400px; }
#model-picture text { pointer-events: none; }
#model-picture g[id^="block-"] { cursor: pointer; }
#model-picture g[id^="block-"]:hover path { stroke: #c00; stroke-width: 2; }
table { border-collapse: collapse; font-size: .85em; margin-top: 1em; }
th, td { border-bottom: 1px solid #ddd; padding: .2em .6em; text-align: right; }
th:first-child, td:first-child, td.text { text-align: left; }
tr.block-row { cursor: pointer; background: #eef8ec; } tr.branch td { color: #444; background: #fafafa; }
tr.selected { outline: 2px solid #c00; } td.name { white-space: pre; }
"""

SCRIPT = """
function select(name, toggle) {
  const row = document.querySelector('tr.block-row[data-block="' + CSS.escape(name) + '"]');
  if (!row) return;
  const open = toggle ? row.classList.toggle('open') : (row.classList.add('open'), true);
  row.querySelector('.toggle').textContent = open ? '\\u25be' : '\\u25b8';
  document.querySelectorAll('tr.branch').forEach(r => { if (r.dataset.parent === name) r.hidden = !open; });
  document.querySelectorAll('tr.selected').forEach(r => r.classList.remove('selected'));
  row.classList.add('selected');
  document.querySelectorAll('.block-picture').forEach(p => { p.hidden = p.dataset.key !== row.dataset.key; });
  document.getElementById('block-title').textContent = name;
  document.getElementById('block-view').hidden = false;
}
document.querySelectorAll('#model-picture g[id^="block-"]').forEach(g =>
  g.addEventListener('click', () => select(g.id.slice(6))));
document.querySelectorAll('tr.block-row').forEach(r =>
  r.addEventListener('click', () => select(r.dataset.block, true)));
"""


def _inline(svg: str, prefix: str = "") -> str:
    """An SVG document as an element to put in HTML: no XML prolog, ids prefixed with ``prefix``."""
    svg = svg[svg.index("<svg"):]
    if prefix:
        svg = re.sub(r'\bid="([^"]+)"', rf'id="{prefix}\1"', svg)
        svg = re.sub(r"url\(#([^)]+)\)", rf"url(#{prefix}\1)", svg)
        svg = re.sub(r'href="#([^"]+)"', rf'href="#{prefix}\1"', svg)
    return svg


def _page(title: str, body: str, script: str = "") -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head>\n<body>\n{body}\n<script>{script}</script>\n</body></html>\n")


def _cells(values, classes=()) -> str:
    return "".join(f'<td class="{c}">{html.escape(str(v))}</td>' for v, c in zip(values, [*classes, *[""] * 9]))


def explore_html(model_or_name, input_size=None) -> str:
    """The explorer page: the whole-model picture, every block's picture on click, and the
    per-layer table of ``summary`` with each block row opening into its branches."""
    model = drawable_model(model_or_name, input_size)
    result = summary(model, input_size)
    trace = trace_model(model, full_input_size(model, input_size))
    modules = dict(trace.model.named_modules())
    alike: dict[tuple, list[str]] = {}  # blocks of the same structure on the same input share a picture
    for block in result.blocks:
        alike.setdefault((repr(modules[block.name]), shape_text(trace.inputs[block.name][0].shape)), []).append(block.name)
    key_of, pictures = {}, []
    for key, names in enumerate(alike.values()):
        layout = block_layout(trace, names[0])
        if len(names) > 1:
            layout.name = f"{names[0]} (and {len(names) - 1} more alike)"
        svg = _inline(svg_text(draw_block(layout)), f"p{key}-")
        pictures.append(f'<div class="block-picture" data-key="p{key}" hidden>{svg}</div>')
        key_of.update(dict.fromkeys(names, f"p{key}"))
    rows = []
    breakdowns = {b.name: b for b in result.blocks}
    for r in result.rows:
        name = "  " * (r.depth - 1) + r.name
        values = [r.type, shape_text(r.output_shape), pair_text(r.receptive_field), pair_text(r.effective_stride),
                  f"{r.params:,}", f"{r.macs:,}"]
        if r.name not in breakdowns:
            rows.append(f"<tr>{_cells([name, *values], ['name', 'text'])}</tr>")
            continue
        b = breakdowns[r.name]
        rows.append(f'<tr class="block-row" data-block="{html.escape(r.name)}" data-key="{key_of[r.name]}">'
                    f'<td class="name"><span class="toggle">\u25b8</span> {html.escape(name)}</td>{_cells(values, ["text"])}</tr>')
        branches = [(x.name, x.layers, x.out_channels or "-", x.params, x.macs) for x in b.branches]
        if b.other_params or b.other_macs or b.other_channels:
            branches.append(("(other)", "outside the branch modules", b.other_channels or "-", b.other_params,
                             b.other_macs))
        for branch, layers, channels, params, macs in branches:
            rows.append(f'<tr class="branch" data-parent="{html.escape(r.name)}" hidden>'
                        f"{_cells(['  ' * r.depth + branch, layers, channels, '', '', f'{params:,}', f'{macs:,}'], ['name', 'text'])}</tr>")
    header = "".join(f"<th>{h}</th>" for h in ["layer", "type / branch layers", "output shape", "RF", "stride",
                                               "params", "MACs"])
    split = html.escape("\n".join([result.totals_line(), *result.split.lines()]))
    body = f"""<h1>{html.escape(result.model)}</h1>
<p>Input {shape_text(result.input_size)}. Click a block (in the picture or the table) to see it drawn as its paper
draws it and its branches in the table. RF: receptive field in input pixels; stride: input pixels between
neighbouring outputs.</p>
<pre class="split">{split}</pre>
<div class="pictures">
<section id="model-picture">{_inline(svg_text(draw_model(result, model)))}</section>
<section id="block-view" hidden><h2 id="block-title"></h2>{''.join(pictures)}</section>
</div>
<table id="layers"><thead><tr>{header}</tr></thead><tbody>
{chr(10).join(rows)}
</tbody></table>"""
    return _page(f"inceptorch: {result.model}", body, SCRIPT)


# ---------------------------------------------------------------------------------------------------
# Comparing models


def compare_chart(comparison: Comparison) -> Figure:
    """Multiply-adds against parameters, one labelled point a model (log scales where they spread)."""
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot()
    params = [r.params / 1e6 for r in comparison.rows]
    macs = [r.macs / 1e9 for r in comparison.rows]
    ax.scatter(params, macs, s=36, color="#3a6fb0", zorder=3)
    for r, x, y in zip(comparison.rows, params, macs):
        top1 = default_cfg(r.model)["top1"]
        ax.annotate(r.model + (f" ({top1:.1f}% top-1)" if top1 else ""), (x, y), textcoords="offset points",
                    xytext=(5, 4), fontsize=8)
    for axis, values, setter in ((ax.xaxis, params, ax.set_xscale), (ax.yaxis, macs, ax.set_yscale)):
        if max(values) > 30 * min(values):
            setter("log")
    ax.set_xlabel("parameters (millions)")
    ax.set_ylabel("multiply-adds per image (billions)")
    ax.set_title("Multiply-adds against parameters", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def compare_html(comparison: Comparison) -> str:
    """The comparison table and the chart of multiply-adds against parameters, side by side."""
    header = "".join(f"<th>{h}</th>" for h in ["model", "params", "MACs", "input", "smallest input",
                                               "ImageNet top-1 (default weights)"])
    rows = []
    for r in comparison.rows:
        top1 = default_cfg(r.model)["top1"]  # published, of the model's default tag
        rows.append("<tr>" + _cells([r.model, f"{r.params:,}", f"{r.macs:,} ({human(r.macs)})",
                                     shape_text(r.input_size[1:]), r.min_input,
                                     f"{top1:.2f}%" if top1 else "-"]) + "</tr>")
    body = (f"<h1>Comparison: {html.escape(', '.join(r.model for r in comparison.rows))}</h1>\n"
            f'<table id="comparison"><thead><tr>{header}</tr></thead><tbody>{"".join(rows)}</tbody></table>\n'
            f'<section id="chart">{_inline(svg_text(compare_chart(comparison)))}</section>')
    return _page("inceptorch: comparison", body)


def write_page(text: str, path) -> Path:
    """Writes an HTML page; a file is only ever complete or absent."""
    path = writable_file(path, (".html",))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, text.encode("utf-8"))
    return path
