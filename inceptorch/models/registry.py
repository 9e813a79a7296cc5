"""Model registry: ``@register`` on a builder function with its pretrained configs, then ``list_models``,
``create_model`` and ``load_model``, spelled as timm spells them (``"inception_v3.tf_in1k"``).

The families register themselves when ``inceptorch.models`` imports them.
"""

import enum
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import hub
from ..errors import ConfigError
from ..images import Preprocessing
from ..weights import read_metadata
from .cfgs import INCEPTION_MEAN, INCEPTION_STD, plain_cfg, trained_cfg
from .layers import pool_type_of
from .loading import load_weights

_BUILDERS: dict[str, "ModelEntry"] = {}


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable
    has_aux: bool
    paper: str
    cfgs: dict  # tag -> pretrained config; the key None: the untrained model's own, where it has one

    @property
    def tags(self) -> list[str]:
        """The tags of published weights, the default first."""
        return [tag for tag in self.cfgs if tag is not None]

    def cfg(self, tag: str | None = None) -> dict:
        """A copy of the config of ``tag``; without one, the untrained model's (its default tag's, as timm)."""
        if tag is None:
            tag = None if None in self.cfgs else self.tags[0]
        return dict(self.cfgs[tag])


def register(*, has_aux: bool = False, paper: str = "", cfgs: dict | None = None):
    """Adds a builder ``fn(num_classes, in_chans, [aux_logits], **kwargs) -> ImageClassifier`` with its
    entries of ``cfgs`` (the family's ``default_cfgs``: ``"name.tag"`` or ``"name"`` -> config)."""

    def add(builder):
        name = builder.__name__
        own = {}
        for key, cfg in (cfgs or {}).items():
            model, _, tag = key.partition(".")
            if model == name:
                hf_hub_id = cfg.get("hf_hub_id")
                own[tag or None] = {"architecture": name, "tag": tag or None, **cfg,
                                    "hf_hub_id": f"{hf_hub_id}{key}" if hf_hub_id == "timm/" else hf_hub_id}
        if not own:
            raise TypeError(f"{name} has no pretrained config: add one to its family's default_cfgs")
        _BUILDERS[name] = ModelEntry(name, builder, has_aux, paper, own)
        return builder

    return add


def model_entry(name: str) -> ModelEntry:
    if name not in _BUILDERS:
        raise ConfigError(f"unknown model '{name}': choose one of {', '.join(list_models())}")
    return _BUILDERS[name]


def list_models(filter: str | list[str] = "", pretrained: bool = False, exclude_filters: str | list[str] = ""
                ) -> list[str]:
    """Registered model names matching ``filter`` (fnmatch patterns, as timm's); with ``pretrained``,
    the ``name.tag`` of every published checkpoint instead, matched against those names."""
    names = [f"{m}.{t}" for m, e in _BUILDERS.items() for t in e.tags] if pretrained else list(_BUILDERS)
    include = [filter] if isinstance(filter, str) else list(filter)
    exclude = [exclude_filters] if isinstance(exclude_filters, str) else list(exclude_filters)
    if any(include):
        names = [n for n in names if any(fnmatch.fnmatch(n, p) for p in include if p)]
    return sorted(n for n in names if not any(fnmatch.fnmatch(n, p) for p in exclude if p))


def default_cfg(name: str) -> dict:
    """The pretrained config ``create_model(name)`` carries (``name`` may be ``"model.tag"``)."""
    model, _, tag = name.partition(".")
    return _tag_cfg(model_entry(model), tag or None)


def _tag_cfg(entry: ModelEntry, tag) -> dict:
    """The config of ``tag`` (None: the untrained model's; True or "default": the default tag's)."""
    if tag is True or tag == "default":
        if not entry.tags:
            raise ConfigError(f"{entry.name} has no pretrained weights: models with them are "
                              f"{', '.join(sorted({n.split('.')[0] for n in list_models(pretrained=True)}))} "
                              "(see: inceptorch weights)")
        tag = entry.tags[0]
    if tag is not None and tag not in entry.tags:
        choices = ", ".join(entry.tags) or "none (see: inceptorch weights)"
        raise ConfigError(f"unknown pretrained tag '{tag}' for {entry.name}: choose one of {choices}")
    return entry.cfg(tag)


