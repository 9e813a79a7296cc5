"""Commands that look at models without data: list, summary, compare, draw, explore, weights."""

import sys

from .. import hub
from ..analysis import model_for_input
from ..draw import FORMATS, draw, save_figure
from ..errors import ConfigError
from ..explore import compare_chart, compare_html, explore_html, write_page
from ..models import default_cfg, list_models
from ..summary import compare, summary
from ..tables import text_table
from .options import add_command, add_input_size, add_output


def add_list(sub):
    p = sub.add_parser("list", help="list the registered models")
    p.set_defaults(run=lambda args: print("\n".join(list_models())))


def _run_summary(args) -> int:
    """One row a layer: by default the top-level stages and every Inception block. Counted on PyTorch's
    meta device: no weights are needed."""
    model = model_for_input(args.model, args.input, num_classes=args.num_classes)
    result = summary(model, args.input, depth=args.depth)
    if args.format == "json":
        print(result.to_json())
    elif args.format == "csv":
        print(result.to_csv(branches=args.branches), end="")
    else:
        print(result)
        if args.branches:
            print()
            print(result.branch_table())
    return 0


def add_summary(sub):
    p = add_command(sub, "summary", _run_summary,
                    "output shape, parameters and multiply-adds of each layer of a model")
    p.add_argument("model", help="model name (see: inceptorch list)")
    add_input_size(p, "the model's own size, 3 channels; its channels set the model's in_chans")
    p.add_argument("--num-classes", type=int, default=1000, help="classes of the classifier (default 1000)")
    p.add_argument("--depth", type=int, help="a row for every module down to this depth (1: top-level layers)")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.add_argument("--branches", action="store_true",
                   help="the per-branch breakdown of every Inception block (with --format csv: instead of "
                        "the layer rows; JSON always has it)")


def _run_compare(args) -> int:
    """One row a model, built with 1000 classes; parameters are also given relative to the first model
    named."""
    result = compare(args.models, args.input, bench=args.bench)
    print(result.to_json() if args.format == "json" else result.to_csv() if args.format == "csv" else result,
          end="" if args.format == "csv" else "\n")
    if args.out:
        print(f"page written to {write_page(compare_html(result), args.out)}", file=sys.stderr)
    if args.plot:
        print(f"chart written to {save_figure(compare_chart(result), args.plot)}", file=sys.stderr)
    return 0


def add_compare(sub):
    p = add_command(sub, "compare", _run_compare,
                    "parameters, multiply-adds and smallest input of several models")
    p.add_argument("models", nargs="+", metavar="MODEL")
    add_input_size(p, "each model's own; one size for all models")
    p.add_argument("--bench", action="store_true",
                   help="also time eager CPU inference at batch 8 (images/s, after a warm-up)")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    add_output(p, "--out", (".html",), metavar="FILE.html",
                   help="also write a self-contained page: the table and the chart of MACs against parameters")
    add_output(p, "--plot", FORMATS, metavar="FILE", help="also write the chart alone (.png, .svg or .pdf)")


def _run_draw(args) -> int:
    """With --block, the block's branches side by side between the previous layer and the filter
    concatenation, with each branch's channels, parameters and multiply-adds (and the shortcut,
    projection, scale and sum of a residual block); without it, the model's stages as a column. Drawn from
    the modules on the meta device: no weights, no Graphviz."""
    path = save_figure(draw(args.model, block=args.block, input_size=args.input), args.out, dpi=args.dpi)
    print(f"wrote {path}")
    return 0


def add_draw(sub):
    p = add_command(sub, "draw", _run_draw, "draw an Inception block as its paper does, or the whole model")
    p.add_argument("model", help="model name (see: inceptorch list)")
    p.add_argument("--block", metavar="NAME", help="the block to draw, such as inception3a, Mixed_7b, repeat.0 "
                                                   "(inceptorch summary MODEL lists them)")
    add_input_size(p)
    add_output(p, "--out", FORMATS, required=True, metavar="FILE",
                   help="the picture: .svg, .png or .pdf")
    p.add_argument("--dpi", type=int, default=150, help="pixels per inch of a .png (default 150)")


