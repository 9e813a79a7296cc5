"""The contract every inceptorch model keeps (see DESIGN.md), with the parts all models share."""

import sys
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, InputSizeError
from .cfgs import plain_cfg
from .layers import ConvBNAct, scaled_width
from .meta import min_input_size


def _resized_head(layer: nn.Module, num_classes: int) -> nn.Module:
    """A fresh head layer like ``layer`` with ``num_classes`` outputs (a Linear, or NiN's 1x1 Conv2d);
    none (the identity) for ``num_classes=0``."""
    if num_classes == 0:
        return nn.Identity()
    if isinstance(layer, nn.Linear):
        return nn.Linear(layer.in_features, num_classes, bias=layer.bias is not None)
    if isinstance(layer, nn.Conv2d):
        return nn.Conv2d(layer.in_channels, num_classes, layer.kernel_size, layer.stride, layer.padding,
                         bias=layer.bias is not None)
    raise TypeError(f"cannot resize a head of type {type(layer).__name__}")


class ImageClassifier(nn.Module):
    """Base class of every model.

    Subclasses build their layers, implement ``forward_features`` and ``forward_head`` and list their
    classifier layers in ``head_layers`` (dotted paths; aux heads that are switched off are ``None``).
    Models with auxiliary classifiers override ``forward_with_aux``. ``num_classes=0`` (heads
    replaced by the identity) makes ``forward`` return the pooled features, as timm's models do, and
    ``keep_spatial`` makes it return the feature map itself.
    """

    default_input_size = 224
    head_layers: tuple[str, ...] = ("fc",)
    aux_heads: tuple[str, ...] = ()  # module names of the auxiliary classifiers
    aux_taps: ClassVar[dict[str, str]] = {}  # layer -> the auxiliary head that reads its output
    keep_spatial = False  # forward returns forward_features' map (create_model(global_pool=False))

    def __init__(self, num_classes: int = 1000, in_chans: int = 3):
        super().__init__()
        self.num_classes = num_classes
        self.in_chans = in_chans
        # What its weights expect (models/cfgs.py): create_model sets the registry's, or its checkpoint's.
        self.pretrained_cfg = plain_cfg({"input_size": self.default_input_size})
        self._min_input_size = None
        self.register_forward_pre_hook(_check_input)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits, in train and eval mode alike (features for ``num_classes=0``)."""
        features = self.forward_features(x)
        return features if self.keep_spatial else self.forward_head(features)

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and the auxiliary logits (none for models without aux heads): the trainer's door to them."""
        return self(x), []

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

    def feature_layers(self) -> list[tuple[str, nn.Module]]:
        """The named layers ``forward_features`` runs, in order: those of a ``features`` Sequential."""
        features = getattr(self, "features", None)
        return [(f"features.{n}", m) for n, m in features.named_children()] if isinstance(features, nn.Sequential) else []

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
        on, the pooled features (``global_pool``) and the ``logits``. The pass stops after
        ``final_endpoint``, as TF-slim's ``final_endpoint`` does.
        """
        names = self.endpoint_names()
        if final_endpoint is not None and final_endpoint not in names:
            raise ConfigError(f"unknown endpoint '{final_endpoint}' of {getattr(self, 'model_name', type(self).__name__)}:"
                              f" choose one of {', '.join(names)}")
        _check_input(self, (x,))
        out = {}
        for name, layer in self.feature_layers():
            x = out[name] = layer(x)
            head = getattr(self, self.aux_taps.get(name, ""), None)
            if head is not None and name != final_endpoint:
                out[self.aux_taps[name]] = head(x)
            if final_endpoint in out:
                return out
        out["global_pool"] = F.adaptive_avg_pool2d(x, 1).flatten(1) if x.dim() == 4 else x
        if final_endpoint != "global_pool":
            out["logits"] = self.forward_head(x)
        return out

    @property
    def default_cfg(self) -> dict:
        """timm's older name of ``pretrained_cfg``."""
        return self.pretrained_cfg

    @property
    def has_aux(self) -> bool:
        return any(getattr(self, name, None) is not None for name in self.aux_heads)

    def reset_classifier(self, num_classes: int) -> None:
        """Replaces the main and auxiliary heads with fresh ones for ``num_classes`` classes."""
        for path in self.present_head_layers():  # aux heads that are off are None: nothing to resize
            parent_path, _, name = path.rpartition(".")
            parent = self.get_submodule(parent_path) if parent_path else self
            setattr(parent, name, _resized_head(getattr(parent, name), num_classes))
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
    ``stage_outputs`` gives each stage's output. The layers are direct children, so checkpoint
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

    def feature_layers(self):
        return [(name, getattr(self, name)) for names in self.stages.values() for name in names]

    def _walk(self, x, aux: list | None = None):
        """Runs the stages in order, yielding each one's name and output; with a list ``aux``, the
        auxiliary heads that are on run too and append their logits to it."""
        for stage, names in self.stages.items():
            for name in names:
                x = getattr(self, name)(x)
                head = getattr(self, self.aux_taps[name]) if aux is not None and name in self.aux_taps else None
                if head is not None:
                    aux.append(head(x))
            yield stage, x

    def stage_outputs(self, x) -> dict[str, torch.Tensor]:
        """The output of every stage, by name (aux heads do not run)."""
        return dict(self._walk(x))

    def forward_features(self, x):
        for _, features in self._walk(x):
            pass
        return features

    def forward_head(self, features):
        return self.fc(self.dropout(torch.flatten(self.avgpool(features), 1)))

    def forward_with_aux(self, x):
        if not self.has_aux:
            return self(x), []
        _check_input(self, (x,))
        aux = []
        for _, features in self._walk(x, aux):
            pass
        return self.forward_head(features), aux


_MIN_SIZE_CACHE: dict[tuple, int] = {}


def _compiling() -> bool:
    """Whether torch.compile is tracing; asked only once dynamo is loaded, since importing it costs seconds."""
    return "torch._dynamo" in sys.modules and torch.compiler.is_compiling()


def _check_input(model: ImageClassifier, args) -> None:
    """Turns a wrong input into a one-line error before PyTorch fails somewhere deep inside."""
    if _compiling() or torch.jit.is_tracing() or torch.jit.is_scripting():
        return
    x = args[0]
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
