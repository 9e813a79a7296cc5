"""Reports on whole models: the per-layer summary, the per-block branch table, and model comparisons."""

import functools
import json
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .analysis import (
    BlockBreakdown,
    block_breakdown,
    count_macs,
    full_input_size,
    is_inception_block,
    join_names,
    model_for_input,
    num_params,
    output_shape,
    trace_model,
)
from .errors import ConfigError
from .models import model_entry
from .models.meta import min_input_size
from .tables import csv_text, human, pair_text, shape_text, text_table
from .timing import seconds_per_call
from .transfer import head_modules


@dataclass
class LayerRow:
    name: str
    type: str
    depth: int
    output_shape: tuple[int, ...] | None  # None for a module that did not run (an aux head in eval mode)
    params: int
    macs: int
    stage: str | None = None  # for models that name their stages (``model.stages``, as GoogLeNet's)
    receptive_field: tuple[int, int] | None = None  # input pixels (height, width) one output pixel sees
    effective_stride: tuple[int, int] | None = None  # input pixels between neighbouring output pixels


@dataclass
class ParamSplit:
    """The parameter count split the ways papers and other libraries count it.

    ``by_kind`` splits the parameters by layer kind; TF-slim's 5,607,184 for Inception v1, for
    instance, is torchvision's ``googlenet`` conv weights + BN offsets + BN running statistics (a
    buffer here), without the classifier. ``head`` is what fine-tuning always trains: the
    classifiers and whole auxiliary heads; ``backbone`` the rest.
    """

    trainable: int
    frozen: int
    backbone: int
    head: int
    by_kind: dict[str, int]
    buffers: int  # every buffer, batch-norm statistics and counters included
    bn_statistics: int  # batch-norm running means and variances

    def lines(self) -> list[str]:
        kinds = ", ".join(f"{kind} {count:,}" for kind, count in self.by_kind.items() if count)
        return [(f"parameters: backbone {self.backbone:,}, head {self.head:,}; trainable {self.trainable:,}, "
                f"frozen {self.frozen:,}"),
                f"  by kind: {kinds}",
                f"buffers: {self.buffers:,} (batch-norm running means and variances {self.bn_statistics:,})"]


_KINDS = ((nn.Conv2d, "conv"), (nn.modules.batchnorm._NormBase, "BN"), (nn.Linear, "linear"))
_KIND_NAMES = {("conv", "weight"): "conv weights", ("conv", "bias"): "conv biases", ("BN", "weight"): "BN scales",
               ("BN", "bias"): "BN offsets", ("linear", "weight"): "linear weights",
               ("linear", "bias"): "linear biases"}


def param_split(model: nn.Module) -> ParamSplit:
    """Trainable and frozen, backbone and head, by layer kind; buffers and batch-norm statistics."""
    by_kind = dict.fromkeys([*_KIND_NAMES.values(), "other"], 0)
    for module in model.modules():
        kind = next((label for cls, label in _KINDS if isinstance(module, cls)), None)
        for name, parameter in module.named_parameters(recurse=False):
            by_kind[_KIND_NAMES.get((kind, name), "other")] += parameter.numel()
    heads = head_modules(model)
    head = sum(p.numel() for name, p in model.named_parameters()
               if any(name.startswith(root + ".") for root in heads))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    statistics = sum(b.numel() for name, b in model.named_buffers()
                     if name.rsplit(".", 1)[-1] in ("running_mean", "running_var"))
    return ParamSplit(trainable, num_params(model) - trainable, num_params(model) - head, head, by_kind,
                      sum(b.numel() for b in model.buffers()), statistics)


def _default_rows(model: nn.Module) -> list[str]:
    """The top-level children and every Inception block, with the parents and siblings of each block.

    Siblings bring in the layers between the blocks when the blocks sit inside a stage (timm's
    ``features.N``, a d2l-style ``b3``); a block's own children are left to the branch breakdown.
    """
    keep = {name for name, _ in model.named_children()}
    for name, module in model.named_modules():
        if name and is_inception_block(module):
            parts = name.split(".")
            keep.update(".".join(parts[:i]) for i in range(1, len(parts)))
            parent = ".".join(parts[:-1])
            keep.update(join_names(parent, child) for child, _ in model.get_submodule(parent).named_children())
    return [name for name, _ in model.named_modules() if name in keep]