def _torchvision_tag(entry: ModelEntry, weights) -> str | None:
    """The tag torchvision's spelling ``weights`` names ("DEFAULT", "IMAGENET1K_V1" or the Weights enum),
    or None where ``weights`` is a file."""
    if isinstance(weights, enum.Enum):
        if type(weights).__name__.lower() != f"{entry.name}_weights":
            raise ConfigError(f"{type(weights).__name__}.{weights.name} are not weights of {entry.name}: pass "
                              f"{entry.name}'s own (torchvision's {entry.name} weights enum)")
        weights = weights.name
    if not isinstance(weights, str) or Path(weights).suffix:
        return None
    spelled = {entry.cfgs[t]["tv_weights"]: t for t in entry.tags if entry.cfgs[t]["tv_weights"]}
    if spelled and weights == "DEFAULT":
        return next(iter(spelled.values()))
    return spelled.get(weights)


def _resolve_weights(entry: ModelEntry, name_tag: str, pretrained, checkpoint_path, weights):
    """(tag or None, whether to load it, checkpoint file or None) from create_model's spellings."""
    tv_tag = _torchvision_tag(entry, weights) if weights is not None else None
    if weights is not None and tv_tag is None and not isinstance(weights, (str, Path)):
        raise ConfigError(f"weights={weights!r} is neither a checkpoint file nor one of torchvision's weights of "
                          f"{entry.name}: pass a path, or DEFAULT")
    if weights is not None and checkpoint_path is not None:
        raise ConfigError("pass the checkpoint as checkpoint_path= or weights=, not both")
    if tv_tag is None and isinstance(weights, str) and weights.isupper() and not Path(weights).exists():
        raise ConfigError(f"{entry.name} has no torchvision weights named {weights}: torchvision's are "
                          f"{', '.join(t['tv_weights'] for t in entry.cfgs.values() if t['tv_weights']) or 'none'}"
                          " (or pass a checkpoint file)")
    if tv_tag is None:
        checkpoint_path = checkpoint_path if weights is None else weights
    wanted = pretrained not in (False, None) or tv_tag is not None
    if wanted and checkpoint_path is not None:
        raise ConfigError(f"pass either pretrained weights or a weights file for {entry.name}, not both: "
                          "drop --pretrained or --weights")
    named = [t for t in (name_tag or None, tv_tag, pretrained if isinstance(pretrained, str) else None)
             if t not in (None, "default")]
    named = [t.split(".", 1)[1] if t.startswith(entry.name + ".") else t for t in named]
    if len(set(named)) > 1:
        raise ConfigError(f"{entry.name} was asked for the tags {' and '.join(dict.fromkeys(named))}: name one")
    tag = named[0] if named else (True if wanted else None)
    return tag, wanted, checkpoint_path


