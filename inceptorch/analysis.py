"""Model analysis: one traced forward pass, multiply-adds per module, Inception blocks split by branch.

Every figure comes from forward passes of a copy of the model on PyTorch's meta device, where tensors
have shapes but no data: even Inception-ResNet v2 costs no arithmetic and no memory. Multiply-adds
(MACs) are counted by ``torch.utils.flop_counter`` as FLOPs / 2. It counts convolutions and matrix
products only, as the papers do: batch norm, activations, pooling and biases are left out. The same
pass follows each tensor's receptive field and effective stride through every operator, and keeps
the convolutions, pools and sums it saw, so that a pool or a residual sum written as a function in a
block's ``forward`` can be drawn as well as its modules.
"""

import re
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from .errors import ConfigError
from .models import create_model
from .models.base import ImageClassifier, check_input
from .models.meta import meta_copy

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
    dims = (input_size,) if isinstance(input_size, int) else tuple(input_size or ())
    in_chans = dims[-3] if len(dims) >= 3 else 3
    with torch.device("meta" if meta else "cpu"):
        return create_model(name, in_chans=in_chans, **options)


def _check_input_size(model: nn.Module, shape: tuple[int, ...]) -> None:
    """The model's own input check (models/base.py), on a stand-in tensor of ``shape`` that holds no data.

    A meta-device pass skips that check; a pass that fails runs it to explain the failure in one line.
    """
    if isinstance(model, ImageClassifier):
        check_input(model, torch.empty(()).expand(shape))


# A receptive field: (height, width, stride down, stride across) of the input pixels one output
# pixel sees, and how many input pixels apart neighbouring outputs are.
Field = tuple[int, int, int, int]
INPUT_FIELD: Field = (1, 1, 1, 1)


@dataclass
class Op:
    """A convolution, pool or sum seen in the pass; ``kind`` is 'conv', 'max pool', 'avg pool' or 'add'."""

    kind: str
    inputs: list[torch.Tensor]
    output: torch.Tensor
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)


def _two(value) -> tuple[int, int]:
    """An int or a list of one or two ints as (height, width)."""
    values = list(value) if isinstance(value, (tuple, list)) else [value]
    return int(values[0]), int(values[-1])


def _windowed(field: Field, kernel, stride, dilation=(1, 1)) -> Field:
    """A window of ``kernel`` taps ``dilation`` apart, moved by ``stride``: the field grows by
    (kernel - 1) * dilation input steps and the step multiplies by the stride. Padding moves the
    field but does not change its size."""
    (h, w, sh, sw), (kh, kw), (dh, dw) = field, kernel, dilation
    return (h + (kh - 1) * dh * sh, w + (kw - 1) * dw * sw, sh * stride[0], sw * stride[1])


