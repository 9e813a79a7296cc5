"""Prediction and feature extraction on image files.

Files are decoded one by one: a file that cannot be read is reported with its name and the reason,
and every other file still gets its prediction. Images are converted to the model's channels
(grey photos to RGB, colour to grey for one-channel models), transparent parts laid on white, and
the camera's EXIF orientation applied, before the checkpoint's preprocessing.
"""

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .config import check_weights_choice
from .errors import ConfigError, DataError
from .images import (
    Preprocessing,
    convert_image,
    create_transform,
    image_files,
    read_image,
)
from .inference import optimize_for_inference
from .models import cfg_for_origin, create_model, load_model
from .models.cfgs import imagenet_classes
from .outputs import writable_file
from .tables import csv_text, text_table
from .weights import read_metadata, read_state_dict


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
    """Where the model's weights are; the CPU for an engine's model, which has none in PyTorch."""
    weight = next(model.parameters(), None)
    return weight.device if weight is not None else torch.device("cpu")


def _batches(model, items, preprocessing: Preprocessing | None, batch_size: int,
             failures: list[Prediction] | None) -> Iterator[tuple[list[str], torch.Tensor]]:
    """Yields (names, input batch) for ``items`` (paths or PIL images); unreadable files go to
    ``failures``, or raise ``DataError`` when it is None."""
    transform = preprocessing.transform() if preprocessing else create_transform(model)
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
    ``Prediction`` with ``error`` set instead of raising. ``preprocessing`` defaults to the model's own
    (``create_transform(model)``, from its ``pretrained_cfg``). The model runs in eval mode
    and is left in the mode it was in.
    """
    if topk < 1 or batch_size < 1:
        raise ConfigError(f"topk and batch size must be at least 1, got {topk} and {batch_size}")
    items = _items(images)
    names = class_names_of(model)
    k = min(topk, len(names))
    device = _model_device(model)
    results: dict[str, Prediction] = {}
    failures: list[Prediction] = []
    with _in_eval_mode(model):
        for sources, batch in _batches(model, items, preprocessing, batch_size, failures):
            probabilities = model(batch.to(device)).float().softmax(dim=1)
            top = probabilities.topk(k, dim=1)
            for source, values, indices in zip(sources, top.values.tolist(), top.indices.tolist()):
                results[source] = Prediction(source, [names[i] for i in indices], values)
    results.update((f.source, f) for f in failures)
    return [results[_name(item, i)] for i, item in enumerate(items)]


def pooled_features(model, batch: torch.Tensor) -> torch.Tensor:
    """What the classifier reads, timm's pre-logits (``forward_head(..., pre_logits=True)``): one (N, C)
    vector per image, average-pooled if the model keeps the map (``global_pool=""``); a model made
    from ``PooledFeatures`` (optimized or run by an engine) gives them itself."""
    if getattr(model, "returns_features", False):
        return model(batch)
    features = model.forward_head(model.forward_features(batch), pre_logits=True)
    return features if features.dim() == 2 else F.adaptive_avg_pool2d(features, 1).flatten(1)


class PooledFeatures(torch.nn.Module):
    """A model whose forward gives ``pooled_features``: what ``embed`` optimizes or exports to an engine."""

    returns_features = True

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        for name in ("model_name", "in_chans", "min_input_size", "default_input_size", "pretrained_cfg"):
            if hasattr(model, name):
                setattr(self, name, getattr(model, name))

    def forward(self, x):
        return pooled_features(self.model, x)


@contextmanager
def _in_eval_mode(model):
    """Eval mode for the duration, then the mode the caller's model was in."""
    training = getattr(model, "training", False)
    model.eval()
    try:
        yield
    finally:
        model.train(training)


@torch.inference_mode()
def extract_features(model, images, *, preprocessing: Preprocessing | None = None, batch_size: int = 16,
                     skipped: list[Prediction] | None = None) -> torch.Tensor:
    """Feature vectors (N, C) of ``images`` (``pooled_features``): a batch tensor already
    preprocessed, or file paths, folders and PIL images (preprocessed as in ``predict``). The model
    runs in eval mode and is left in the mode it was in.

    An undecodable file raises ``DataError``, unless a list is passed as ``skipped``: then it is
    appended there and left out of the result (whose rows follow the remaining files in order).
    """
    device = _model_device(model)
    with _in_eval_mode(model):
        if isinstance(images, torch.Tensor):
            return torch.cat([pooled_features(model, chunk.to(device)).cpu() for chunk in images.split(batch_size)])
        rows = [pooled_features(model, batch.to(device)).cpu()
                for _, batch in _batches(model, _items(images), preprocessing, batch_size, skipped)]
    if not rows:
        raise DataError("no image could be read: check the paths and files given")
    return torch.cat(rows)