def create_model(name: str, pretrained: bool | str = False, *, num_classes: int | None = None, in_chans: int = 3,
                 aux_logits: bool = False, checkpoint_path=None, weights=None, drop_rate: float | None = None,
                 pretrained_cfg_overlay: dict | None = None, global_pool: str | bool | None = None,
                 features_only: bool = False, out_indices=None, **kwargs):
    """Builds model ``name`` (``"inception_v3"``, or with a tag ``"inception_v3.tf_in1k"``), as timm's
    ``create_model`` does.

    ``pretrained``: True loads the tag's (or the model's default tag's) published weights from the
    local cache, downloading them once; a tag such as ``"tf_in1k"`` names one (see ``list_models(
    pretrained=True)``). ``checkpoint_path``: a .pth, .pt or .safetensors file, in torchvision's,
    timm's or inceptorch's layout. ``weights``: a file too, or torchvision's spelling of its weights
    (``"DEFAULT"``, ``"IMAGENET1K_V1"`` or the Weights enum), which loads the same file as the
    ``tv_in1k`` tag. ``drop_rate``: the dropout before the classifier. ``pretrained_cfg_overlay``:
    config keys replaced before loading (``file=`` loads a local file in place of the tag's).

    Every model carries ``pretrained_cfg`` (timm's keys; see ``models/cfgs.py``): its tag's, an
    inceptorch checkpoint's own, or the model's default. A different ``num_classes`` (default: the
    weights', else 1000) keeps the backbone and starts fresh heads; ``num_classes=0`` leaves the heads
    out, so that ``forward`` returns the pooled features, and ``global_pool=""`` with it the feature map
    (timm's strings: "avg", "max", ""; True and False stand for "avg" and ""). ``features_only=True``
    gives timm's feature extractor: ``forward`` returns the feature maps of the levels ``out_indices``
    (default all; see ``model.feature_info``), and a classification checkpoint loads its backbone, the
    layers and heads the extractor has no use for left out. A different ``in_chans`` adapts the first
    convolution. Loaded weights bring their class names.
    """
    model_name, _, name_tag = name.partition(".")
    entry = model_entry(model_name)
    tag, load_tag, checkpoint_path = _resolve_weights(entry, name_tag, pretrained, checkpoint_path, weights)
    saved = read_metadata(checkpoint_path) if checkpoint_path is not None else {}
    published = cfg_of_file(entry, checkpoint_path) if checkpoint_path is not None else None
    cfg = saved_cfg(saved) or published or _tag_cfg(entry, tag)
    cfg.update(pretrained_cfg_overlay or {})
    loads = load_tag or checkpoint_path is not None
    if num_classes is None:
        num_classes = 0 if features_only else cfg["num_classes"] if load_tag else 1000
    if num_classes < 0:
        raise ConfigError(f"num_classes must be at least 1 (or 0: no classifier), got {num_classes}")
    if in_chans < 1:
        raise ConfigError(f"in_chans must be at least 1, got {in_chans}")
    pool_type = None if global_pool is None else pool_type_of(global_pool)
    if features_only and (num_classes or aux_logits or pool_type):
        raise ConfigError(f"features_only=True gives {model_name}'s feature maps, without classifier or pooling: "
                          "leave num_classes, aux_logits and global_pool out")
    if num_classes == 0 and aux_logits:
        raise ConfigError(f"{model_name} with num_classes=0 has no classifier, so no aux classifiers either: "
                          "leave aux_logits off (--aux-weight 0)")
    if pool_type == "" and num_classes != 0:
        raise ConfigError("global_pool='' returns the feature map instead of classes: pass num_classes=0 too")
    if out_indices is not None and not features_only:
        raise ConfigError("out_indices chooses the feature levels of a features_only model: pass features_only=True "
                          "too, or call forward_intermediates(x, indices=...)")
    if drop_rate is not None:
        if "dropout" in kwargs:
            raise ConfigError(f"drop_rate={drop_rate} and dropout={kwargs['dropout']} name the same option: pass one")
        kwargs["dropout"] = drop_rate
    if load_tag:
        kwargs = {**_tag_options(cfg, in_chans), **kwargs}
    if entry.has_aux:
        kwargs["aux_logits"] = aux_logits
    elif aux_logits:
        raise ConfigError(f"{model_name} has no auxiliary classifiers: leave aux_logits off (--aux-weight 0)")
    try:
        model = entry.builder(num_classes=num_classes or 1, in_chans=in_chans, **kwargs)
    except TypeError as e:
        if "unexpected keyword argument" not in str(e):
            raise
        option = str(e).split("argument")[-1].strip()
        raise ConfigError(f"{model_name} does not take the option {option}"
                          f"{' (drop_rate)' if option == repr('dropout') else ''}: check its spelling, or leave "
                          "it out") from None
    model.model_name = model_name
    model.build_config = {"num_classes": num_classes, "in_chans": in_chans, **kwargs}
    if features_only:
        model.make_features_only(out_indices)
        model.build_config |= {"features_only": True, "out_indices": list(model.out_indices)}
    elif num_classes == 0 or pool_type is not None:
        model.reset_classifier(num_classes, pool_type)
        if pool_type is not None:
            model.build_config["global_pool"] = pool_type
    if loads:
        untrained = cfg["untrained_heads"] if load_tag or published else ()  # as the publisher says of its file
        load_weights(model, hub.weights_file(cfg) if load_tag else checkpoint_path, untrained=untrained)
    model.pretrained_cfg = instance_cfg(cfg, model)
    labels = saved.get("class_names") or (cfg["label_names"] if load_tag or published else None)
    model.class_names = list(labels) if labels and len(labels) == model.num_classes else None
    return model


