"""Model registry: ``@register`` on a builder function, then ``list_models`` and ``create_model``.

The families register themselves when ``inceptorch.models`` imports them.
"""

from collections.abc import Callable
from dataclasses import dataclass

from .. import hub
from ..errors import ConfigError
from ..weights import read_metadata
from .layers import pool_type_of
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


def create_model(name: str, *, num_classes: int | None = None, in_chans: int = 3, aux_logits: bool = False,
                 weights=None, pretrained: bool | str = False, global_pool: str | bool | None = None,
                 features_only: bool = False, out_indices=None, **kwargs):
    """Builds model ``name``; with ``weights`` (a .pth, .pt or .safetensors path) loads them, with
    ``pretrained`` (True for the model's default tag, or a tag such as ``"tf_in1k"``: see
    ``inceptorch weights``) loads published weights from the local cache, downloading them once.

    The checkpoint may be in torchvision's, timm's or inceptorch's own layout. A different
    ``num_classes`` (default: the pretrained weights', else 1000) keeps the backbone and starts
    fresh heads; ``num_classes=0`` leaves the heads out, so that ``forward`` returns the pooled
    features, and ``global_pool=""`` with it the feature map (timm's strings: "avg", "max", ""; True
    and False stand for "avg" and ""). ``features_only=True`` gives timm's feature extractor:
    ``forward`` returns the feature maps of the levels ``out_indices`` (default all; see
    ``model.feature_info``), and a classification checkpoint loads its backbone, the layers and heads
    the extractor has no use for left out. A different ``in_chans`` adapts the first convolution.
    Pretrained models carry their tag's preprocessing (``pretrained_preprocessing``) and class names.
    """
    entry = model_entry(name)
    if pretrained is not False and pretrained is not None and weights is not None:
        raise ConfigError(f"pass either pretrained weights or a weights file for {name}, not both: "
                          "drop --pretrained or --weights")
    tag = hub.find_tag(name, pretrained) if pretrained not in (False, None) else None
    if num_classes is None:
        num_classes = 0 if features_only else tag.num_classes if tag else 1000
    if num_classes < 0:
        raise ConfigError(f"num_classes must be at least 1 (or 0: no classifier), got {num_classes}")
    if in_chans < 1:
        raise ConfigError(f"in_chans must be at least 1, got {in_chans}")
    pool_type = None if global_pool is None else pool_type_of(global_pool)
    if features_only and (num_classes or aux_logits or pool_type):
        raise ConfigError(f"features_only=True gives {name}'s feature maps, without classifier or pooling: "
                          "leave num_classes, aux_logits and global_pool out")
    if num_classes == 0 and aux_logits:
        raise ConfigError(f"{name} with num_classes=0 has no classifier, so no aux classifiers either: "
                          "leave aux_logits off (--aux-weight 0)")
    if pool_type == "" and num_classes != 0:
        raise ConfigError("global_pool='' returns the feature map instead of classes: pass num_classes=0 too")
    if out_indices is not None and not features_only:
        raise ConfigError("out_indices chooses the feature levels of a features_only model: pass features_only=True "
                          "too, or call forward_intermediates(x, indices=...)")
    if tag:
        kwargs = {**tag.model_options(in_chans), **kwargs}
    if entry.has_aux:
        kwargs["aux_logits"] = aux_logits
    elif aux_logits:
        raise ConfigError(f"{name} has no auxiliary classifiers: leave aux_logits off (--aux-weight 0)")
    try:
        model = entry.builder(num_classes=num_classes or 1, in_chans=in_chans, **kwargs)
    except TypeError as e:
        if "unexpected keyword argument" not in str(e):
            raise
        raise ConfigError(f"{name} does not take the option {str(e).split('argument')[-1].strip()}: "
                          "check its spelling, or leave it out") from None
    model.model_name = name
    model.build_config = {"num_classes": num_classes, "in_chans": in_chans, **kwargs}
    if features_only:
        model.make_features_only(out_indices)
        model.build_config |= {"features_only": True, "out_indices": list(model.out_indices)}
    elif num_classes == 0 or pool_type is not None:
        model.reset_classifier(num_classes, pool_type)
        if pool_type is not None:
            model.build_config["global_pool"] = pool_type
    known = tag or (hub.tag_of_file(weights) if weights is not None else None)
    if tag:
        weights = hub.weights_file(tag)
    if weights is not None:
        load_weights(model, weights, untrained=known.untrained if known else ())
    if tag:
        model.pretrained_tag = tag.name
        model.pretrained_preprocessing = tag.preprocessing_for(model)
        model.class_names = tag.class_names if model.num_classes == tag.num_classes else None
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