@dataclass
class Summary:
    """Rows per module, the branch breakdown of every Inception block, and totals.

    Rows nest (a stage and the blocks inside it both appear), so they do not add up to the totals;
    the totals are the whole model's. The pass runs in eval mode: a module that does not run there
    (an auxiliary head) has no output shape and no MACs, though its parameters count.
    """

    model: str
    input_size: tuple[int, ...]
    output_shape: tuple[int, ...] | None
    rows: list[LayerRow]
    blocks: list[BlockBreakdown]
    params: int
    trainable_params: int
    macs: int
    split: ParamSplit

    def row(self, name: str) -> LayerRow:
        return next(r for r in self.rows if r.name == name)

    def stage_outputs(self) -> dict[str, tuple[int, ...]]:
        """The output shape of each named stage: that of its last layer that ran."""
        return {r.stage: r.output_shape for r in self.rows if r.stage and r.output_shape and "." not in r.name}

    def block(self, name: str) -> BlockBreakdown:
        return next(b for b in self.blocks if b.name == name)

    def totals_line(self) -> str:
        return (f"total: {self.params:,} parameters ({self.trainable_params:,} trainable), "
                f"{self.macs:,} multiply-adds ({human(self.macs)}), output {shape_text(self.output_shape)}")

    def __str__(self) -> str:
        header = ["layer", "type", "output shape", "RF", "stride", "params", "MACs"]
        rows = [["  " * (r.depth - 1) + r.name, r.type, shape_text(r.output_shape), pair_text(r.receptive_field),
                 pair_text(r.effective_stride), f"{r.params:,}", human(r.macs)] for r in self.rows]
        if any(r.stage for r in self.rows):  # the stage's name on its first row only
            header.insert(0, "stage")
            for row, r, before in zip(rows, self.rows, [None, *self.rows]):
                row.insert(0, (r.stage or "-") if before is None or before.stage != r.stage else "")
        table = text_table(header, rows, left=len(header) - 5)
        title = f"{self.model}, input {shape_text(self.input_size)}  (RF: receptive field, in input pixels)"
        return "\n".join([title, table, self.totals_line(), *self.split.lines()])

    def branch_table(self) -> str:
        """Each Inception block, then one line a branch: the cost of every path side by side."""
        if not self.blocks:
            return "no Inception blocks (modules with two or more children named branch*)"
        rows = []
        for b in self.blocks:
            rows.append([b.name, b.type, shape_text(b.output_shape), f"{b.params:,}", f"{b.macs:,}"])
            rows += [[f"  {r.name}", r.layers, r.out_channels or "-", f"{r.params:,}", f"{r.macs:,}"]
                     for r in b.branches]
            if b.other_params or b.other_macs or b.other_channels:
                rows.append(["  (other)", "outside the branch modules", b.other_channels or "-",
                             f"{b.other_params:,}", f"{b.other_macs:,}"])
        return text_table(["block / branch", "layers", "output", "params", "MACs"], rows, left=2)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_csv(self, branches: bool = False) -> str:
        """Layer rows then a ``total`` row; with ``branches``, one row a branch of every block instead."""
        if branches:
            return csv_text(["block", "branch", "layers", "out_channels", "params", "macs"],
                             [[b.name, r.name, r.layers, r.out_channels, r.params, r.macs]
                              for b in self.blocks for r in b.branches])
        rows = [[r.name, r.type, r.depth, shape_text(r.output_shape), r.params, r.macs, r.stage or "",
                 shape_text(r.receptive_field), shape_text(r.effective_stride)] for r in self.rows]
        rows.append(["total", self.model, 0, shape_text(self.output_shape), self.params, self.macs, "", "", ""])
        return csv_text(["name", "type", "depth", "output_shape", "params", "macs", "stage", "receptive_field",
                         "effective_stride"], rows)


