"""Transfer learning: freezing part of a network, and readying a loaded checkpoint for new data.

The trainer calls these; they never call the trainer (``training.finetune`` is train with these defaults).
"""

import logging

from torch import nn

from .errors import ConfigError
from .weights import read_metadata

log = logging.getLogger("inceptorch")

# --- freezing -------------------------------------------------------------------------------------

def head_modules(model: nn.Module) -> list[str]:
    """Module paths that fine-tuning always trains: the classifiers and the whole aux heads."""
    heads = model.present_head_layers() if hasattr(model, "present_head_layers") else []
    aux = [name for name in getattr(model, "aux_heads", ()) if getattr(model, name, None) is not None]
    return heads + aux


def _inside(path: str, roots) -> bool:
    return any(path == root or path.startswith(root + ".") for root in roots)


def block_names(model: nn.Module) -> list[str]:
    """Blocks to name in ``freeze``: the model's children that have weights, containers such as
    ``features`` opened one level, heads left out. (Any deeper module path is accepted too.)"""
    heads = head_modules(model)
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
    heads = head_modules(model)
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


# --- starting from a checkpoint ------------------------------------------------------------------------------------

def frozen_part(config, epoch: int) -> str:
    """What stays frozen during ``epoch`` (counted from 0): ``--freeze`` until ``--unfreeze-after``
    epochs have passed, then nothing (the second phase, at ``--lr-unfrozen``)."""
    if config.unfreeze_after is not None and epoch >= config.unfreeze_after:
        return "none"
    return config.freeze


def start_from_checkpoint(config, model):
    """Readies ``model``, just loaded from ``--weights``, for its new data, and returns ``config``.

    What the checkpoint expects as input (size, mean, std) is the model's ``pretrained_cfg``, which
    ``data.preprocessing`` reads. Heads for another number of classes were already left fresh by the
    loader; heads trained on other classes of the same number (the checkpoint's class names differ
    from the data's) are reset here.
    """
    if not config.weights:
        return config
    saved = read_metadata(config.weights)
    saved_classes = saved.get("class_names")
    if saved_classes and len(saved_classes) == model.num_classes and list(saved_classes) != list(model.class_names):
        log.info("%s was trained on other classes (%s): training fresh heads", config.weights,
                 ", ".join(saved_classes[:5]) + (" ..." if len(saved_classes) > 5 else ""))
        model.reset_classifier(model.num_classes)
    return config