def _run_explore(args) -> int:
    """Writes the whole-model picture, every block's picture (shown on a click) and the per-layer table of
    summary, block rows opening into their branches, as one HTML file with no network needs."""
    path = write_page(explore_html(args.model, args.input), args.out)
    print(f"wrote {path}; open {path.resolve().as_uri()} in a browser (it needs no network)")
    return 0


def add_explore(sub):
    p = add_command(sub, "explore", _run_explore, "one self-contained HTML page to explore a model")
    p.add_argument("model", help="model name (see: inceptorch list)")
    add_input_size(p)
    add_output(p, "--out", (".html",), required=True, metavar="FILE.html")


def _tag_row(cfg: dict, cached) -> list[str]:
    source = f"hf:{cfg['hf_hub_id']}" if cfg["hf_hub_id"] else {"facenet": "facenet-pytorch"}.get(cfg["source"],
                                                                                                  cfg["source"])
    return [hub.tag_name(cfg), source, cfg["license"], f"{cfg['top1']:.2f}%" if cfg["top1"] else "-",
            f"{cfg['size_mb']:.1f} MB", "yes" if cached else "no"]


def _run_weights(args) -> int:
    """`inceptorch weights [MODEL]` lists every pretrained tag: source, reported ImageNet top-1, file
    size, license and the local file when it is already cached (torch.hub's, the Hugging Face or facenet-
    pytorch's cache). `inceptorch weights download MODEL.TAG ...` fetches them (with a progress bar and
    the hash check; nothing is fetched for a cached file)."""
    if args.words[:1] == ["download"]:
        if len(args.words) < 2:
            raise ConfigError("name what to download: inceptorch weights download MODEL.TAG (see: inceptorch weights)")
        for name in args.words[1:]:
            cfg = default_cfg(name if "." in name else f"{name}.default")
            print(f"{hub.tag_name(cfg)}: {hub.weights_file(cfg, force=args.force)}")
        return 0
    if len(args.words) > 1:
        raise ConfigError(f"give one model name or none, not {' '.join(args.words)} (or: weights download MODEL.TAG)")
    names = list_models(f"{args.words[0]}.*" if args.words else "", pretrained=True)
    if not names:
        with_weights = sorted({n.split(".")[0] for n in list_models(pretrained=True)})
        raise ConfigError(f"{args.words[0]} has no pretrained weights: models with them are {', '.join(with_weights)}")
    cfgs = {n: default_cfg(n) for n in names}
    cached = {n: hub.cached_file(cfg) for n, cfg in cfgs.items()}
    print(text_table(["tag", "source", "license", "top-1", "size", "cached"],
                     [_tag_row(cfg, cached[n]) for n, cfg in cfgs.items()], left=3))
    if any(cached.values()):
        print("\ncached files:\n" + "\n".join(f"  {name}: {path}" for name, path in cached.items() if path))
    notes = [f"  {n}: {cfg['description']}" for n, cfg in cfgs.items() if cfg["description"]]
    defaults = ", ".join(hub.tag_name(default_cfg(f"{m}.default")) for m in dict.fromkeys(n.split(".")[0] for n in names))
    print("\ntop-1: ImageNet-1k validation accuracy as published (torchvision's weight enums, timm's results "
          "tables); size: torchvision's as published, the others their tensors' bytes; --pretrained alone "
          f"picks {defaults}")
    if notes:
        print("notes:\n" + "\n".join(notes))
    return 0


def add_weights(sub):
    p = add_command(sub, "weights", _run_weights, "pretrained weights by name: list them, or download one")
    p.add_argument("words", nargs="*", metavar="MODEL | download MODEL.TAG",
                   help="a model name, or download and the tags to fetch")
    p.add_argument("--force", action="store_true", help="download again even where a cached file exists")