class _FieldMode(TorchDispatchMode):
    """Follows the receptive field of every tensor through the aten operators of one pass.

    A convolution or pool widens it; any other operator (a sum, a concatenation, an activation)
    passes on the widest field of its inputs. Tensors stay referenced for the pass, so ids are unique.
    """

    _WINDOWS: ClassVar[dict[str, str]] = {"convolution": "conv", "max_pool2d_with_indices": "max pool", "avg_pool2d": "avg pool"}

    def __init__(self, image: torch.Tensor):
        super().__init__()
        self.fields, self.keep, self.ops = {id(image): INPUT_FIELD}, [image], []

    def field(self, tensor) -> Field | None:
        return self.fields.get(id(tensor))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        output = func(*args, **(kwargs or {}))
        inputs = [t for t in tree_flatten(args)[0] if isinstance(t, torch.Tensor) and id(t) in self.fields]
        first = next(iter(tree_flatten(output)[0]), None)  # max_pool2d_with_indices: (values, indices)
        if not inputs or not isinstance(first, torch.Tensor):
            return output
        fields = [self.fields[id(t)] for t in inputs]
        field = tuple(max(f[i] for f in fields) for i in range(4))
        name = func.overloadpacket.__name__
        if name in self._WINDOWS and first.dim() == 4:
            if name == "convolution":
                kernel, stride, dilation = tuple(args[1].shape[2:]), _two(args[3]), _two(args[5])
            else:  # max_pool2d_with_indices(x, kernel, stride, padding, dilation), avg_pool2d(x, kernel, stride)
                kernel = _two(args[1])
                stride = _two(args[2]) if len(args) > 2 and args[2] else kernel
                dilation = _two(args[4]) if name == "max_pool2d_with_indices" and len(args) > 4 else (1, 1)
            field = _windowed(field, kernel, stride, dilation)
            self.ops.append(Op(self._WINDOWS[name], inputs, first, kernel, stride, dilation))
        elif name in ("mean", "_adaptive_avg_pool2d") and first.dim() == 4 and inputs[0].dim() == 4:
            size_in, size_out = inputs[0].shape[2:], first.shape[2:]
            kernel = tuple(-(-a // b) for a, b in zip(size_in, size_out))
            field = _windowed(field, kernel, tuple(a // b for a, b in zip(size_in, size_out)))
        elif name in ("add", "add_") and len(inputs) == 2:
            self.ops.append(Op("add", inputs, first))
        self.fields[id(first)] = field
        self.keep.append(first)
        return output


@dataclass
class Trace:
    """What one forward pass of the meta copy saw, by module name (names are the original model's)."""

    model: nn.Module  # the meta copy
    inputs: dict[str, tuple]  # each module's positional inputs at its last call
    outputs: dict[str, object]  # and its output
    call_order: list[str]  # names as each call returned: leaves come in the order they ran
    macs: dict[str, int]  # multiply-adds inside each module, nested calls included
    total_macs: int
    output: object
    fields: dict[str, Field]  # the receptive field of each module's output
    ops: list[Op]  # convolutions, pools and sums in the order they ran
    spans: dict[str, tuple[int, int]]  # the slice of ``ops`` that ran inside each module's last call


def trace_model(model: nn.Module, shape: tuple[int, ...]) -> Trace:
    """One eval-mode forward pass on the meta device, counting MACs and following receptive fields."""
    meta_model = meta_copy(model).eval()
    names = {module: name for name, module in meta_model.named_modules()}
    inputs, outputs, call_order, starts, spans, fields = {}, {}, [], {}, {}, {}
    image = torch.empty(shape, device="meta")
    field_mode = _FieldMode(image)

    def start(module, args):
        starts[names[module]] = len(field_mode.ops)

    def record(module, args, output):
        name = names[module]
        inputs[name], outputs[name] = args, output
        call_order.append(name)
        spans[name] = (starts[name], len(field_mode.ops))
        if field_mode.field(output) is not None:
            fields[name] = field_mode.field(output)

    handles = [module.register_forward_pre_hook(start) for module in names]
    handles += [module.register_forward_hook(record) for module in names]
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter, field_mode:
            output = meta_model(image)
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
    return Trace(meta_model, inputs, outputs, call_order, macs, counter.get_total_flops() // 2, output,
                 fields, field_mode.ops, spans)


def count_macs(model: nn.Module | str, input_size=None) -> int:
    """Multiply-adds of one forward pass at ``input_size`` (see ``full_input_size``).

    ``model`` is a module or the name of a registered model.
    """
    if isinstance(model, str):
        model = model_for_input(model, input_size)
    return trace_model(model, full_input_size(model, input_size)).total_macs


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


def join_names(parent: str, child: str) -> str:
    return f"{parent}.{child}" if parent else child


def _branch_out_channels(trace: Trace, layer_names: list[str]) -> int | None:
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


@dataclass
class LayerParts:
    """What the papers' figures write on a layer: '5x5' 'conv' 32 channels, '/2' for a stride."""

    kernel: str
    kind: str  # "conv", "max pool" or "avg pool"
    in_channels: int | None
    out_channels: int | None
    stride: str  # "" for stride 1, " /2", " /1x2"

    def text(self, paper: bool = False) -> str:
        """'5x5 conv 16->32' as the branch table lists it; with ``paper``, '5x5 conv, 32' as figures do."""
        channels = "" if self.kind != "conv" else f", {self.out_channels}" if paper else \
            f" {self.in_channels}->{self.out_channels}"
        return f"{self.kernel} {self.kind}{channels}{self.stride}"


def layer_parts(module: nn.Module) -> LayerParts | None:
    """The parts of a convolution's or a pool's label; ``None`` for any other module."""
    if isinstance(module, nn.Conv2d):
        kind, kernel, stride = "conv", module.kernel_size, module.stride
        channels = module.in_channels, module.out_channels
    elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        kind = "max pool" if isinstance(module, nn.MaxPool2d) else "avg pool"
        kernel, stride, channels = _pair(module.kernel_size), _pair(module.stride), (None, None)
    else:
        return None
    step = "" if max(stride) == 1 else f" /{stride[0] if stride[0] == stride[1] else 'x'.join(map(str, stride))}"
    return LayerParts("x".join(map(str, kernel)), kind, *channels, step)


def _describe(module: nn.Module) -> str | None:
    """'5x5 conv 16->32', '3x3 max pool /2': a layer as the branch table lists it."""
    parts = layer_parts(module)
    return parts.text() if parts else None


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


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def block_breakdown(trace: Trace, name: str, block: nn.Module) -> BlockBreakdown:
    groups: dict[str, list[str]] = {}
    for child, _ in block.named_children():
        if branch_of(child) is not None:
            groups.setdefault(branch_of(child), []).append(join_names(name, child))
    branches = []
    for branch, layer_names in groups.items():
        prefixes = tuple(layer + "." for layer in layer_names)
        ran = dict.fromkeys(n for n in trace.call_order if n in layer_names or n.startswith(prefixes))
        labels = [_describe(trace.model.get_submodule(n)) for n in ran]
        branches.append(BranchRow(
            name=branch,
            layers=", ".join(label for label in labels if label),
            out_channels=_branch_out_channels(trace, layer_names),
            params=sum(num_params(trace.model.get_submodule(n)) for n in layer_names),
            macs=sum(trace.macs.get(n, 0) for n in layer_names),
        ))
    params, macs = num_params(block), trace.macs.get(name, 0)
    other_params, other_macs = params - sum(b.params for b in branches), macs - sum(b.macs for b in branches)
    shape = output_shape(trace.outputs.get(name))
    other_channels = None
    known = [b.out_channels for b in branches if b.out_channels is not None]
    if shape and len(shape) > 1 and len(known) == len(branches) and not (other_params or other_macs):
        other_channels = shape[1] - sum(known) or None  # a concatenation with a functional path
    return BlockBreakdown(name, type(block).__name__, shape, params, macs, branches,
                          other_params, other_macs, other_channels)


def output_shape(output) -> tuple[int, ...] | None:
    return tuple(output.shape) if isinstance(output, torch.Tensor) else None
