"""The contract every inceptorch model keeps (see DESIGN.md), with the parts all models share."""

import sys
from typing import ClassVar

import torch
from torch import nn

from ..errors import ConfigError, InputSizeError
from .cfgs import plain_cfg
from .features import FeatureInfo, checkpointed, feature_levels, take_indices
from .layers import (
    POOL_TYPES,
    ConvBNAct,
    ImageNetToUnitRange,
    fresh_head,
    global_pool_layer,
    head_shape,
    pool_type_of,
    scaled_width,
)
from .meta import layer_output_shapes, min_input_size


class ImageClassifier(nn.Module):
    """Base class of every model, with timm's model contract.

    Subclasses build their layers, list those ``forward_features`` runs in order in
    ``feature_layers`` (by default the children of a ``features`` Sequential), implement ``head``
    (pool, dropout, classifier) and list their classifier layers in ``head_layers`` (dotted paths;
    aux heads that are switched off are ``None``). Every pass over the layers (``forward_features``,
    ``forward_with_aux``, ``forward_intermediates``, ``endpoints``, a ``features_only`` model's
    ``forward``) is one walk, ``layer_outputs``, which is also where gradient checkpointing acts.
    ``num_classes=0`` (heads replaced by the identity) makes ``forward`` return the pooled features,
    and ``global_pool=""`` with it the feature map, as timm's models do.
    """

    default_input_size = 224
    head_layers: tuple[str, ...] = ("fc",)
    aux_heads: tuple[str, ...] = ()  # module names of the auxiliary classifiers
    aux_taps: ClassVar[dict[str, str]] = {}  # layer -> the auxiliary head that reads its output
    feature_taps: tuple[str, ...] = ()  # the feature levels' layers where a family differs from the rule
    pool_layer: str | None = "avgpool"  # the global pool that reset_classifier swaps; None: the head's own
    pool_types = POOL_TYPES  # the global_pool values the head takes

    def __init__(self, num_classes: int = 1000, in_chans: int = 3):
        super().__init__()
        self.num_classes = num_classes
        self.in_chans = in_chans
        # What its weights expect (models/cfgs.py): create_model sets the registry's, or its checkpoint's.
        self.pretrained_cfg = plain_cfg({"input_size": self.default_input_size})
        self.pool_type = "avg"
        self.grad_checkpointing = False
        self.out_indices: tuple[int, ...] | None = None  # the levels forward returns, for features_only
        self.pruned: list[str] = []  # layers left out by prune_intermediate_layers: checkpoints may carry them
        self._feature_info = None
        self._head_shapes: dict[str, dict] = {}  # head path -> head_shape, kept for resizing from 0 classes
        self._min_input_size = None
        self.register_forward_pre_hook(_check_input_hook)

    # --- the walk over the layers ------------------------------------------------------------------

    def feature_layers(self) -> list[tuple[str, nn.Module]]:
        """The named layers ``forward_features`` runs, in order: those of a ``features`` Sequential."""
        features = getattr(self, "features", None)
        return [(f"features.{n}", m) for n, m in features.named_children()] if isinstance(features, nn.Sequential) else []

    def layer_outputs(self, x: torch.Tensor, aux: list | None = None, last: str | None = None):
        """Runs ``feature_layers`` in order, yielding each one's name and output, up to ``last``; with
        a list ``aux``, the auxiliary heads that are on run too and append their logits to it."""
        for name, layer in self.feature_layers():
            x = self._run(layer, x)
            head = getattr(self, self.aux_taps.get(name, ""), None) if aux is not None else None
            if head is not None:
                aux.append(head(x))
            yield name, x
            if name == last:
                return

    def _run(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if not (self.grad_checkpointing and torch.is_grad_enabled()):
            return layer(x)
        for block in layer if isinstance(layer, nn.Sequential) else [layer]:  # a stage of blocks: one by one
            x = checkpointed(block, x)
        return x

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Keeps only each layer's input (each block's, in a stage of blocks) for the backward pass,
        which recomputes the rest: less memory, one more forward pass; see ``features.checkpointed``."""
        self.grad_checkpointing = enable

    # --- timm's forward methods --------------------------------------------------------------------

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map, before pooling. A ``features`` Sequential runs as one module where
        nothing is checkpointed, so that hooks on it (``summary``'s rows) see the call."""
        if isinstance(getattr(self, "features", None), nn.Sequential) and not self.grad_checkpointing:
            return self.features(x)
        features = x
        for _, features in self.layer_outputs(x):  # the last output is the features
            pass
        return features

    def head(self, features: torch.Tensor, pre_logits: bool) -> torch.Tensor:
        """Pool, dropout and classifier (``pre_logits``: what the classifier reads)."""
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Logits from ``forward_features``' map, or (``pre_logits``) the pooled features the classifier
        reads; the map itself with ``global_pool=""``."""
        return self.head(features, pre_logits) if self.pool_type else features

    def forward(self, x: torch.Tensor):
        """Logits, in train and eval mode alike (features for ``num_classes=0``); the list of feature
        maps for a ``features_only`` model."""
        if self.out_indices is not None:
            return self.forward_intermediates(x, self.out_indices, intermediates_only=True)
        return self.forward_head(self.forward_features(x))

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and the auxiliary logits (none for models without aux heads): the trainer's door to them."""
        if not self.has_aux:
            return self(x), []
        check_input(self, x)
        aux, features = [], x
        for _, features in self.layer_outputs(x, aux):
            pass
        return self.forward_head(features), aux

    def forward_intermediates(self, x: torch.Tensor, indices=None, norm: bool = False, stop_early: bool = False,
                              output_fmt: str = "NCHW", intermediates_only: bool = False):
        """timm's: the feature maps of the levels ``indices`` (all for None, the last n for an int n,
        else those listed) in the order the layers run, after the final features unless
        ``intermediates_only``; ``stop_early`` (implied by ``intermediates_only``) runs no layer past
        the last level asked for. ``norm`` has nothing to apply: no Inception ends in a norm layer."""
        if output_fmt != "NCHW":
            raise ConfigError(f"output_fmt must be 'NCHW' for {self._name()}, got {output_fmt!r}")
        info = self.feature_info
        levels = take_indices(len(info), indices)
        wanted = [info[i]["module"] for i in levels]
        present = {name for name, _ in self.feature_layers()}
        if not present.issuperset(wanted):
            raise ConfigError(f"feature levels {levels} of {self._name()} include pruned layers: ask for levels "
                              "up to the last one it was pruned to")
        intermediates, features = [], x
        for name, features in self.layer_outputs(x, last=wanted[-1] if stop_early or intermediates_only else None):
            if name in wanted:
                intermediates.append(features)
        return intermediates if intermediates_only else (features, intermediates)

    @property
    def feature_info(self) -> FeatureInfo:
        """timm's feature levels: channels, reduction and layer of each; found once per architecture
        by a pass on the meta device (shapes only) at ``default_input_size``."""
        if self._feature_info is None:
            key = (type(self), repr(self))
            if key not in _FEATURE_INFO_CACHE:
                outputs = [(name, shape) for (name, shape), (_, layer) in
                           zip(layer_output_shapes(self, self.default_input_size), self.feature_layers())
                           if not isinstance(layer, ImageNetToUnitRange)]  # a rescaling, not a feature
                _FEATURE_INFO_CACHE[key] = feature_levels(outputs, self.default_input_size, self.feature_taps)
            self._feature_info = FeatureInfo(_FEATURE_INFO_CACHE[key], self.out_indices)
        return self._feature_info

    def prune_intermediate_layers(self, indices=1, prune_norm: bool = False, prune_head: bool = True) -> list[int]:
        """timm's: drops the layers after the last feature level of ``indices`` and (``prune_head``)
        the heads, aux heads and embedding layers, leaving ``forward`` the map
        (``reset_classifier(0, "")``). Returns the levels kept; ``prune_norm`` has no norm to drop."""
        info = self.feature_info  # known before any layer goes
        levels = take_indices(len(info), indices)
        names = [name for name, _ in self.feature_layers()]
        for name in names[names.index(info[levels[-1]]["module"]) + 1:]:
            parent, _, child = name.rpartition(".")
            delattr(self.get_submodule(parent) if parent else self, child)
            self.pruned.append(name)
        if prune_head:
            self.reset_classifier(0, "")
            roots = {name.split(".")[0] for name, _ in self.feature_layers()}
            for name, child in list(self.named_children()):
                if name not in roots and any(True for _ in child.state_dict()):
                    setattr(self, name, None)
                    self.pruned.append(name)
        return levels

    def make_features_only(self, out_indices=None) -> None:
        """Turns the model into timm's ``features_only`` one: ``forward`` returns the maps of the
        levels ``out_indices`` (all by default), with nothing run or kept past the last one."""
        self.out_indices = tuple(self.prune_intermediate_layers(out_indices))
        self.feature_info.out_indices = self.out_indices

    # --- TF-slim's end points: a view over the same walk -------------------------------------------

    def endpoint_names(self) -> list[str]:
        """What ``endpoints`` returns, in order."""
        names = []
        for name, _ in self.feature_layers():
            names.append(name)
            if getattr(self, self.aux_taps.get(name, ""), None) is not None:
                names.append(self.aux_taps[name])
        return names + ["global_pool", "logits"]

    def endpoints(self, x: torch.Tensor, final_endpoint: str | None = None) -> dict[str, torch.Tensor]:
        """Every named layer's output in order, as TF-slim's ``end_points``: each layer of
        ``feature_layers`` (so the input of each aux head too), the aux heads' logits where they are
        on, the pooled features (``global_pool``, what the classifier reads) and the ``logits``. The
        pass stops after ``final_endpoint``, as TF-slim's ``final_endpoint`` does.
        """
        names = self.endpoint_names()
        if final_endpoint is not None and final_endpoint not in names:
            raise ConfigError(f"unknown endpoint '{final_endpoint}' of {self._name()}: choose one of {', '.join(names)}")
        check_input(self, x)
        out, aux, features = {}, [], x
        for name, features in self.layer_outputs(x, aux):
            out[name] = features
            if aux:
                out[self.aux_taps[name]] = aux.pop()
            if final_endpoint in out:
                return {k: v for k, v in out.items() if names.index(k) <= names.index(final_endpoint)}
        out["global_pool"] = self.forward_head(features, pre_logits=True)
        if final_endpoint != "global_pool":
            out["logits"] = self.forward_head(features)
        return out

    # --- heads ---------------------------------------------------------------------------------------

    def train(self, mode: bool = True):
        """Sets training mode, except for normalization layers frozen by ``inceptorch.freeze``.

        Those keep eval mode, so their running statistics stay those of the checkpoint whatever
        the trainer calls; the flag lives on the layer and survives copies and pickling.
        """
        super().train(mode)
        for module in self.modules():
            if getattr(module, "keep_eval", False):
                module.eval()
        return self

    @property
    def default_cfg(self) -> dict:
        """timm's older name of ``pretrained_cfg``."""
        return self.pretrained_cfg

    @property
    def has_aux(self) -> bool:
        return any(getattr(self, name, None) is not None for name in self.aux_heads)

    def get_classifier(self) -> nn.Module:
        """The main classifier layer (the identity once the classifier is reset to 0 classes)."""
        return self.get_submodule(self.head_layers[0])

    def reset_classifier(self, num_classes: int, global_pool: str | bool | None = None) -> None:
        """Replaces the main and auxiliary heads with fresh ones for ``num_classes`` classes (none for
        0); ``global_pool`` as timm's: "avg", "max" where the head has a global pool, or "" (no
        pooling, so no classifier: ``forward`` returns the feature map); None keeps the current one."""
        pool_type = self.pool_type if global_pool is None else pool_type_of(global_pool)
        if pool_type not in self.pool_types:
            raise ConfigError(f"{self._name()} takes global_pool {' or '.join(map(repr, self.pool_types))}, "
                              f"got {pool_type!r}")
        if not pool_type and num_classes:
            raise ConfigError("global_pool='' returns the feature map instead of classes: pass num_classes=0 too")
        if pool_type and pool_type != self.pool_type and self.pool_layer is not None:
            setattr(self, self.pool_layer, global_pool_layer(pool_type))
        self.pool_type = pool_type
        for path in self.present_head_layers():  # aux heads that are off are None: nothing to resize
            parent_path, _, name = path.rpartition(".")
            parent = self.get_submodule(parent_path) if parent_path else self
            if path not in self._head_shapes:  # the shape of the head the model was built with
                self._head_shapes[path] = head_shape(getattr(parent, name))
            setattr(parent, name, fresh_head(self._head_shapes[path], num_classes))
        self.num_classes = num_classes

    def present_head_layers(self) -> list[str]:
        """The ``head_layers`` that exist in this instance (aux heads may be switched off)."""
        present = []
        for path in self.head_layers:
            try:
                if self.get_submodule(path) is not None:
                    present.append(path)
            except AttributeError:
                pass
        return present

    def _name(self) -> str:
        return getattr(self, "model_name", type(self).__name__)

    @property
    def min_input_size(self) -> int:
        """Smallest square input accepted in eval mode, found by a search on the meta device.

        The search runs once per architecture (class and layer configuration), not once per instance.
        """
        if self._min_input_size is None:
            key = (type(self), repr(self))
            if key not in _MIN_SIZE_CACHE:
                _MIN_SIZE_CACHE[key] = min_input_size(self)
            self._min_input_size = _MIN_SIZE_CACHE[key]
        return self._min_input_size


