"""Commands that train and score: train, finetune, evaluate."""

import argparse
import json
from dataclasses import MISSING, fields
from typing import get_args

from ..config import TrainConfig, resolve, typed
from ..ensemble import train_ensemble
from ..errors import ConfigError
from ..scoring import score
from ..tables import text_table
from ..training import finetune, train
from .options import add_command, add_engine_options, add_pretrained, engine_choice


def _parser_of(key: str):
    """argparse's ``type=`` for option ``key``: its text as the field's type, or argparse's error."""
    def parse(text: str):
        try:
            return typed(key, text)
        except ConfigError as e:
            raise argparse.ArgumentTypeError(str(e).removeprefix(f"--{key.replace('_', '-')} ")) from None
    parse.__name__ = key
    return parse


def _add_config_flags(p) -> None:
    """One flag per ``TrainConfig`` field, its value typed as the field is. Only the flags given reach
    the config, so a recipe (or the run being resumed) supplies the rest."""
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else None
        shown = f" (default: {default})" if default not in (None, "", False) else ""
        if "const" in f.metadata:  # a flag whose value may be left out
            p.add_argument(flag, nargs="?", const=f.metadata["const"], default=argparse.SUPPRESS,
                           type=_parser_of(f.name), metavar=f.metadata["metavar"], help=f.metadata["help"])
        elif bool in (get_args(f.type) or (f.type,)):  # amp's auto is for recipes; --amp and --no-amp choose
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                           help=f.metadata["help"])
        else:
            p.add_argument(flag, default=argparse.SUPPRESS, type=_parser_of(f.name),
                           metavar=f.metadata.get("metavar") or f.name.upper(), help=f.metadata["help"] + shown)


def _run_train(args, start=None) -> int:
    """Trains MODEL on DATA and writes a run folder: config, metrics, curves, checkpoints, log. Options come
    from the defaults, then --recipe, then the flags given. Under torchrun every process runs the same
    command."""
    options = {k: v for k, v in vars(args).items() if k not in ("run", "command")}
    if start is None and resolve(options).ensemble > 1:
        return _report_ensemble(train_ensemble(options))
    result = (start or train)(options)
    if result.run_dir is None:  # under torchrun, only the process that writes the run folder reports
        return 0
    last = result.metrics
    if result.best_epoch is None:
        print(f"trained {last['epoch']} epochs on every image, none validated (--val-split 0); run folder "
              f"{result.run_dir}")
        return 0
    print(f"val acc {last['val_acc']:.4f} after {last['epoch']} epochs (best {result.best_val_acc:.4f} at epoch "
          f"{result.best_epoch}); run folder {result.run_dir}")
    return 0


def _report_ensemble(result) -> int:
    each = ", ".join("-" if m.metrics["val_acc"] is None else f"{m.metrics['val_acc']:.4f}" for m in result.members)
    if result.val_acc is None:
        print(f"trained {len(result.members)} members on every image, none validated (--val-split 0); run "
              f"folder {result.run_dir}")
        return 0
    print(f"ensemble val acc {result.val_acc:.4f} (mean probabilities of {len(result.members)} members; "
          f"each alone {each}); run folder {result.run_dir}")
    return 0


def add_train(sub):
    p = add_command(sub, "train", _run_train, "train a model (default: on the built-in sample, offline)")
    _add_config_flags(p)


def _run_evaluate(args) -> int:
    """Scores an inceptorch checkpoint; the model and its preprocessing come from the checkpoint, the data by
    default too (the validation images it was trained beside)."""
    result = score(args.weights, args.model, pretrained=args.pretrained, engine=engine_choice(args),
                   calibration=args.calibration, device=args.device, data=args.data, split=args.split,
                   data_root=args.data_root, val_split=args.val_split, batch_size=args.batch_size,
                   workers=args.workers, strict=args.strict, test_flip=args.test_flip)
    if args.format == "json":
        print(json.dumps(vars(result), indent=1))
        return 0
    print(f"accuracy {result.accuracy:.4f} on {result.num_images} images (loss {result.loss:.4f})\n")
    print(text_table(["class", "precision", "recall", "f1", "support"],
                     [[name, f"{row['precision']:.4f}", f"{row['recall']:.4f}", f"{row['f1']:.4f}", row["support"]]
                      for name, row in result.per_class.items()]))
    print("\nconfusion matrix (rows: true class, columns: predicted, in the order above)")
    print(text_table(["", *result.classes], [[name, *row] for name, row in zip(result.classes, result.confusion)]))
    return 0


def add_evaluate(sub):
    p = add_command(sub, "evaluate", _run_evaluate,
                    "accuracy, per-class precision/recall and confusion matrix of a checkpoint")
    p.add_argument("--weights", metavar="CKPT", nargs="+",
                   help="an inceptorch .safetensors checkpoint; several: the mean probabilities of an ensemble")
    p.add_argument("--model", help="model name, with --pretrained")
    add_pretrained(p)
    p.add_argument("--data", help="builtin, mnist, fashion-mnist, cifar10, a .npz file or an image folder "
                                  "(default: the checkpoint's)")
    p.add_argument("--data-root", help="folder holding a local copy of mnist, fashion-mnist or cifar10")
    p.add_argument("--split", choices=("val", "test"), default="val")
    p.add_argument("--val-split", type=float, help="held-out part of the training data (default: the checkpoint's)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--workers", type=int, default=2, help="data loader processes for image folders")
    p.add_argument("--strict", action="store_true", help="stop on an unreadable image instead of skipping it")
    p.add_argument("--test-flip", action="store_true",
                   help="average each image's logits with its mirror image's (as --test-flip in training)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    add_engine_options(p, "none: int8 needs it")


def _run_finetune(args) -> int:
    """Train with a pretrained backbone: --pretrained [TAG] (published weights, see inceptorch weights) or
    --weights CKPT (inceptorch, torchvision or timm) is required, --freeze defaults to backbone (only the
    heads train), and --unfreeze-after EPOCHS adds a second phase that trains everything, the freed layers
    at --lr-unfrozen. Every train option applies."""
    return _run_train(args, start=finetune)


def add_finetune(sub):
    p = add_command(sub, "finetune", _run_finetune,
                    "fine-tune a pretrained model on an image folder (or any train data)")
    _add_config_flags(p)

