"""Model analysis: per-layer summary, multiply-adds, per-branch breakdown, smallest input, comparisons.

Every figure comes from forward passes of a copy of the model on PyTorch's meta device, where tensors
have shapes but no data: even Inception-ResNet v2 costs no arithmetic and no memory. Multiply-adds
(MACs) are counted by ``torch.utils.flop_counter`` as FLOPs / 2. It counts convolutions and matrix
products only, as the papers do: batch norm, activations, pooling and biases are left out.
"""

import copy
import csv
import functools
import io
import itertools
import json
import re
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .errors import ConfigError
from .models.base import ImageClassifier, _check_input

# ---------------------------------------------------------------------------------------------------
# Input sizes and the meta-device forward pass


def full_input_size(model: nn.Module, input_size=None) -> tuple[int, ...]:
    """The (N, C, H, W) shape to run ``model`` on.

    For an inceptorch model a shorter size is completed from its defaults: a side (224), (H, W),
    (C, H, W) or a full shape; ``None`` means its ``default_input_size``. Any other module needs the
    full input shape.
    """
    if not isinstance(model, ImageClassifier):
        if input_size is None or isinstance(input_size, int):
            raise ConfigError(f"give the full input shape to analyse a {type(model).__name__}, "
                              "for instance (1, 3, 224, 224)")
        return tuple(int(d) for d in input_size)
    dims = (model.default_input_size,) if input_size is None else input_size
    dims = (dims,) if isinstance(dims, int) else tuple(int(d) for d in dims)
    if len(dims) == 1:
        dims = dims * 2
    if len(dims) == 2:
        dims = (model.in_chans, *dims)
    if len(dims) == 3:
        dims = (1, *dims)
    if len(dims) != 4 or min(dims) < 1:
        raise ConfigError(f"input size {input_size} is not a size like 224, (3, 224, 224) or (1, 3, 224, 224)")
    return dims


def model_for_input(name: str, input_size=None, *, meta: bool = True, **options) -> nn.Module:
    """Registered model ``name`` built for the channels of ``input_size`` (3 when it names none).

    ``meta=True`` builds it on the meta device: no weights are allocated or initialised, which is
    all that counting needs. ``options`` go to ``create_model`` (``num_classes``, ``aux_logits``).
    """
    from .models import create_model

    dims = (input_size,) if isinstance(input_size, int) else tuple(input_size or ())
    in_chans = dims[-3] if len(dims) >= 3 else 3
    with torch.device("meta" if meta else "cpu"):
        return create_model(name, in_chans=in_chans, **options)