def summary(model: nn.Module | str, input_size=None, depth: int | None = None) -> Summary:
    """Output shape, parameters and multiply-adds per module, and the branches of every Inception block.

    ``model`` is a module or the name of a registered model (built for the channels of
    ``input_size``). By default the rows are the top-level stages and every Inception block;
    ``depth=N`` gives every module down to depth N (1: the top-level children). Models that name
    their stages in ``model.stages`` (stage -> names of its top-level layers) get each row's stage.
    One forward pass in eval mode on the meta device gives all the figures.
    """
    if isinstance(model, str):
        model = model_for_input(model, input_size)
    if depth is not None and depth < 1:
        raise ConfigError(f"depth must be at least 1 (the top-level layers), got {depth}")
    shape = full_input_size(model, input_size)
    trace = trace_model(model, shape)
    modules = dict(trace.model.named_modules())
    names = _default_rows(trace.model) if depth is None else [n for n in modules if n and n.count(".") < depth]
    stages = getattr(model, "stages", None)
    stage_of = {layer: stage for stage, layers in stages.items() for layer in layers} if isinstance(stages, dict) else {}
    rows = [LayerRow(n, type(modules[n]).__name__, n.count(".") + 1, output_shape(trace.outputs.get(n)),
                     num_params(modules[n]), trace.macs.get(n, 0), stage_of.get(n.split(".")[0]),
                     trace.fields[n][:2] if n in trace.fields else None,
                     trace.fields[n][2:] if n in trace.fields else None) for n in names]
    blocks = [block_breakdown(trace, n, m) for n, m in modules.items() if n and is_inception_block(m)]
    return Summary(
        model=getattr(model, "model_name", type(model).__name__),
        input_size=shape,
        output_shape=output_shape(trace.output),
        rows=rows,
        blocks=blocks,
        params=num_params(model),
        trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        macs=trace.total_macs,
        split=param_split(model),
    )


def branch_breakdown(model: nn.Module | str, input_size=None) -> list[BlockBreakdown]:
    """The per-branch parameters, MACs and output channels of every Inception block of ``model``."""
    return summary(model, input_size).blocks


# ---------------------------------------------------------------------------------------------------
# Comparing models


def throughput(model: nn.Module, input_size: tuple[int, ...], batch: int = 8, iterations: int = 5) -> float:
    """Images per second of eager inference on the CPU at ``batch`` (``timing.seconds_per_call``: the mean
    of ``iterations`` passes after warm-up)."""
    x = torch.randn(batch, *input_size[1:])
    model.eval()
    with torch.inference_mode():
        return batch / seconds_per_call(functools.partial(model, x), calls=iterations)


@dataclass
class ComparisonRow:
    model: str
    input_size: tuple[int, ...]
    params: int
    params_vs_first: float  # this model's parameters / the first model's
    macs: int
    min_input: int  # eval mode
    min_input_train_aux: int | None  # training with aux heads on; None for models without aux heads
    images_per_s: float | None  # with bench only


@dataclass
class Comparison:
    rows: list[ComparisonRow]

    def __str__(self) -> str:
        first = self.rows[0].model

        def ratio(r):
            if r.params_vs_first == 1:
                return "1x"
            if r.params_vs_first < 1:
                return f"{1 / r.params_vs_first:.1f}x fewer"
            return f"{r.params_vs_first:.1f}x more"

        def smallest(r):
            if r.min_input_train_aux in (None, r.min_input):
                return str(r.min_input)
            return f"{r.min_input} (train+aux {r.min_input_train_aux})"

        bench = any(r.images_per_s is not None for r in self.rows)
        header = ["model", "params", f"params vs {first}", "MACs", "input", "smallest input"]
        rows = [[r.model, f"{r.params:,}", ratio(r), human(r.macs), shape_text(r.input_size[1:]), smallest(r)]
                for r in self.rows]
        if bench:
            header.append("images/s (CPU, batch 8)")
            for row, r in zip(rows, self.rows):
                row.append(f"{r.images_per_s:.1f}")
        return text_table(header, rows)

    def to_json(self) -> str:
        return json.dumps([asdict(r) for r in self.rows], indent=2)

    def to_csv(self) -> str:
        header = list(ComparisonRow.__dataclass_fields__)
        return csv_text(header, [[shape_text(v) if k == "input_size" else v for k, v in asdict(r).items()]
                                  for r in self.rows])


def compare(names: list[str], input_size=None, bench: bool = False) -> Comparison:
    """One row a registered model: parameters (and their ratio to the first model's), MACs and the
    smallest input; with ``bench``, CPU throughput. Models are built with 1000 classes and the
    channels of ``input_size`` (3 by default), each at its own default input size unless one is given.
    """
    if not names:
        raise ConfigError("name at least one model to compare")
    rows = []
    for name in names:
        model = model_for_input(name, input_size, meta=not bench)
        shape = full_input_size(model, input_size)
        train_aux = None
        if model_entry(name).has_aux:
            train_aux = min_input_size(model_for_input(name, input_size, aux_logits=True), train=True)
        rows.append(ComparisonRow(
            model=name,
            input_size=shape,
            params=num_params(model),
            params_vs_first=num_params(model) / rows[0].params if rows else 1.0,
            macs=count_macs(model, shape),
            min_input=min_input_size(model),
            min_input_train_aux=train_aux,
            images_per_s=throughput(model, shape) if bench else None,
        ))
    return Comparison(rows)
