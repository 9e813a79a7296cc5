"""Transfer learning: freezing part of a network, and preprocessing that matches a checkpoint's origin.

A pretrained backbone is only as good as the inputs it is fed: Google's Inception weights saw
pixels scaled to [-1, 1], torchvision's other weights ImageNet-normalized pixels, and each family
was evaluated on a center crop of a resized image. ``preprocessing_for`` picks those numbers, and
fine-tuned checkpoints carry them in their metadata, so prediction sees what training saw.
"""

import logging
import math
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from .config import WEIGHT_ORIGINS
from .errors import ConfigError
from .models.layers import IMAGENET_MEAN, IMAGENET_STD, INCEPTION_MEAN_STD
from .weights import read_metadata

log = logging.getLogger("inceptorch")

CROP_FRACTION = 0.875  # ImageNet evaluation: resize to crop / 0.875 (342 for 299, 256 for 224), then crop


# --- freezing -------------------------------------------------------------------------------------

def _head_modules(model: nn.Module) -> list[str]:
    """Module paths that fine-tuning always trains: the classifiers and the whole aux heads."""
    heads = model.present_head_layers() if hasattr(model, "present_head_layers") else []
    aux = [name for name in getattr(model, "aux_heads", ()) if getattr(model, name, None) is not None]
    return heads + aux


def _inside(path: str, roots) -> bool:
    return any(path == root or path.startswith(root + ".") for root in roots)


def block_names(model: nn.Module) -> list[str]:
    """Blocks to name in ``freeze``: the model's children that have weights, containers such as
    ``features`` opened one level, heads left out. (Any deeper module path is accepted too.)"""
    heads = _head_modules(model)
    blocks = []
    for name, child in model.named_children():
        if isinstance(child, nn.Sequential):
            blocks += [(f"{name}.{sub}", grandchild) for sub, grandchild in child.named_children()]
        else:
            blocks.append((name, child))
    return [name for name, block in blocks
            if not _inside(name, heads) and any(True for _ in block.parameters())]


def freeze(model: nn.Module, what: str = "backbone") -> nn.Module:
    """Freezes part of ``model`` for fine-tuning and returns it.

    ``what``: ``"backbone"`` (everything but the classifiers and aux heads), ``"none"`` (unfreeze
    all), or a block name such as ``"Mixed_6e"``: that block and every layer registered before it
    (see ``block_names``). Frozen parameters get ``requires_grad=False``, so no optimizer step can
    change them, and frozen batch-norm layers stay in eval mode even under ``model.train()``: they
    keep normalizing with the checkpoint's statistics instead of re-estimating them from small
    fine-tuning batches (``ImageClassifier.train`` honours their ``keep_eval`` flag).
    """
    names = [name for name, _ in model.named_modules()]
    heads = _head_modules(model)
    if what == "none":
        last = -1
    elif what == "backbone":
        last = len(names)
    elif what in names and what and not _inside(what, heads):
        last = max(i for i, name in enumerate(names) if _inside(name, [what]))
    else:
        raise ConfigError(f"cannot freeze '{what}': use backbone, none or a block of "
                          f"{getattr(model, 'model_name', type(model).__name__)} "
                          f"({', '.join(block_names(model))})")
    for index, (path, module) in enumerate(model.named_modules()):
        frozen = index <= last and not _inside(path, heads)
        for parameter in module.parameters(recurse=False):
            parameter.requires_grad_(not frozen)
        if isinstance(module, nn.modules.batchnorm._NormBase):
            module.keep_eval = frozen
            module.train(model.training and not frozen)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("freeze %s: training %s of %s parameters", what, f"{trainable:,}", f"{total:,}")
    return model


def unfreeze(model: nn.Module) -> nn.Module:
    """Makes every parameter trainable and every norm layer follow ``train()`` again."""
    return freeze(model, "none")


# --- preprocessing by checkpoint origin ---------------------------------------------------------

