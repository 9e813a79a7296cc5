"""Prediction and feature extraction on image files.

Files are decoded one by one: a file that cannot be read is reported with its name and the reason,
and every other file still gets its prediction. Images are converted to the model's channels
(grey photos to RGB, colour to grey for one-channel models), transparent parts laid on white, and
the camera's EXIF orientation applied, before the checkpoint's preprocessing.
"""

import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from .errors import ConfigError, DataError, InputSizeError
from .transfer import Preprocessing, preprocessing_for

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


@dataclass
class Prediction:
    """The ``topk`` classes of one image, best first, or the reason it could not be read."""

    source: str
    classes: list[str] = field(default_factory=list)
    probabilities: list[float] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict:
        if self.error:
            return {"file": self.source, "error": self.error}
        return {"file": self.source,
                "top": [{"class": c, "probability": p} for c, p in zip(self.classes, self.probabilities)]}


def _items(images) -> list:
    """A path, PIL image or iterable of them -> a list, with folders expanded to their image files."""
    if isinstance(images, (str, Path, Image.Image)):
        images = [images]
    images = list(images)
    return image_files(images) if all(isinstance(i, (str, Path)) for i in images) else images


def _name(item, index: int) -> str:
    return str(item) if isinstance(item, (str, Path)) else f"image {index}"


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _batches(model, items, preprocessing: Preprocessing | None, batch_size: int,
             failures: list[Prediction] | None) -> Iterator[tuple[list[str], torch.Tensor]]:
    """Yields (names, input batch) for ``items`` (paths or PIL images); unreadable files go to
    ``failures``, or raise ``DataError`` when it is None."""
    transform = (preprocessing or preprocessing_for(model)).transform()
    channels = getattr(model, "in_chans", 3)
    names, tensors = [], []
    for index, item in enumerate(items):
        name = _name(item, index)
        try:
            image = read_image(item, channels) if isinstance(item, (str, Path)) else convert_image(item, channels)
        except DataError as e:
            if failures is None:
                raise
            failures.append(Prediction(name, error=str(e)))
            continue
        names.append(name)
        tensors.append(transform(image))
        if len(tensors) == batch_size:
            yield names, torch.stack(tensors)
            names, tensors = [], []
    if tensors:
        yield names, torch.stack(tensors)


def class_names_of(model) -> list[str]:
    """The model's class names (saved with fine-tuned checkpoints), or the class indices as text."""
    names = getattr(model, "class_names", None)
    return list(names) if names else [str(i) for i in range(model.num_classes)]


@torch.inference_mode()
def predict(model, images: Iterable, *, topk: int = 5, preprocessing: Preprocessing | None = None,
            batch_size: int = 16) -> list[Prediction]:
    """Top-``topk`` classes and probabilities for each image (file path, folder or PIL image).

    Order follows ``images`` (folders expanded, sorted); files that cannot be decoded get a
    ``Prediction`` with ``error`` set instead of raising. ``preprocessing`` defaults to the model's
    natural one (see ``transfer.preprocessing_for``).
    """
    if topk < 1 or batch_size < 1:
        raise ConfigError(f"topk and batch size must be at least 1, got {topk} and {batch_size}")
    items = _items(images)
    model.eval()
    names = class_names_of(model)
    k = min(topk, len(names))
    device = _model_device(model)
    results: dict[str, Prediction] = {}
    failures: list[Prediction] = []
    for sources, batch in _batches(model, items, preprocessing, batch_size, failures):
        probabilities = model(batch.to(device)).float().softmax(dim=1)
        top = probabilities.topk(k, dim=1)
        for source, values, indices in zip(sources, top.values.tolist(), top.indices.tolist()):
            results[source] = Prediction(source, [names[i] for i in indices], values)
    results.update((f.source, f) for f in failures)
    return [results[_name(item, i)] for i, item in enumerate(items)]


def pooled_features(model, batch: torch.Tensor) -> torch.Tensor:
    """Global-average-pooled ``forward_features``: one (N, C) vector per image."""
    features = model.forward_features(batch)
    return features if features.dim() == 2 else F.adaptive_avg_pool2d(features, 1).flatten(1)


@torch.inference_mode()
def extract_features(model, images, *, preprocessing: Preprocessing | None = None, batch_size: int = 16,
                     skipped: list[Prediction] | None = None) -> torch.Tensor:
    """Feature vectors (N, C) of ``images``: a batch tensor already preprocessed, or file paths,
    folders and PIL images (preprocessed as in ``predict``).

    An undecodable file raises ``DataError``, unless a list is passed as ``skipped``: then it is
    appended there and left out of the result (whose rows follow the remaining files in order).
    """
    model.eval()
    device = _model_device(model)
    if isinstance(images, torch.Tensor):
        return torch.cat([pooled_features(model, chunk.to(device)).cpu() for chunk in images.split(batch_size)])
    items = _items(images)
    rows = [pooled_features(model, batch.to(device)).cpu()
            for _, batch in _batches(model, items, preprocessing, batch_size, skipped)]
    if not rows:
        raise DataError("no image could be read: check the paths and files given")
    return torch.cat(rows)


def load_for_inference(weights, model: str | None = None, *, origin: str = "auto",
                       image_size: int | None = None) -> tuple[torch.nn.Module, Preprocessing]:
    """A model in eval mode and its preprocessing, from a checkpoint.

    An inceptorch checkpoint names its model, class names and preprocessing; a foreign one (a
    torchvision or timm file) needs ``model``, takes its number of classes from the head's shape,
    and gets ImageNet's class names when it has 1000 classes.
    """
    from .models import create_model, load_model
    from .weights import read_metadata, read_state_dict

    if model is None or read_metadata(weights).get("model"):
        net = load_model(weights)
    else:
        net = create_model(model)
        head = net.present_head_layers()[0]
        head_weight = read_state_dict(weights).get(f"{head}.weight")
        num_classes = head_weight.shape[0] if head_weight is not None else net.num_classes
        net = create_model(model, num_classes=num_classes, weights=weights)
        if num_classes == 1000:
            from torchvision.models import Inception_V3_Weights

            net.class_names = Inception_V3_Weights.IMAGENET1K_V1.meta["categories"]
    return net.eval(), preprocessing_for(net, origin, weights, image_size)