def init_weights(model: nn.Module) -> None:
    """He-normal convolutions, which keep the signal's scale through ReLUs (the BN-free paper network
    needs it), small normal linear layers so that training starts near uniform predictions, zero
    biases, batch normalization starting as the identity."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        elif isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.01, a=-0.02, b=0.02)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
        if isinstance(module, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)) and module.bias is not None:
            nn.init.zeros_(module.bias)


class InceptionNet(ImageClassifier):
    """A network run as named stages of named layers, then average pool, dropout and ``fc``.

    ``stages`` maps each stage to the names of its layers, in order: analysis walks it, and
    ``feature_layers`` runs them. The layers are direct children, so checkpoint
    keys stay those of the reference layout (``inception4a.branch2.1.conv.weight``).
    ``aux_taps`` maps a layer to the auxiliary head that reads its output.
    """

    def __init__(self, num_classes: int, in_chans: int):
        super().__init__(num_classes, in_chans)
        self.stages: dict[str, tuple[str, ...]] = {}

    def add_stage(self, stage: str, layers: dict[str, nn.Module]) -> None:
        for name, layer in layers.items():
            self.add_module(name, layer)
        self.stages[stage] = tuple(layers)

    def add_small_image_stem(self, width: float, conv_names: tuple[str, str]) -> int:
        """Stages ``stem`` and ``conv`` for 28x28 and 32x32 images, ``width`` times 64 and 192 channels.

        The ImageNet stems divide the side by 4 before the first block, which would leave 7x7 of a
        Fashion-MNIST image; here a 3x3 convolution sees the full resolution and one pool halves it
        before the 1x1 and 3x3 convolutions named ``conv_names``. Returns the channels it puts out.
        """
        if width <= 0:
            raise ConfigError(f"width must be positive, got {width}")
        stem_width, conv_width = scaled_width(64, width), scaled_width(192, width)
        self.add_stage("stem", {"conv1": ConvBNAct(self.in_chans, stem_width, 3, padding=1),
                                "maxpool1": nn.MaxPool2d(3, stride=2, padding=1)})  # 14x14 from 28x28
        reduce_name, conv_name = conv_names
        self.add_stage("conv", {reduce_name: ConvBNAct(stem_width, stem_width, 1),
                                conv_name: ConvBNAct(stem_width, conv_width, 3, padding=1)})
        return conv_width

    def add_head(self, in_features: int, dropout: float) -> None:
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, self.num_classes)
        self.num_features = self.head_hidden_size = in_features

    def feature_layers(self):
        return [(name, self._modules[name]) for names in self.stages.values() for name in names
                if name in self._modules]  # but those prune_intermediate_layers dropped

    def head(self, features, pre_logits):
        x = self.dropout(torch.flatten(self.avgpool(features), 1))
        return x if pre_logits else self.fc(x)


_MIN_SIZE_CACHE: dict[tuple, int] = {}
_FEATURE_INFO_CACHE: dict[tuple, list[dict]] = {}


def _compiling() -> bool:
    """Whether torch.compile is tracing; asked only once dynamo is loaded, since importing it costs seconds."""
    return "torch._dynamo" in sys.modules and torch.compiler.is_compiling()


def _check_input_hook(model: ImageClassifier, args) -> None:
    check_input(model, args[0])


def check_input(model: ImageClassifier, x: torch.Tensor) -> None:
    """Turns a wrong input batch ``x`` (rank, channels, a side below the model's minimum) into a one-line
    ``InputSizeError`` before PyTorch fails somewhere deep inside; the optimized, exported and counted
    copies of a model run it too."""
    if _compiling() or torch.jit.is_tracing() or torch.jit.is_scripting():
        return
    if x.device.type == "meta":
        return
    name = getattr(model, "model_name", type(model).__name__)
    if x.dim() != 4:
        raise InputSizeError(f"{name} expects a batch of images (N, C, H, W), got a tensor of shape "
                             f"{tuple(x.shape)}: add a batch dimension, for instance x.unsqueeze(0)")
    if x.shape[1] != model.in_chans:
        raise InputSizeError(f"{name} was built for {model.in_chans}-channel input, got {x.shape[1]} channels: "
                             f"create the model with in_chans={x.shape[1]} or convert the images")
    if min(x.shape[-2:]) >= model.default_input_size:
        return  # the size the model was designed for always fits: no search needed
    smallest = model.min_input_size
    if min(x.shape[-2:]) < smallest:
        raise InputSizeError(f"input {x.shape[-2]}x{x.shape[-1]} is smaller than {name}'s minimum of "
                             f"{smallest}x{smallest}: resize the images, for instance --image-size "
                             f"{max(smallest, model.default_input_size)}")
