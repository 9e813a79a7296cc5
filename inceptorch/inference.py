"""Fast CPU inference and export (draft)."""

import copy
import operator
from collections import defaultdict

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .models.layers import ConvBNAct


def fold_batch_norms(model: nn.Module) -> nn.Module:
    """Folds every ``ConvBNAct``'s batch norm into its convolution, in place (eval mode only)."""
    for module in model.modules():
        if isinstance(module, ConvBNAct) and isinstance(module.bn, nn.BatchNorm2d):
            module.conv = fuse_conv_bn_eval(module.conv, module.bn)
            module.bn = nn.Identity()
    return model


def _onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


class FusedConv2d(nn.Module):
    """A convolution and its ReLU as one oneDNN call, on weights reordered once into oneDNN's layout.

    Eager PyTorch reorders a convolution's weights into oneDNN's blocked layout on every call and
    runs the ReLU as a second pass over memory; here both happen once. The reordered weights depend
    on the first input's shape and are made on the first call (they cannot be copied or saved, so
    ``weight`` keeps the plain ones).
    """

    def __init__(self, weight, bias, stride, padding, dilation, groups, relu: bool, pack: bool = True):
        super().__init__()
        self.register_buffer("weight", weight.detach().clone())
        self.register_buffer("bias", bias.detach().clone() if bias is not None else torch.zeros(weight.shape[0]))
        self.stride, self.padding, self.dilation, self.groups = list(stride), list(padding), list(dilation), groups
        self.relu = relu
        self.pack = pack and _onednn_available()
        self._packed = None

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, relu: bool, pack: bool = True) -> "FusedConv2d":
        return cls(conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups, relu, pack)

    @property
    def out_channels(self) -> int:
        return self.weight.shape[0]

    def signature(self) -> tuple:
        """What two convolutions must share to run as one on the same input."""
        return (tuple(self.weight.shape[1:]), tuple(self.stride), tuple(self.padding), tuple(self.dilation),
                self.groups, self.relu, self.pack)

    def forward(self, x):
        if not self.pack or x.device.type != "cpu":
            x = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
            return F.relu(x) if self.relu else x
        if self._packed is None:
            self._packed = torch.ops.mkldnn._reorder_convolution_weight(
                self.weight, self.padding, self.stride, self.dilation, self.groups, list(x.shape))
        return torch.ops.mkldnn._convolution_pointwise(x, self._packed, self.bias, self.padding, self.stride,
                                                       self.dilation, self.groups,
                                                       "relu" if self.relu else "none", [], "")

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_packed"] = None
        return state

    def extra_repr(self) -> str:
        return (f"{self.weight.shape[1]}, {self.weight.shape[0]}, kernel_size={tuple(self.weight.shape[2:])}, "
                f"stride={self.stride}, padding={self.padding}, relu={self.relu}")


def _is_relu(node: fx.Node, modules) -> bool:
    if node.op == "call_module":
        return isinstance(modules[node.target], nn.ReLU)
    return node.op == "call_function" and node.target in (F.relu, torch.relu)


def _fuse_conv_relu(graph_module: fx.GraphModule, pack: bool) -> None:
    graph = graph_module.graph
    modules = dict(graph_module.named_modules())
    for node in list(graph.nodes):  # batch norms already folded leave identities behind
        if node.op == "call_module" and isinstance(modules[node.target], nn.Identity):
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
    for node in list(graph.nodes):
        conv = modules.get(node.target) if node.op == "call_module" else None
        if type(conv) is not nn.Conv2d or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            continue
        users = list(node.users)
        relu = len(users) == 1 and _is_relu(users[0], modules)
        graph_module.add_submodule(node.target, FusedConv2d.from_conv(conv, relu, pack))
        if relu:
            users[0].replace_all_uses_with(node)
            graph.erase_node(users[0])


def _common_prefix(targets: list[str]) -> str:
    prefix = []
    for parts in zip(*(t.split(".") for t in targets)):
        if len(set(parts)) > 1:
            break
        prefix.append(parts[0])
    return ".".join(prefix)


def _merge_sibling_convs(graph_module: fx.GraphModule) -> None:
    """Convolutions of the same shape reading the same tensor run as one wider convolution, split after."""
    graph = graph_module.graph
    modules = dict(graph_module.named_modules())
    count = 0
    for node in list(graph.nodes):
        siblings = defaultdict(list)
        for user in node.users:
            module = modules.get(user.target) if user.op == "call_module" else None
            if isinstance(module, FusedConv2d) and module.groups == 1 and user.args == (node,):
                siblings[module.signature()].append(user)
        for convs in siblings.values():
            if len(convs) < 2:
                continue
            parts = [modules[c.target] for c in convs]
            first = parts[0]
            merged = FusedConv2d(torch.cat([p.weight for p in parts]), torch.cat([p.bias for p in parts]),
                                 first.stride, first.padding, first.dilation, 1, first.relu, first.pack)
            prefix = _common_prefix([c.target for c in convs])
            name = f"{prefix}.merged{count}" if prefix else f"merged{count}"
            count += 1
            graph_module.add_submodule(name, merged)
            with graph.inserting_after(node):
                merged_node = graph.call_module(name, (node,))
            with graph.inserting_after(merged_node):
                split = graph.call_function(torch.split, (merged_node, [p.out_channels for p in parts], 1))
            anchor = split
            for i, conv in enumerate(convs):
                with graph.inserting_after(anchor):
                    anchor = graph.call_function(operator.getitem, (split, i))
                conv.replace_all_uses_with(anchor)
                graph.erase_node(conv)


def fuse_graph(model: nn.Module, *, merge: bool = True, pack: bool = True) -> fx.GraphModule:
    graph_module = fx.symbolic_trace(model)
    _fuse_conv_relu(graph_module, pack)
    if merge:
        _merge_sibling_convs(graph_module)
    graph_module.graph.lint()
    graph_module.delete_all_unused_submodules()
    graph_module.recompile()
    return graph_module