def prediction_table(results: list[Prediction]) -> str:
    """One line an image: its path, then its top classes with their probabilities."""
    return text_table(None, [[r.source, "  ".join(f"{c} {p:6.1%}" for c, p in zip(r.classes, r.probabilities))]
                             for r in results], left=2)


def embed(model, images, out, *, preprocessing: Preprocessing | None = None, batch_size: int = 16
          ) -> tuple[tuple[int, int], list[Prediction]]:
    """``extract_features`` of image files written to ``out``: ``.npy`` (rows in the order of the files
    listed in ``OUT.files.txt`` beside it) or ``.csv`` (a row a file: its path, then f0, f1, ...).
    Returns the features' shape and the files that could not be read (named, left out)."""
    out, files, skipped = writable_file(out, (".npy", ".csv")), image_files(images), []
    features = extract_features(model, files, preprocessing=preprocessing, batch_size=batch_size,
                                skipped=skipped).numpy()
    failed = {s.source for s in skipped}
    rows = [str(f) for f in files if str(f) not in failed]
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".npy":
        np.save(out, features)
        out.with_suffix(".files.txt").write_text("".join(f"{r}\n" for r in rows))
    else:
        out.write_text(csv_text(["file", *(f"f{i}" for i in range(features.shape[1]))],
                                [[r, *(f"{v:.7g}" for v in row)] for r, row in zip(rows, features)]))
    return features.shape, skipped


def optimized_for_images(model, images, *, backend: str = "torch", precision: str = "fp32",
                         preprocessing: Preprocessing | None = None, batch_size: int = 16, calibration=None,
                         features: bool = False):
    """``model`` through ``optimize_for_inference``, for ``predict`` (or, with ``features``,
    ``extract_features``) on ``images``: prepared, and for ``auto`` measured, on their first batch;
    int8 calibrated (and ``auto``'s bf16 and int8 judged) on ``calibration`` (a folder or files), else
    on the images themselves: too few of them, and ``auto`` keeps to fp32."""
    if _model_device(model).type != "cpu":
        raise ConfigError("--backend and --precision choose a CPU path: leave out --device cuda")
    items = _items(images)
    try:
        _, example = next(_batches(model, items, preprocessing, batch_size, []))
    except StopIteration:
        raise DataError("no image could be read: check the paths and files given") from None
    judged = precision != "fp32" and "auto" in (precision, backend)  # bf16 and int8 judged on held-out images
    if (precision == "int8" or judged) and calibration is None:
        calibration = [i for i in items if isinstance(i, (str, Path))] or None
    if calibration is not None and not isinstance(calibration, torch.Tensor):
        files = image_files([calibration] if isinstance(calibration, (str, Path)) else calibration)
        calibration = torch.cat([b for _, b in _batches(model, files[:300], preprocessing, 64, [])])
    net = PooledFeatures(model) if features else model
    return optimize_for_inference(net.eval(), example, backend=backend, precision=precision,
                                  calibration=calibration)


def load_for_inference(weights=None, model: str | None = None, *, origin: str = "auto",
                       image_size: int | None = None, pretrained: bool | str = False
                       ) -> tuple[torch.nn.Module, Preprocessing]:
    """A model in eval mode and its preprocessing, from a checkpoint or from ``pretrained`` weights.

    An inceptorch checkpoint names its model, class names and preprocessing; a foreign one (a
    torchvision or timm file) needs ``model``, takes its number of classes from the head's shape,
    and gets ImageNet's class names when it has 1000 classes. ``pretrained`` (True or a tag) with
    ``model`` loads published weights, which carry their class names and preprocessing. The
    preprocessing is read from the model's ``pretrained_cfg`` (``origin``: another publisher's).
    """
    check_weights_choice(weights, model, pretrained, "the model to run")
    if pretrained:
        net = create_model(model, pretrained=pretrained)
    elif model is None or read_metadata(weights).get("model"):
        net = load_model(weights)
    else:
        net = create_model(model)
        head = net.present_head_layers()[0]
        head_weight = read_state_dict(weights).get(f"{head}.weight")
        num_classes = head_weight.shape[0] if head_weight is not None else net.num_classes
        net = create_model(model, num_classes=num_classes, weights=weights)
        if num_classes == 1000 and net.class_names is None:
            net.class_names = list(imagenet_classes())
    return net.eval(), Preprocessing.of(cfg_for_origin(net, origin), image_size=image_size, in_chans=net.in_chans)