@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes a model input: resize the shorter side, center crop, scale to [0, 1],
    normalize per channel."""

    crop: int
    resize: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        return cls(crop=int(d["crop"]), resize=int(d["resize"]), mean=tuple(d["mean"]), std=tuple(d["std"]),
                   interpolation=d.get("interpolation", "bilinear"))

    def transform(self, augment=(), normalize: bool = True):
        """The torchvision transform: PIL image (or uint8 tensor) -> float tensor.

        ``augment`` may hold ``"crop"`` (a random resized crop of 25-100 % of the image instead of the
        center crop) and ``"flip"``; ``normalize=False`` stops at [0, 1], for measuring the statistics.
        """
        from torchvision.transforms import InterpolationMode, v2

        interpolation = InterpolationMode(self.interpolation)
        if "crop" in augment:
            steps = [v2.ToImage(), v2.RandomResizedCrop(self.crop, scale=(0.25, 1), interpolation=interpolation,
                                                        antialias=True)]
        else:
            steps = [v2.ToImage(), v2.Resize(self.resize, interpolation=interpolation, antialias=True),
                     v2.CenterCrop(self.crop)]
        if "flip" in augment:
            steps.append(v2.RandomHorizontalFlip())
        steps.append(v2.ToDtype(torch.float32, scale=True))
        if normalize:
            steps.append(v2.Normalize(self.mean, self.std))
        return v2.Compose(steps)


def _for_channels(values: tuple[float, ...], in_chans: int) -> tuple[float, ...]:
    """RGB statistics for a model with another number of channels (grey: their average)."""
    if len(values) == in_chans:
        return tuple(values)
    if in_chans == 1:
        return (sum(values) / len(values),)
    return tuple(values[i % len(values)] for i in range(in_chans))


def preprocessing_for(model: nn.Module, origin: str = "auto", weights=None, image_size: int | None = None
                      ) -> Preprocessing:
    """The preprocessing that matches where ``model``'s weights come from.

    ``origin``: ``"auto"`` reads it from an inceptorch checkpoint's metadata (what its training
    used), and otherwise takes the model's ``pretrained_layout`` (a foreign .pth for inception_v3
    is most likely torchvision's). ``"torchvision"``: the model's own ``default_mean_std`` where it
    has one (googlenet and inception_v3: [-1, 1] pixels, or ImageNet statistics when the model
    applies ``transform_input`` itself), else ImageNet statistics. ``"timm"``: mean and std 0.5,
    bicubic resizing. ``"imagenet"``: ImageNet statistics. The crop is ``image_size`` or the
    model's natural size, taken from an image resized to crop / 0.875: 256 for 224, and 342 for 299
    as torchvision rounds (timm rounds down, to 341).
    """
    if origin not in WEIGHT_ORIGINS:
        raise ConfigError(f"unknown weights origin '{origin}': choose one of {', '.join(WEIGHT_ORIGINS)}")
    in_chans = getattr(model, "in_chans", 3)
    if origin == "auto" and weights is not None:
        saved = read_metadata(weights).get("preprocessing")
        if saved:
            found = Preprocessing.from_dict(saved)
            crop = image_size or found.crop
            return Preprocessing(crop, round(crop * found.resize / found.crop), _for_channels(found.mean, in_chans),
                                 _for_channels(found.std, in_chans), found.interpolation)
    if origin == "auto":
        origin = getattr(model, "pretrained_layout", None) or "imagenet"
    crop = image_size or getattr(model, "default_input_size", 224)
    interpolation = "bilinear"
    if origin == "timm":
        (mean, std), interpolation = INCEPTION_MEAN_STD, "bicubic"
    elif origin == "torchvision" and hasattr(model, "default_mean_std"):
        mean, std = model.default_mean_std
    else:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    resize = math.floor(crop / CROP_FRACTION) if origin == "timm" else round(crop / CROP_FRACTION)
    return Preprocessing(crop, resize, _for_channels(mean, in_chans), _for_channels(std, in_chans), interpolation)


# --- fine-tuning ------------------------------------------------------------------------------------

def frozen_part(config, epoch: int) -> str:
    """What stays frozen during ``epoch`` (counted from 0): ``--freeze`` until ``--unfreeze-after``
    epochs have passed, then nothing (the second phase, at ``--lr-unfrozen``)."""
    if config.unfreeze_after is not None and epoch >= config.unfreeze_after:
        return "none"
    return config.freeze


def start_from_checkpoint(config, model):
    """Readies ``model``, just loaded from ``--weights``, for its new data, and returns ``config``
    with the mean and std the checkpoint expects (where it gives none itself): the backbone's features
    are only as good as inputs scaled as in its own training.

    Heads for another number of classes were already left fresh by the loader; heads trained on other
    classes of the same number (the checkpoint's class names differ from the data's) are reset here.
    """
    if not config.weights:
        return config
    saved_classes = read_metadata(config.weights).get("class_names")
    if saved_classes and len(saved_classes) == model.num_classes and list(saved_classes) != list(model.class_names):
        log.info("%s was trained on other classes (%s): training fresh heads", config.weights,
                 ", ".join(saved_classes[:5]) + (" ..." if len(saved_classes) > 5 else ""))
        model.reset_classifier(model.num_classes)
    if config.mean is not None and config.std is not None:
        return config
    expected = preprocessing_for(model, config.weights_origin, config.weights)
    return replace(config, mean=config.mean or list(expected.mean), std=config.std or list(expected.std))


def finetune(config=None, **options):
    """``inceptorch.train`` from a checkpoint, training only the heads unless told otherwise.

    The same options as ``train``; ``weights`` is required and ``freeze`` defaults to ``"backbone"``.
    The backbone comes from the checkpoint (torchvision's, timm's or inceptorch's), heads for the
    data's classes start fresh, the loss adds ``aux_weight`` x each aux head's loss, and with
    ``unfreeze_after`` a second phase trains everything, the freed layers at ``lr_unfrozen``.
    The checkpoints written carry the class names and the preprocessing, for ``predict``.
    """
    from .config import TrainConfig
    from .engine import train

    if isinstance(config, TrainConfig):  # its fields that differ from the defaults were chosen
        default = TrainConfig()
        config = {k: v for k, v in config.to_dict().items() if v != getattr(default, k)}
    options = {**(config or {}), **options}
    if not options.get("resume"):
        if not options.get("weights"):
            raise ConfigError("fine-tuning starts from a checkpoint: pass --weights CKPT (an inceptorch, "
                              "torchvision or timm file)")
        options.setdefault("freeze", "backbone")
    return train(options)