def _tag_options(cfg: dict, in_chans: int) -> dict:
    """The model options the checkpoint was made for; ``transform_input`` rescales RGB only."""
    return {k: v for k, v in cfg["model_args"].items() if not (k == "transform_input" and in_chans != 3)}


def instance_cfg(cfg: dict, model) -> dict:
    """``cfg`` as ``model`` needs it: weights made for a model that turns ImageNet statistics into
    [-1, 1] pixels itself (``transform_input``) are fed [-1, 1] pixels by one that does not."""
    if cfg["model_args"].get("transform_input") and not getattr(model, "transform_input", False):
        return {**cfg, "mean": INCEPTION_MEAN, "std": INCEPTION_STD}
    return cfg


def cfg_of_file(entry: ModelEntry, path) -> dict | None:
    """The config of the tag whose published file ``path`` is, by its name (torchvision's and facenet's)."""
    name = Path(path).name
    return next((entry.cfg(t) for t in entry.tags if entry.cfgs[t]["url"] and
                 entry.cfgs[t]["url"].rsplit("/", 1)[1] == name), None)


def saved_cfg(metadata: dict) -> dict | None:
    """The pretrained config an inceptorch checkpoint carries: its ``pretrained_cfg``, or for files
    saved before there was one, its model's default config with the saved preprocessing."""
    if metadata.get("model") not in _BUILDERS:
        return None
    saved = metadata.get("pretrained_cfg")
    if not saved and metadata.get("preprocessing"):
        saved = Preprocessing.from_dict(metadata["preprocessing"]).data_config()
    if not saved:
        return None
    return trained_cfg(default_cfg(metadata["model"]), saved, metadata.get("class_names"))


def cfg_for_origin(model, origin: str) -> dict:
    """``model.pretrained_cfg``, or with ``origin`` (``--weights-origin``) the preprocessing of weights
    made by torchvision (its tag's, else ImageNet's), timm ([-1, 1] pixels, bicubic) or on ImageNet."""
    cfg = model.pretrained_cfg
    if origin == "auto":
        return cfg
    entry = model_entry(model.model_name)
    tv = [t for t in entry.tags if entry.cfgs[t]["source"] == "torchvision"]
    preset = {"timm": {"mean": INCEPTION_MEAN, "std": INCEPTION_STD, "interpolation": "bicubic", "crop_pct": 0.875},
              "imagenet": {k: plain_cfg({})[k] for k in ("mean", "std", "interpolation", "crop_pct")}}
    keys = ("mean", "std", "interpolation", "crop_pct")
    if origin == "torchvision":
        chosen = instance_cfg(entry.cfg(tv[0]), model) if tv else preset["imagenet"]
    elif origin in preset:
        chosen = preset[origin]
    else:
        raise ConfigError(f"unknown weights origin '{origin}': choose one of auto, torchvision, timm, imagenet")
    return {**cfg, **{k: chosen[k] for k in keys}}


def load_model(path):
    """Rebuilds a model from an inceptorch checkpoint (its metadata names the model and its options)."""
    meta = read_metadata(path)
    if not meta or "model" not in meta:
        raise ConfigError(f"{path} has no inceptorch metadata naming its model: pass the model name as well "
                          "(for instance --model inception_v3 --weights FILE)")
    return create_model(meta["model"], **meta.get("build_config", {}), checkpoint_path=path)
