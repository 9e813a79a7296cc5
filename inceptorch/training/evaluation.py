"""Scoring a model on held-out images: loss, accuracy, per-class report and confusion matrix (``evaluate``)."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import data as datasets
from .. import sources
from ..config import check_weights_choice, resolve
from ..devices import Processes, pick_device
from ..errors import ConfigError, DataError
from ..images import Preprocessing
from ..models import create_model, load_model
from ..weights import read_metadata


def classification_report(confusion: torch.Tensor, classes: list[str]) -> dict:
    """Accuracy, and precision, recall and F1 per class, from a confusion matrix (rows: true class)."""
    confusion = confusion.double()
    hits = confusion.diagonal()
    precision = hits / confusion.sum(0).clamp_min(1)
    recall = hits / confusion.sum(1).clamp_min(1)
    f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
    per_class = {name: {"precision": p, "recall": r, "f1": f, "support": int(s)}
                 for name, p, r, f, s in zip(classes, precision.tolist(), recall.tolist(), f1.tolist(),
                                             confusion.sum(1).tolist())}
    return {"accuracy": (hits.sum() / confusion.sum().clamp_min(1)).item(), "classes": per_class,
            "confusion": confusion.long().tolist()}


# Scoring runs the weights channels-last, as the recipes train: about 2.5 times NCHW's images/s for googlenet_small
# on CPU, whose NCHW max pools are ten times slower (float32, two threads; the same predictions).
SCORING_FORMAT = torch.channels_last


@torch.no_grad()
def evaluate_batches(model: nn.Module, batches, num_classes: int, device: torch.device,
                     processes: Processes | None = None, amp_dtype=None, flip: bool = False) -> dict:
    """Loss, accuracy and confusion matrix of ``model`` over every image of ``batches`` (all processes).

    ``flip``: test-time augmentation, the logits averaged with those of the mirrored image.
    """
    processes = processes or Processes()
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.long, device=device)
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
            logits = model(x).float()
            if flip:
                logits = (logits + model(x.flip(-1)).float()) / 2
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        confusion += torch.bincount(y * num_classes + logits.argmax(1), minlength=num_classes * num_classes)
    loss_sum = processes.sum(loss_sum)
    confusion = processes.sum(confusion).view(num_classes, num_classes).cpu()
    count = int(confusion.sum())
    return {"loss": loss_sum.item() / max(count, 1), "acc": confusion.diagonal().sum().item() / max(count, 1),
            "confusion": confusion, "count": count}


def validation_scores(model, ema, val_batches, scored: bool, device, processes, amp_dtype, flip: bool) -> dict:
    """Validation loss and accuracy of the weights, and of their average with --model-ema (None when the
    epoch is not scored)."""
    def score(net):
        return evaluate_batches(net, val_batches, net.num_classes, device, processes, amp_dtype, flip) \
            if scored else {"loss": None, "acc": None, "confusion": None}

    val = score(model)
    row = {"val_loss": val["loss"], "val_acc": val["acc"], "confusion": val["confusion"]}
    if ema is not None:  # the averaged weights, scored beside the raw ones
        averaged = score(ema.module)
        row.update(ema_val_loss=averaged["loss"], ema_val_acc=averaged["acc"])
    return row


@dataclass
class EvalResult:
    accuracy: float
    loss: float
    num_images: int
    classes: list[str]
    per_class: dict[str, dict]  # class -> precision, recall, f1, support
    confusion: list[list[int]]  # rows: true class, columns: predicted class


def evaluate(model=None, data: str | None = None, *, split: str = "val", data_root: str | None = None,
             val_split: float | None = None, batch_size: int = 256, device: str = "auto", workers: int = 2,
             strict: bool = False, test_flip: bool = False, pretrained: bool | str = False,
             runner=None) -> EvalResult:
    """Scores a model on a split of a data set: accuracy, per-class precision and recall, confusion
    matrix. ``model`` is an ``nn.Module`` (scored on ``data``, then left in the mode it was in), a
    checkpoint (by default on the data set it was trained on and validated with), or with
    ``pretrained`` a model name whose published weights are scored, on data whose classes are theirs.

    ``runner``: what computes the logits instead of the eager model, for instance
    ``optimize_for_inference`` of it on another backend or precision (the model still gives the
    classes, preprocessing and data)."""
    if split not in ("val", "test"):
        raise ConfigError(f"--split must be val or test, got '{split}'")
    if not isinstance(model, nn.Module) or pretrained:
        check_weights_choice(None if pretrained else model, model, pretrained, "evaluate")
    if isinstance(model, nn.Module):
        name = getattr(model, "model_name", type(model).__name__)
        net, meta, scored_what = model, {"model": name}, name
    elif pretrained:
        net = create_model(model, pretrained=pretrained)
        meta, scored_what = {"model": net.model_name}, f"{net.model_name}.{net.pretrained_cfg['tag']}"
    else:
        net, meta, scored_what = load_model(model), read_metadata(model), model
    spec = meta.get("data", {})
    data = data or spec.get("data")
    if data is None:
        raise ConfigError(f"{scored_what} does not record its data set: pass --data")
    same_data = data == spec.get("data")
    held_out = val_split if val_split is not None else spec.get("val_split") if same_data else None
    config = resolve({"data": data, "model": meta["model"], "batch_size": batch_size, "workers": workers,
                      "strict": strict,
                      "data_root": data_root or (spec.get("data_root") if same_data else None),
                      "val_split": 0.1 if held_out is None else held_out})
    source = sources.open_source(config, (split,))
    if split not in source.splits and val_split == 0:
        raise ConfigError(f"--val-split 0 holds no images of {data} out to score: give a fraction such as 0.1, "
                          "or --split test")
    if split not in source.splits:
        raise DataError(f"{scored_what} was trained on every image of {data} (--val-split 0), so none is held "
                        "out to score it on: evaluate it on other images (--data) or a test split (--split test)")
    named = getattr(net, "class_names", None)
    classes = named or source.classes
    if len(source.classes) != len(classes) or (named and source.classes != classes):
        raise DataError(f"{scored_what} was trained on the classes {_some(classes)}, but {data} has "
                        f"{_some(source.classes)}: evaluate on data with the same classes (or fine-tune first)")
    prep = Preprocessing.of(net)  # the checkpoint's, or the tag's
    device = pick_device(device)
    batches = datasets.loaders(source, prep, config, device=device)[split]
    net.to(device, memory_format=SCORING_FORMAT)
    training = net.training
    try:
        scored = evaluate_batches(net if runner is None else runner, batches, len(classes), device, flip=test_flip)
    finally:
        net.train(training)
    report = classification_report(scored["confusion"], classes)
    return EvalResult(report["accuracy"], scored["loss"], scored["count"], list(classes), report["classes"],
                      report["confusion"])


def _some(names, shown: int = 5) -> str:
    return ", ".join(names[:shown]) + (f" ... ({len(names)} classes)" if len(names) > shown else "")
