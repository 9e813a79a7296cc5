"""Model registry: ``@register`` on a builder function, then ``list_models`` and ``create_model``.

The families register themselves when ``inceptorch.models`` imports them.
"""

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ConfigError
from ..weights import read_metadata
from .loading import load_weights

_BUILDERS: dict[str, "ModelEntry"] = {}


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable
    has_aux: bool
    paper: str


def register(*, has_aux: bool = False, paper: str = ""):
    """Adds a builder ``fn(num_classes, in_chans, [aux_logits], **kwargs) -> ImageClassifier``."""

    def add(builder):
        _BUILDERS[builder.__name__] = ModelEntry(builder.__name__, builder, has_aux, paper)
        return builder

    return add


def model_entry(name: str) -> ModelEntry:
    if name not in _BUILDERS:
        raise ConfigError(f"unknown model '{name}': choose one of {', '.join(list_models())}")
    return _BUILDERS[name]


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    return sorted(_BUILDERS)


def create_model(name: str, *, num_classes: int = 1000, in_chans: int = 3, aux_logits: bool = False,
                 weights=None, **kwargs):
    """Builds model ``name``; with ``weights`` (a .pth, .pt or .safetensors path) loads them.

    The checkpoint may be in torchvision's, timm's or inceptorch's own layout. A different
    ``num_classes`` keeps the backbone and starts fresh heads; a different ``in_chans`` adapts the
    first convolution.
    """
    entry = model_entry(name)
    if num_classes < 1:
        raise ConfigError(f"num_classes must be at least 1, got {num_classes}")
    if in_chans < 1:
        raise ConfigError(f"in_chans must be at least 1, got {in_chans}")
    if entry.has_aux:
        kwargs["aux_logits"] = aux_logits
    elif aux_logits:
        raise ConfigError(f"{name} has no auxiliary classifiers: leave aux_logits off (--aux-weight 0)")
    try:
        model = entry.builder(num_classes=num_classes, in_chans=in_chans, **kwargs)
    except TypeError as e:
        if "unexpected keyword argument" not in str(e):
            raise
        raise ConfigError(f"{name} does not take the option {str(e).split('argument')[-1].strip()}: "
                          "check its spelling, or leave it out") from None
    model.model_name = name
    model.build_config = {"num_classes": num_classes, "in_chans": in_chans, **kwargs}
    if weights is not None:
        load_weights(model, weights)
    return model


def load_model(path):
    """Rebuilds a model from an inceptorch checkpoint (its metadata names the model and its options)."""
    meta = read_metadata(path)
    if not meta or "model" not in meta:
        raise ConfigError(f"{path} has no inceptorch metadata naming its model: pass the model name as well "
                          "(for instance --model inception_v3 --weights FILE)")
    model = create_model(meta["model"], **meta.get("build_config", {}), weights=path)
    model.class_names = meta.get("class_names")
    return model
