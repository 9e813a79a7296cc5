"""Image files and how they become model inputs: safe decoding, and preprocessing by checkpoint origin.

Decoding guards against decompression bombs and turns any mode (grey, CMYK, 16-bit, transparent)
into 8-bit grey or RGB, with the camera's EXIF orientation applied. A pretrained backbone is only as
good as the inputs it is fed: Google's Inception weights saw pixels scaled to [-1, 1], torchvision's
other weights ImageNet-normalized pixels, and each family was evaluated on a center crop of a
resized image. ``preprocessing_for`` picks those numbers, and fine-tuned checkpoints carry them in
their metadata, so prediction sees what training saw. Data loading, prediction and transfer all use
this one module.
"""

import math
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import nn

from .config import WEIGHT_ORIGINS
from .errors import ConfigError, DataError, InputSizeError
from .weights import read_metadata

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # Google's Inception weights see pixels in [-1, 1]
ERASING = {"p": 0.5, "scale": (0.02, 0.4), "ratio": (0.3, 3.3)}  # Zhong et al., 2017: chance, area, h/w
CROP_FRACTION = 0.875  # ImageNet evaluation: resize to crop / 0.875 (342 for 299, 256 for 224), then crop


# --- reading image files ----------------------------------------------------------------------------

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"}


def read_image(path, channels: int = 3) -> Image.Image:
    """Decodes an image file to an 8-bit PIL image with ``channels`` channels (1 or 3).

    Raises ``DataError`` naming the file when it is missing, truncated or not an image.
    """
    try:
        with warnings.catch_warnings():  # before opening: the pixel limit is checked there already
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                image = ImageOps.exif_transpose(opened)
                image.load()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        reason = (str(e).splitlines() or [type(e).__name__])[0][:100]
        raise DataError(f"{path}: cannot decode it as an image ({reason})") from None
    return convert_image(image, channels)


def convert_image(image: Image.Image, channels: int = 3) -> Image.Image:
    """Any PIL image -> 8-bit grey (``channels=1``) or RGB: high bit depths stretched to 8 bits,
    transparent parts laid on white."""
    if channels not in (1, 3):
        raise InputSizeError(f"images can be read for 1- or 3-channel models, not {channels}: "
                             "create the model with in_chans=1 or 3")
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        values = np.asarray(image, dtype=np.float64)
        values = np.where(np.isfinite(values), values, 0.0)  # NaN or infinite pixels of float TIFFs
        low, high = values.min(), values.max()
        image = Image.fromarray(((values - low) * (255 / max(high - low, 1e-12))).round().astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    return image.convert("L" if channels == 1 else "RGB")


def is_listed_image(path: Path) -> bool:
    """An image file found in a folder: a regular file (never a device or a pipe, whose reading could
    block) or a broken link, which is then named as unreadable rather than silently left out."""
    regular_or_broken = path.is_file() or (path.is_symlink() and not path.exists())
    return regular_or_broken and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def image_files(paths: Iterable) -> list[Path]:
    """Files named directly (whatever their suffix), and the image files found under folders, sorted."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if is_listed_image(p))
        else:
            files.append(path)
    return files


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

    def adapted(self, in_chans: int = 3, crop: int | None = None) -> "Preprocessing":
        """The same preprocessing for a model with ``in_chans`` channels, at another crop side (the
        resize keeps its ratio to the crop)."""
        crop = crop or self.crop
        return Preprocessing(crop, round(crop * self.resize / self.crop), _for_channels(self.mean, in_chans),
                             _for_channels(self.std, in_chans), self.interpolation)

    def transform(self, augment=(), normalize: bool = True):
        """The torchvision transform: PIL image (or uint8 tensor) -> float tensor.

        ``augment`` may hold ``"crop"`` (a random resized crop of 25-100 % of the image instead of the
        center crop), ``"flip"`` and ``"erase"`` (random erasing after normalizing, as for batches);
        ``normalize=False`` stops at [0, 1], for measuring the statistics.
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
        # --auto-augment: torchvision's policies draw from torch's global generator, which ImageFiles seeds
        # for each image from (seed, epoch, index), so they keep the same draws for any number of processes
        policies = {"randaugment": v2.RandAugment, "trivialaugment": v2.TrivialAugmentWide, "augmix": v2.AugMix,
                    "autoaugment": v2.AutoAugment}
        steps += [policies[name](interpolation=interpolation) for name in augment if name in policies]
        steps.append(v2.ToDtype(torch.float32, scale=True))
        if normalize:
            steps.append(v2.Normalize(self.mean, self.std))
        if "erase" in augment:
            steps.append(v2.RandomErasing(**ERASING))
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
    is most likely torchvision's); a model created with ``pretrained=`` carries its tag's own
    (``pretrained_preprocessing``). ``"torchvision"``: the model's own ``default_mean_std`` where it
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
            return Preprocessing.from_dict(saved).adapted(in_chans, image_size)
    if origin == "auto" and getattr(model, "pretrained_preprocessing", None) is not None:
        return model.pretrained_preprocessing.adapted(in_chans, image_size)
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