def _meta_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` on the meta device, made without copying any weight data.

    Batch norm keeps the shape of its input, and its meta-device kernel is slow Python that would
    dominate every pass; in the copy, each batch norm only checks its channels.
    """

    def on_meta(tensor):
        empty = torch.empty_like(tensor, device="meta")
        return nn.Parameter(empty, tensor.requires_grad) if isinstance(tensor, nn.Parameter) else empty

    memo = {id(t): on_meta(t) for t in itertools.chain(model.parameters(), model.buffers())}
    meta_model = copy.deepcopy(model, memo)
    for module in meta_model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.forward = functools.partial(_batch_norm_shape, module.num_features)
    return meta_model


def _batch_norm_shape(num_features: int, x: torch.Tensor) -> torch.Tensor:
    if x.dim() < 2 or x.shape[1] != num_features:
        raise RuntimeError(f"batch norm expects {num_features} channels, got input of shape {tuple(x.shape)}")
    return torch.empty_like(x)


def _check_input_size(model: nn.Module, shape: tuple[int, ...]) -> None:
    """The model's own input check (models/base.py), on a stand-in tensor of ``shape`` that holds no data.

    A meta-device pass skips that check; a pass that fails runs it to explain the failure in one line.
    """
    if isinstance(model, ImageClassifier):
        _check_input(model, (torch.empty(()).expand(shape),))


@dataclass
class _Trace:
    """What one forward pass of the meta copy saw, by module name (names are the original model's)."""

    model: nn.Module  # the meta copy
    inputs: dict[str, tuple]  # each module's positional inputs at its last call
    outputs: dict[str, object]  # and its output
    call_order: list[str]  # names as each call returned: leaves come in the order they ran
    macs: dict[str, int]  # multiply-adds inside each module, nested calls included
    total_macs: int
    output: object


def _trace(model: nn.Module, shape: tuple[int, ...]) -> _Trace:
    """One eval-mode forward pass on the meta device, counting MACs per module in the same pass."""
    meta_model = _meta_copy(model).eval()
    names = {module: name for name, module in meta_model.named_modules()}
    inputs, outputs, call_order = {}, {}, []

    def record(module, args, output):
        name = names[module]
        inputs[name], outputs[name] = args, output
        call_order.append(name)

    handles = [module.register_forward_hook(record) for module in names]
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            output = meta_model(torch.empty(shape, device="meta"))
    except (RuntimeError, ValueError, IndexError):
        _check_input_size(model, shape)
        raise
    finally:
        for handle in handles:
            handle.remove()
    # The counter names modules "<root class>.<dotted path>"; strip the root to get our names.
    root = type(meta_model).__name__
    macs = {key[len(root) + 1:]: sum(counts.values()) // 2 for key, counts in counter.get_flop_counts().items()
            if key == root or key.startswith(root + ".")}
    return _Trace(meta_model, inputs, outputs, call_order, macs, counter.get_total_flops() // 2, output)


def count_macs(model: nn.Module | str, input_size=None) -> int:
    """Multiply-adds of one forward pass at ``input_size`` (see ``full_input_size``).

    ``model`` is a module or the name of a registered model.
    """
    if isinstance(model, str):
        model = model_for_input(model, input_size)
    return _trace(model, full_input_size(model, input_size)).total_macs


# ---------------------------------------------------------------------------------------------------
# Inception blocks and their branches

_STEP_SUFFIX = re.compile(r"_\d\w*$")  # "_2", "_1a": one step of a branch whose layers are flat children


def branch_of(child_name: str) -> str | None:
    """The branch a block's child belongs to, by name; ``None`` for a child outside the branches.

    Branches are single children (``branch1``, ``branch_pool``) or runs of flat children named by
    step, as in torchvision's and timm's checkpoints: ``branch5x5_1``, ``branch5x5_2`` -> ``branch5x5``;
    ``branch1_0``, ``branch1_1a``, ``branch1_1b`` -> ``branch1``.
    """
    return _STEP_SUFFIX.sub("", child_name) if child_name.startswith("branch") else None


def is_inception_block(module: nn.Module) -> bool:
    """An Inception block is a module with two or more children named ``branch*``."""
    return sum(branch_of(name) is not None for name, _ in module.named_children()) >= 2


def _join(parent: str, child: str) -> str:
    return f"{parent}.{child}" if parent else child


def _branch_out_channels(trace: _Trace, layer_names: list[str]) -> int | None:
    """Channels a branch contributes: those of its layers' outputs that no other layer of it consumes.

    A chain (1x1 then 5x5) ends in one output; a branch that forks at its end, as Inception v3's
    3x3 branch does into a 1x3 and a 3x1, ends in two, and both go into the concatenation. Outputs
    are matched to inputs by identity during the pass; a layer whose output reaches the next one only
    through a functional op (not a module) would be counted as an end too.
    """
    ran = [name for name in layer_names if name in trace.outputs]
    consumed = [arg for name in ran for arg in trace.inputs[name]]
    ends = [trace.outputs[name] for name in ran if not any(trace.outputs[name] is arg for arg in consumed)]
    if not ends or not all(isinstance(t, torch.Tensor) and t.dim() >= 2 for t in ends):
        return None
    return sum(t.shape[1] for t in ends)


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _describe(module: nn.Module) -> str | None:
    """'5x5 conv 16->32', '3x3 max pool /2': how the figures of the papers label a layer."""
    if isinstance(module, nn.Conv2d):
        text = f"{'x'.join(map(str, module.kernel_size))} conv {module.in_channels}->{module.out_channels}"
        stride = module.stride
    elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        kind = "max" if isinstance(module, nn.MaxPool2d) else "avg"
        text = f"{'x'.join(map(str, _pair(module.kernel_size)))} {kind} pool"
        stride = _pair(module.stride)
    else:
        return None
    return text + (f" /{'x'.join(map(str, stride)) if stride[0] != stride[1] else stride[0]}"
                   if max(stride) > 1 else "")


@dataclass
class BranchRow:
    """One branch of an Inception block; ``layers`` lists its convolutions and pools in the order they run."""

    name: str
    layers: str
    out_channels: int | None
    params: int
    macs: int


@dataclass
class BlockBreakdown:
    """An Inception block split by branch; ``other_*`` is what lies outside the branch modules.

    That is a residual block's 1x1 projection (parameters and MACs), or a pooling path written as a
    function in ``forward`` rather than as a module (Inception v3's grid reductions): no parameters,
    but channels in the concatenation, ``other_channels``.
    """

    name: str
    type: str
    output_shape: tuple[int, ...] | None
    params: int
    macs: int
    branches: list[BranchRow]
    other_params: int
    other_macs: int
    other_channels: int | None


def _num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _breakdown(trace: _Trace, name: str, block: nn.Module) -> BlockBreakdown:
    groups: dict[str, list[str]] = {}
    for child, _ in block.named_children():
        if branch_of(child) is not None:
            groups.setdefault(branch_of(child), []).append(_join(name, child))
    branches = []
    for branch, layer_names in groups.items():
        prefixes = tuple(layer + "." for layer in layer_names)
        ran = dict.fromkeys(n for n in trace.call_order if n in layer_names or n.startswith(prefixes))
        labels = [_describe(trace.model.get_submodule(n)) for n in ran]
        branches.append(BranchRow(
            name=branch,
            layers=", ".join(label for label in labels if label),
            out_channels=_branch_out_channels(trace, layer_names),
            params=sum(_num_params(trace.model.get_submodule(n)) for n in layer_names),
            macs=sum(trace.macs.get(n, 0) for n in layer_names),
        ))
    params, macs = _num_params(block), trace.macs.get(name, 0)
    other_params, other_macs = params - sum(b.params for b in branches), macs - sum(b.macs for b in branches)
    shape = _shape(trace.outputs.get(name))
    other_channels = None
    known = [b.out_channels for b in branches if b.out_channels is not None]
    if shape and len(shape) > 1 and len(known) == len(branches) and not (other_params or other_macs):
        other_channels = shape[1] - sum(known) or None  # a concatenation with a functional path
    return BlockBreakdown(name, type(block).__name__, shape, params, macs, branches,
                          other_params, other_macs, other_channels)


# ---------------------------------------------------------------------------------------------------
# Summary


@dataclass
class LayerRow:
    name: str
    type: str
    depth: int
    output_shape: tuple[int, ...] | None  # None for a module that did not run (an aux head in eval mode)
    params: int
    macs: int
    stage: str | None = None  # for models that name their stages (``model.stages``, as GoogLeNet's)


def _shape(output) -> tuple[int, ...] | None:
    return tuple(output.shape) if isinstance(output, torch.Tensor) else None


def _shape_text(shape) -> str:
    return "x".join(map(str, shape)) if shape else "-"


def _human(n: int) -> str:
    """1498376192 -> '1.50 G': three significant figures are what a reader compares."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            value = n / scale
            return f"{value:.{2 if value < 10 else 1 if value < 100 else 0}f} {unit}"
    return str(n)


def _text_table(header: list[str], rows: list[list[str]], left: int = 1) -> str:
    """Columns padded to their widest cell; the first ``left`` columns align left, the rest right."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(str(cell).ljust(w) if i < left else str(cell).rjust(w)
                               for i, (cell, w) in enumerate(zip(r, widths))).rstrip()
                     for r in [header, *rows])


def _csv_text(header: list[str], rows: list[list]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


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
            keep.update(_join(parent, child) for child, _ in model.get_submodule(parent).named_children())
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

    def row(self, name: str) -> LayerRow:
        return next(r for r in self.rows if r.name == name)

    def stage_outputs(self) -> dict[str, tuple[int, ...]]:
        """The output shape of each named stage: that of its last layer that ran."""
        return {r.stage: r.output_shape for r in self.rows if r.stage and r.output_shape and "." not in r.name}

    def block(self, name: str) -> BlockBreakdown:
        return next(b for b in self.blocks if b.name == name)

    def totals_line(self) -> str:
        return (f"total: {self.params:,} parameters ({self.trainable_params:,} trainable), "
                f"{self.macs:,} multiply-adds ({_human(self.macs)}), output {_shape_text(self.output_shape)}")

    def __str__(self) -> str:
        header = ["layer", "type", "output shape", "params", "MACs"]
        rows = [["  " * (r.depth - 1) + r.name, r.type, _shape_text(r.output_shape), f"{r.params:,}",
                 _human(r.macs)] for r in self.rows]
        if any(r.stage for r in self.rows):  # the stage's name on its first row only
            header.insert(0, "stage")
            for row, r, before in zip(rows, self.rows, [None, *self.rows]):
                row.insert(0, (r.stage or "-") if before is None or before.stage != r.stage else "")
        table = _text_table(header, rows, left=len(header) - 3)
        return f"{self.model}, input {_shape_text(self.input_size)}\n{table}\n{self.totals_line()}"

    def branch_table(self) -> str:
        """Each Inception block, then one line a branch: the cost of every path side by side."""
        if not self.blocks:
            return "no Inception blocks (modules with two or more children named branch*)"
        rows = []
        for b in self.blocks:
            rows.append([b.name, b.type, _shape_text(b.output_shape), f"{b.params:,}", f"{b.macs:,}"])
            rows += [[f"  {r.name}", r.layers, r.out_channels or "-", f"{r.params:,}", f"{r.macs:,}"]
                     for r in b.branches]
            if b.other_params or b.other_macs or b.other_channels:
                rows.append(["  (other)", "outside the branch modules", b.other_channels or "-",
                             f"{b.other_params:,}", f"{b.other_macs:,}"])
        return _text_table(["block / branch", "layers", "output", "params", "MACs"], rows, left=2)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_csv(self, branches: bool = False) -> str:
        """Layer rows then a ``total`` row; with ``branches``, one row a branch of every block instead."""
        if branches:
            return _csv_text(["block", "branch", "layers", "out_channels", "params", "macs"],
                             [[b.name, r.name, r.layers, r.out_channels, r.params, r.macs]
                              for b in self.blocks for r in b.branches])
        rows = [[r.name, r.type, r.depth, _shape_text(r.output_shape), r.params, r.macs, r.stage or ""]
                for r in self.rows]
        rows.append(["total", self.model, 0, _shape_text(self.output_shape), self.params, self.macs, ""])
        return _csv_text(["name", "type", "depth", "output_shape", "params", "macs", "stage"], rows)


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
    trace = _trace(model, shape)
    modules = dict(trace.model.named_modules())
    names = _default_rows(trace.model) if depth is None else [n for n in modules if n and n.count(".") < depth]
    stages = getattr(model, "stages", None)
    stage_of = {layer: stage for stage, layers in stages.items() for layer in layers} if isinstance(stages, dict) else {}
    rows = [LayerRow(n, type(modules[n]).__name__, n.count(".") + 1, _shape(trace.outputs.get(n)),
                     _num_params(modules[n]), trace.macs.get(n, 0), stage_of.get(n.split(".")[0])) for n in names]
    blocks = [_breakdown(trace, n, m) for n, m in modules.items() if n and is_inception_block(m)]
    return Summary(
        model=getattr(model, "model_name", type(model).__name__),
        input_size=shape,
        output_shape=_shape(trace.output),
        rows=rows,
        blocks=blocks,
        params=_num_params(model),
        trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        macs=trace.total_macs,
    )


def branch_breakdown(model: nn.Module | str, input_size=None) -> list[BlockBreakdown]:
    """The per-branch parameters, MACs and output channels of every Inception block of ``model``."""
    return summary(model, input_size).blocks


# ---------------------------------------------------------------------------------------------------
# Smallest input


def _runs_at(meta_model, size: int, train: bool) -> bool:
    batch = 2 if train else 1  # batch norm in training needs more than one value per channel
    x = torch.empty(batch, meta_model.in_chans, size, size, device="meta")
    try:
        if train:
            meta_model.forward_with_aux(x)
        else:
            meta_model.forward(x)
    except (RuntimeError, ValueError, IndexError):
        return False
    return True


def min_input_size(model, train: bool = False, limit: int = 2048) -> int:
    """Smallest square input side for which a forward pass succeeds.

    ``train=True`` asks for training mode through ``forward_with_aux`` (aux heads included, when on):
    an aux head that pools and convolves a mid-network map can need a larger input than the trunk.
    The search runs on a copy of the model on the meta device: shapes only, no arithmetic.
    """
    meta_model = _meta_copy(model).train(train)
    low, high = 0, max(1, getattr(model, "default_input_size", 224))
    while not _runs_at(meta_model, high, train):
        low, high = high, high * 2
        if high > limit:
            raise ValueError(f"{type(model).__name__} accepts no input up to {limit}x{limit}")
    while high - low > 1:  # invariant: fails at low (or low == 0), runs at high
        mid = (low + high) // 2
        if _runs_at(meta_model, mid, train):
            high = mid
        else:
            low = mid
    return high


# ---------------------------------------------------------------------------------------------------
# Comparing models


def throughput(model: nn.Module, input_size: tuple[int, ...], batch: int = 8, warmup: int = 2,
               iterations: int = 5) -> float:
    """Images per second of eager inference on the CPU at ``batch``, timed after ``warmup`` passes."""
    x = torch.randn(batch, *input_size[1:])
    model.eval()
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        start = time.perf_counter()
        for _ in range(iterations):
            model(x)
        elapsed = time.perf_counter() - start
    return batch * iterations / elapsed


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
        rows = [[r.model, f"{r.params:,}", ratio(r), _human(r.macs), _shape_text(r.input_size[1:]), smallest(r)]
                for r in self.rows]
        if bench:
            header.append("images/s (CPU, batch 8)")
            for row, r in zip(rows, self.rows):
                row.append(f"{r.images_per_s:.1f}")
        return _text_table(header, rows)

    def to_json(self) -> str:
        return json.dumps([asdict(r) for r in self.rows], indent=2)

    def to_csv(self) -> str:
        header = list(ComparisonRow.__dataclass_fields__)
        return _csv_text(header, [[_shape_text(v) if k == "input_size" else v for k, v in asdict(r).items()]
                                  for r in self.rows])


def compare(names: list[str], input_size=None, bench: bool = False) -> Comparison:
    """One row a registered model: parameters (and their ratio to the first model's), MACs and the
    smallest input; with ``bench``, CPU throughput. Models are built with 1000 classes and the
    channels of ``input_size`` (3 by default), each at its own default input size unless one is given.
    """
    from .models.registry import model_entry

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
            params=_num_params(model),
            params_vs_first=_num_params(model) / rows[0].params if rows else 1.0,
            macs=count_macs(model, shape),
            min_input=min_input_size(model),
            min_input_train_aux=train_aux,
            images_per_s=throughput(model, shape) if bench else None,
        ))
    return Comparison(rows)
