"""Image files and how they become model inputs: safe decoding, and a model's transform from its config.

Decoding guards against decompression bombs and turns any mode (grey, CMYK, 16-bit, transparent)
into 8-bit grey or RGB, with the camera's EXIF orientation applied. A pretrained backbone is only as
good as the inputs it is fed: what they were is the model's ``pretrained_cfg`` (its input size,
interpolation, crop_pct, mean and std), which this module only reads (``resolve_data_config``,
``create_transform``); fine-tuned checkpoints carry their own, so prediction sees what training saw.
"""

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from .errors import ConfigError, DataError, InputSizeError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = INCEPTION_STD = (0.5, 0.5, 0.5)  # Google's Inception weights see pixels in [-1, 1]
ERASING = {"p": 0.5, "scale": (0.02, 0.4), "ratio": (0.3, 3.3)}  # Zhong et al., 2017: chance, area, h/w


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


# --- preprocessing: a model's data config -> a torchvision transform ----------------------------------

@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes a model input: resize the shorter side, center crop, scale to [0, 1],
    normalize per channel. The data pipeline's view of a data config (``resolve_data_config``)."""

    crop: int
    resize: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        """From ``to_dict``'s fields (checkpoints saved before they carried a ``pretrained_cfg``)."""
        return cls(crop=int(d["crop"]), resize=int(d["resize"]), mean=tuple(d["mean"]), std=tuple(d["std"]),
                   interpolation=d.get("interpolation", "bilinear"))

    @classmethod
    def from_data_config(cls, config: dict) -> "Preprocessing":
        """From timm's data config keys: the resize is ``floor(side / crop_pct)``, as timm computes it
        (the tiny margin keeps torchvision's 299 / 342 from rounding down to 341)."""
        side = config["input_size"][-1]
        return cls(side, math.floor(side / config["crop_pct"] + 1e-6), tuple(config["mean"]), tuple(config["std"]),
                   config["interpolation"])

    @classmethod
    def of(cls, model_or_cfg, *, image_size: int | None = None, in_chans: int | None = None) -> "Preprocessing":
        """A model's (or config's) preprocessing: ``resolve_data_config``'s, as the data pipeline reads it."""
        return cls.from_data_config(resolve_data_config(model_or_cfg, image_size=image_size, in_chans=in_chans))

    def data_config(self) -> dict:
        """timm's data config keys for this preprocessing."""
        return {"input_size": (len(self.mean), self.crop, self.crop), "interpolation": self.interpolation,
                "mean": self.mean, "std": self.std, "crop_pct": self.crop / self.resize, "crop_mode": "center"}

    def transform(self, augment=(), normalize: bool = True):
        """The torchvision (v2) transform: PIL image (or uint8 tensor) -> float tensor.

        Resizing and cropping come first, on the PIL image itself as timm's transform does (PIL's
        bicubic differs from torch's), then the conversion to a tensor. ``augment`` may hold ``"crop"``
        (a random resized crop of 25-100 % of the image instead of the center crop), ``"flip"`` and
        ``"erase"`` (random erasing after normalizing, as for batches); ``normalize=False`` stops at
        [0, 1], for measuring the statistics.
        """
        from torchvision.transforms import InterpolationMode, v2

        interpolation = InterpolationMode(self.interpolation)
        if "crop" in augment:
            steps = [v2.RandomResizedCrop(self.crop, scale=(0.25, 1), interpolation=interpolation, antialias=True)]
        else:
            steps = [v2.Resize(self.resize, interpolation=interpolation, antialias=True), v2.CenterCrop(self.crop)]
        if "flip" in augment:
            steps.append(v2.RandomHorizontalFlip())
        steps.append(v2.ToImage())
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


def per_channel(values, in_chans: int) -> tuple[float, ...]:
    """A mean or std per input channel from one value or one per RGB channel (grey: their average)."""
    values = tuple(float(v) for v in values)
    if len(values) == in_chans:
        return values
    if in_chans == 1:
        return (sum(values) / len(values),)
    return tuple(values[i % len(values)] for i in range(in_chans))


def resolve_data_config(model_or_cfg, *, image_size: int | None = None, in_chans: int | None = None) -> dict:
    """The data config (timm's keys: ``input_size``, ``interpolation``, ``mean``, ``std``,
    ``crop_pct``, ``crop_mode``) of a model (read from its ``pretrained_cfg``) or of a config dict,
    as timm's ``resolve_model_data_config``; mean and std follow the model's input channels, and
    ``image_size`` replaces the crop side (the resize keeping its ratio to it), ``in_chans`` the channels."""
    cfg = getattr(model_or_cfg, "pretrained_cfg", model_or_cfg)
    if not isinstance(cfg, dict):
        raise ConfigError(f"{type(model_or_cfg).__name__} has no pretrained_cfg: create it with "
                          "inceptorch.create_model, or pass a config dict")
    in_chans = in_chans or getattr(model_or_cfg, "in_chans", cfg["input_size"][0])
    side = image_size or cfg["input_size"][-1]
    return {"input_size": (in_chans, side, side), "interpolation": cfg["interpolation"],
            "mean": per_channel(cfg["mean"], in_chans), "std": per_channel(cfg["std"], in_chans),
            "crop_pct": cfg["crop_pct"], "crop_mode": cfg.get("crop_mode", "center")}


def create_transform(model_or_cfg, training: bool = False, *, image_size: int | None = None):
    """The torchvision (v2) transform for a model or a (pretrained or data) config: for evaluation,
    resize to ``side / crop_pct``, center crop, scale to [0, 1] and normalize (timm's eval transform);
    with ``training``, a random resized crop and a horizontal flip instead of resize and crop.

    It takes PIL images, as timm's does, or uint8 tensors. Models that rescale their input themselves
    (torchvision's Inception weights, ``transform_input``) keep doing it in the model: the transform is
    torchvision's ``Weights.transforms()``, and the model torchvision's model.
    """
    prep = Preprocessing.from_data_config(resolve_data_config(model_or_cfg, image_size=image_size))
    return prep.transform(("crop", "flip") if training else ())
