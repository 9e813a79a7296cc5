"""Training options: one typed dataclass whose every field is also a flag of ``inceptorch train``.

Options are resolved in one order, lowest first: the defaults below, a caller's own defaults
(``finetune``'s), a recipe file or the saved config of a run being resumed, then what the caller gave
explicitly: CLI flags, dict keys, or the fields passed to ``TrainConfig(...)`` (``config.given``),
even where a value equals the default. Values are converted to each field's annotated type by
pydantic (text from the command line, YAML and JSON values), so a new option is one field here.
"""

import dataclasses
import difflib
import functools
import json
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal, get_args, get_origin

import yaml
from pydantic import TypeAdapter, ValidationError

from .errors import ConfigError

RECIPES_DIR = Path(__file__).parent / "recipes"
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "rmsproptf")
SCHEDULES = ("cosine", "onecycle", "step", "constant")
AUGMENTATIONS = ("flip", "crop", "erase")
DEVICES = ("auto", "cpu", "cuda")
WEIGHT_ORIGINS = ("auto", "torchvision", "timm", "imagenet")
AT_END = "end"  # --val-every end: score the last epoch only, however many --epochs there are
AUTO_RESUME = "auto"  # --resume auto: continue the run folder of --name from its newest checkpoint, or start it
AUTO_AUGMENTS = ("randaugment", "trivialaugment", "augmix", "autoaugment")
BEST_OF = ("auto", "raw", "ema")


def check_weights_choice(weights, model, pretrained, command: str) -> None:
    """That the weights to load are named once: a checkpoint, or a model name with ``pretrained`` (True or
    a tag) for its published weights."""
    if (weights is None) == (not pretrained) or (pretrained and not isinstance(model, str)):
        raise ConfigError(f"{command} needs its weights named once: a checkpoint (--weights CKPT), or published "
                          "weights (--model NAME --pretrained [TAG], see inceptorch weights)")


def _opt(default, help: str, metavar: str | None = None):
    """A field with its CLI help text (and the placeholder shown for its value)."""
    return field(default=default, metadata={"help": help, "metavar": metavar})


@dataclass
class TrainConfig:
    """Every training option; ``given`` names the fields the constructor was passed (see ``resolve``)."""

    # what to train on what
    model: str = _opt("mnist_inception", "model name (see `inceptorch list`)")
    model_args: dict = field(default_factory=dict, metadata={
        "help": "extra model options, KEY=VALUE[,KEY=VALUE] (for instance width=0.5)", "metavar": "K=V,..."})
    data: str = _opt("builtin", "builtin, mnist, fashion-mnist, cifar10, a .npz file or an image folder")
    data_root: str | None = _opt(None, "folder holding a local copy of mnist, fashion-mnist or cifar10 "
                                 "(torchvision's files, or cifar10/train/<class>/ image files)")
    val_split: float = _opt(0.1, "part of the training data held out for validation where the data has no "
                            "val split: a fraction, or a number of images when 1 or more; 0 trains on "
                            "every image (a final model, once the recipe is fixed)")
    train_samples: int | None = _opt(None, "use only the first N training images (quick runs)")
    val_samples: int | None = _opt(None, "use only the first N validation images (quick runs)")
    recipe: str | None = _opt(None, "a recipe: a name from inceptorch/recipes or a YAML file; flags override "
                              "its options")
    # inputs as the model sees them
    image_size: int | None = _opt(None, "input side in pixels (default: the model's own size, or the data's "
                                  "own for small-image models)")
    progressive_size: int | None = _opt(None, "progressive resizing: the first --progressive-epochs epochs "
                                        "train on inputs resized down to this side, at about (this / side)^2 "
                                        "of the cost an image; the later ones, and every scoring, at full "
                                        "size", "PIXELS")
    progressive_epochs: int = _opt(0, "how many of the first epochs train at --progressive-size", "N")
    in_chans: int | None = _opt(None, "input channels of the model (default: the data's; grey data is "
                                "repeated to RGB for 3)")
    mean: tuple[float, ...] | None = _opt(None, "normalization mean per channel (default: the training "
                                          "data's)", "M[,M,M]")
    std: tuple[float, ...] | None = _opt(None, "normalization std per channel (default: the training data's)",
                                         "S[,S,S]")
    augment: str = _opt("", "batch augmentations, comma separated: flip, crop, erase (random erasing)",
                       "flip,crop")
    test_flip: bool = _opt(False, "validation also scores each image mirrored and averages the two "
                           "predictions (for data whose classes survive a flip, unlike digits)")
    val_every: int | Literal["end"] = _opt(1, "score the validation split after every N epochs and after the last, or "
                                "after the last only (end); the epochs between have no val_loss or val_acc, "
                                "and their time goes to training", "N|end")
    workers: int = _opt(2, "data loader processes for image folders")
    strict: bool = _opt(False, "stop on an unreadable image instead of skipping it with a warning")
    cache_images: bool | None = _opt(None, "decode an image folder once and hold it in memory as one uint8 "
                                     "tensor (its images must share one size): --cache-images up to 3/4 of "
                                     "the available memory, --no-cache-images never (default: up to "
                                     "--cache-limit-mb)")
    cache_limit_mb: float = _opt(2048.0, "largest decoded size of an image folder held in memory without "
                                 "--cache-images, in MB")
    # loss and optimization
    epochs: int = _opt(10, "training epochs")
    batch_size: int = _opt(64, "global batch size (split across processes under torchrun)")
    lr: float = _opt(0.05, "peak learning rate")
    optimizer: str = _opt("sgd", f"one of {', '.join(OPTIMIZERS)}")
    momentum: float = _opt(0.9, "momentum of sgd and rmsprop")
    nesterov: bool = _opt(False, "Nesterov momentum for sgd")
    weight_decay: float = _opt(5e-4, "weight decay (decoupled for adamw)")
    schedule: str = _opt("cosine", f"learning-rate schedule: {', '.join(SCHEDULES)}")
    warmup_epochs: float = _opt(1.0, "linear warm-up from lr/10 over the first epochs, at most half the run "
                                "(onecycle: its rising part; 0: none)")
    step_epochs: int = _opt(30, "step schedule: epochs between learning-rate drops")
    step_gamma: float = _opt(0.1, "step schedule: factor of each drop")
    label_smoothing: float = _opt(0.0, "label smoothing of the cross-entropy")
    aux_weight: float | None = _opt(None, "weight of the auxiliary losses (default: the model's own, "
                                    "0.3 for googlenet, 0.4 for inception_v3; 0 turns aux heads off)")
    grad_clip: float = _opt(0.0, "clip the gradient norm to this value (0: off)")
    seed: int = _opt(0, "random seed: weights, data order and augmentation")
    # transfer learning (inceptorch finetune)
    pretrained: bool | str = field(default=False, metadata={
        "help": "start from published weights: the model's default, or a tag (see `inceptorch weights`); "
                "heads for other classes start fresh", "metavar": "TAG", "const": True})
    weights: str | None = _opt(None, "start from this checkpoint (inceptorch's, torchvision's or timm's); heads "
                               "for other classes start fresh", metavar="CKPT")
    weights_origin: str = _opt("auto", "whose preprocessing the --weights expect: auto (the checkpoint's own, "
                               "else the model's layout), torchvision, timm or imagenet")
    freeze: str = _opt("none", "what stays fixed: backbone (train the heads only), none, or a block name "
                       "(that block and every layer before it)", metavar="backbone|none|BLOCK")
    unfreeze_after: int | None = _opt(None, "train the whole model after this many epochs (second phase)",
                                      metavar="EPOCHS")
    lr_unfrozen: float | None = _opt(None, "peak learning rate of the parameters --unfreeze-after frees "
                                     "(default: --lr / 10)")
    # where and how it runs
    device: str = _opt("auto", "auto, cpu or cuda")
    amp: bool | Literal["auto"] = _opt(False, "mixed precision (bfloat16, or float16 with loss scaling on older GPUs); "
                           "recipes may say auto: on a GPU or a CPU with AVX512-BF16 or AMX, float32 elsewhere")
    channels_last: bool = _opt(False, "channels-last memory format")
    compile: bool = _opt(False, "torch.compile the model")
    ensemble: int = _opt(1, "train N copies at once, each in a process of its own with 1/N of the CPU "
                         "threads and seeds seed, seed+1, ..., and score the mean of their probabilities",
                         "N")
    detect_anomaly: bool = _opt(False, "debugging: make autograd name the operation whose backward gives NaN "
                                "(torch.autograd.set_detect_anomaly; slow)")
    dist_timeout: float = _opt(300.0, "seconds a process of a torchrun run waits for the others before it "
                               "stops with an error (a dead or stuck process)")
    # run folder
    out_dir: str = _opt("runs", "folder of run folders")
    name: str | None = _opt(None, "run folder name (default: MODEL-DATA, numbered when taken)")
    resume: str | None = _opt(None, "continue the run in this folder from its last checkpoint", "RUN_DIR")
    quiet: bool = _opt(False, "no progress bars or per-epoch lines on the console")
    # averaging, accumulation, mixing and step checkpoints, as timm's train.py has them
    model_ema: float | None = _opt(None, "keep an exponential moving average of the weights with this decay (for instance 0.9998), warmed up as timm's ModelEmaV3: validated beside the raw weights, written as ema.safetensors", "DECAY")
    best_of: str = _opt("auto", "which weights best.safetensors keeps and the best epoch is chosen on: raw, ema (with --model-ema), or auto (ema with --model-ema, as timm)", "auto|raw|ema")
    grad_accum_steps: int = _opt(1, "micro-batches of --batch-size per optimizer step (effective batch: their product); the learning rate and schedule count optimizer steps", "N")
    sync_bn: bool = _opt(False, "synchronized batch norm across the processes of a torchrun run on GPUs")
    mixup: float = _opt(0.0, "MixUp: alpha of the Beta distribution of the mixing weight (0: off; timm's 0.8)", "ALPHA")
    cutmix: float = _opt(0.0, "CutMix: alpha of the Beta distribution of the pasted area (0: off; timm's 1.0)", "ALPHA")
    mix_prob: float = _opt(1.0, "probability that a batch is mixed (MixUp or CutMix)", "P")
    mix_switch_prob: float = _opt(0.5, "with both --mixup and --cutmix: probability that a batch uses CutMix", "P")
    auto_augment: str | None = _opt(None, f"augmentation policy for image folders: {', '.join(AUTO_AUGMENTS)} (torchvision.transforms.v2)", "POLICY")
    checkpoint_every_steps: int = _opt(0, "also write the resumable state every N optimizer steps, inside epochs (0: at epoch ends only)", "N")
    keep_checkpoints: int = _opt(2, "how many of the newest step checkpoints are kept", "K")

    def __new__(cls, *args, **given):
        """Remembers which fields were given: a given value equal to the default still counts."""
        config = super().__new__(cls)
        config._given = frozenset(f.name for f in fields(cls)[:len(args)]).union(given)
        return config

    @property
    def given(self) -> frozenset[str]:
        """The fields passed to the constructor (``dataclasses.replace`` passes them all)."""
        return getattr(self, "_given", frozenset())

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validates_after(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` (counted from 1) is scored on the validation split."""
        return epoch == self.epochs or (self.val_every != AT_END and epoch % self.val_every == 0)


FIELDS = {f.name: f for f in fields(TrainConfig)}


def _known(key: str, where: str) -> str:
    if key not in FIELDS:
        close = difflib.get_close_matches(key, FIELDS, n=1)
        hint = f": did you mean '{close[0]}'?" if close else f": known options are {', '.join(FIELDS)}"
        raise ConfigError(f"unknown option '{key}' in {where}{hint}")
    return key


def _split_list(value) -> list:
    return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else list(value)


def _key_values(text: str) -> dict:
    pairs = [item.split("=", 1) for item in _split_list(text)]
    if any(len(p) != 2 for p in pairs):
        raise ConfigError(f"--model-args '{text}' is not a list of KEY=VALUE pairs")
    return {k.strip(): yaml.safe_load(v) for k, v in pairs}


# Options whose text form is a list: "0.5,0.5,0.5" for a tuple, "width=0.5,dropout=0.2" for a mapping
TEXT_FORMS = {"mean": _split_list, "std": _split_list, "model_args": _key_values}


@functools.cache
def _adapter(key: str) -> TypeAdapter:
    return TypeAdapter(FIELDS[key].type)


def _kinds(annotation) -> list[str]:
    words = {int: "a whole number", float: "a number", str: "text",
             dict: "a mapping of KEY: VALUE", type(None): "none"}
    if get_origin(annotation) is Literal:
        return [str(a) for a in get_args(annotation)]
    if get_origin(annotation) is tuple:
        return ["a list of numbers"]
    if get_args(annotation):
        return [word for a in get_args(annotation) for word in _kinds(a)]
    return ["true", "false"] if annotation is bool else [words.get(annotation, str(annotation))]


def _kind(annotation) -> str:
    """What a type annotation accepts, in words: 'a whole number or end'."""
    kinds = _kinds(annotation)
    return " or ".join(kinds) if len(kinds) < 3 else ", ".join(kinds[:-1]) + " or " + kinds[-1]


def typed(key: str, value):
    """``value`` of option ``key`` as its field's type: text as the command line gives it ("0.05",
    "flip,crop", "width=0.5"), or a Python, YAML or JSON value (a list for a tuple)."""
    if key == "augment" and isinstance(value, (list, tuple)):
        value = ",".join(value)
    if isinstance(value, os.PathLike):  # data, out_dir, weights, resume... given as a pathlib.Path
        value = os.fspath(value)
    try:
        if isinstance(value, str):
            if key in TEXT_FORMS:
                return _adapter(key).validate_python(TEXT_FORMS[key](value))
            return _adapter(key).validate_strings(value)
        return _adapter(key).validate_python(value)
    except ValidationError:
        raise ConfigError(f"--{key.replace('_', '-')} must be {_kind(FIELDS[key].type)}, got {value!r}"
                          ) from None


def load_recipe(recipe: str) -> dict:
    """Options of a recipe: a YAML file path, or the name of one shipped in inceptorch/recipes."""
    path = Path(recipe)
    if not path.is_file():
        path = RECIPES_DIR / f"{recipe}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))
        raise ConfigError(f"recipe '{recipe}' is neither a file nor a shipped recipe: choose one of "
                          f"{', '.join(names) or '(none shipped yet)'} or give a YAML file path")
    try:
        options = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"recipe {path} is not valid YAML ({str(e).splitlines()[0]}): fix the file"
                          ) from None
    if not isinstance(options, dict):
        raise ConfigError(f"recipe {path} must be a mapping of options (key: value lines)")
    for key in ("recipe", "resume"):
        if key in options:
            raise ConfigError(f"recipe {path} may not set '{key}'")
    return {_known(str(k).replace("-", "_"), f"recipe {path}"): v for k, v in options.items()}


def saved_config(run_dir) -> dict:
    """The resolved options a run folder was started with."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a run folder (no config.json): give the folder a run was "
                          "written to, for instance --resume runs/NAME")
    return {k: v for k, v in json.loads(path.read_text()).items() if k in FIELDS}


def explicit_options(config=None, **overrides) -> dict:
    """The options a caller chose, typed: a dict's keys, or a ``TrainConfig``'s given fields, then
    ``overrides``."""
    if isinstance(config, TrainConfig):
        config = {k: getattr(config, k) for k in config.given}
    chosen = {_known(k.replace("-", "_"), "the options"): v for k, v in (config or {}).items()}
    chosen.update({_known(k, "the options"): v for k, v in overrides.items()})
    return {k: typed(k, v) for k, v in chosen.items()}


def resolve(config=None, *, defaults: dict | None = None, **overrides) -> TrainConfig:
    """Defaults < ``defaults`` < recipe or resumed run's config < explicit options; then checks every
    value.

    ``config`` is a dict of explicit options or a ``TrainConfig``, whose ``given`` fields are the
    explicit ones (equal to the default or not); ``defaults``: a caller's own defaults, which a
    recipe overrides (``finetune``'s ``freeze="backbone"``). Every field of the result is given, so
    resolving it again changes nothing.
    """
    explicit = explicit_options(config, **overrides)
    options = {k: typed(k, v) for k, v in (defaults or {}).items()}
    auto = explicit.get("resume") == AUTO_RESUME  # training.train finds the folder's checkpoint, if any
    if auto:
        explicit["resume"] = None
    if explicit.get("resume"):
        options.update({k: typed(k, v) for k, v in saved_config(explicit["resume"]).items()})
    elif explicit.get("recipe"):
        options.update({k: typed(k, v) for k, v in load_recipe(explicit["recipe"]).items()})
    if auto:
        explicit["resume"] = AUTO_RESUME
    resolved = TrainConfig(**{**TrainConfig().to_dict(), **options, **explicit})
    check(resolved)
    return resolved


def check(c: TrainConfig) -> None:
    """Refuses values that cannot work, with the fix in the message."""
    def need(ok: bool, message: str):
        if not ok:
            raise ConfigError(message)

    need(c.lr > 0 and math.isfinite(c.lr),
         f"--lr must be a positive number, got {c.lr}: for instance --lr 0.05")
    need(c.batch_size > 0,
         f"--batch-size must be at least 1, got {c.batch_size}: for instance --batch-size 128")
    need(c.epochs > 0, f"--epochs must be at least 1, got {c.epochs}")
    need(c.ensemble > 0, f"--ensemble must be at least 1 (one model), got {c.ensemble}")
    need(c.val_every == AT_END or c.val_every > 0,
         f"--val-every must be at least 1 or {AT_END}, got {c.val_every}: for instance --val-every 1")
    need(c.val_split >= 0, f"--val-split must be a fraction, a number of images or 0 (hold none out), got "
                           f"{c.val_split}")
    need(c.amp in (True, False, "auto"), f"amp must be true, false or auto, got {c.amp!r}")
    need(c.optimizer in OPTIMIZERS,
         f"unknown optimizer '{c.optimizer}': choose one of {', '.join(OPTIMIZERS)}")
    need(c.schedule in SCHEDULES, f"unknown schedule '{c.schedule}': choose one of {', '.join(SCHEDULES)}")
    need(c.device in DEVICES or c.device.startswith("cuda:"),
         f"unknown device '{c.device}': choose auto, cpu, cuda or cuda:N")
    unknown = [a for a in _split_list(c.augment) if a not in AUGMENTATIONS]
    need(not unknown, f"unknown augmentation '{','.join(unknown)}': choose from {', '.join(AUGMENTATIONS)}")
    need(0 <= c.label_smoothing < 1, f"--label-smoothing must be in [0, 1), got {c.label_smoothing}")
    need(c.aux_weight is None or c.aux_weight >= 0, f"--aux-weight must be 0 or more, got {c.aux_weight}")
    need(c.grad_clip >= 0, f"--grad-clip must be 0 (off) or more, got {c.grad_clip}")
    need(c.weight_decay >= 0, f"--weight-decay must be 0 or more, got {c.weight_decay}")
    need(c.warmup_epochs >= 0, f"--warmup-epochs must be 0 or more, got {c.warmup_epochs}")
    need(c.step_epochs > 0, f"--step-epochs must be at least 1, got {c.step_epochs}")
    need(c.cache_limit_mb >= 0, f"--cache-limit-mb must be 0 or more, got {c.cache_limit_mb}")
    need(c.workers >= 0, f"--workers must be 0 or more, got {c.workers}")
    need(c.dist_timeout > 0, f"--dist-timeout must be a positive number of seconds, got {c.dist_timeout}")
    need(c.weights_origin in WEIGHT_ORIGINS,
         f"unknown --weights-origin '{c.weights_origin}': choose one of {', '.join(WEIGHT_ORIGINS)}")
    need(c.unfreeze_after is None or (c.freeze != "none" and 1 <= c.unfreeze_after < c.epochs),
         f"--unfreeze-after must be between 1 and --epochs - 1 ({c.epochs - 1}) with --freeze set, "
         f"got {c.unfreeze_after}")
    need(c.lr_unfrozen is None or (c.lr_unfrozen > 0 and math.isfinite(c.lr_unfrozen)),
         f"--lr-unfrozen must be a positive number, got {c.lr_unfrozen}")
    need((c.progressive_size is None) == (c.progressive_epochs == 0),
         "--progressive-size and --progressive-epochs go together: pass both (for instance "
         "--progressive-size 20 --progressive-epochs 6), or neither")
    need(0 <= c.progressive_epochs < c.epochs,
         f"--progressive-epochs must leave the last epoch at full size: between 0 and --epochs - 1 "
         f"({c.epochs - 1}), got {c.progressive_epochs}")
    for key in ("train_samples", "val_samples", "image_size", "in_chans", "progressive_size"):
        value = getattr(c, key)
        need(value is None or value > 0, f"--{key.replace('_', '-')} must be at least 1, got {value}")
    need(c.in_chans in (None, 1, 3), f"--in-chans must be 1 or 3, got {c.in_chans}")
    for key in ("mean", "std"):
        value = getattr(c, key)
        need(value is None or len(value) in (1, 3), f"--{key} takes 1 or 3 comma-separated numbers")
    need(c.std is None or min(c.std) > 0, "--std values must be positive")
    need(isinstance(c.model_args, dict), "model_args must be a mapping of option names to values")
    need(not (c.pretrained and c.weights), "pass either --pretrained or --weights, not both")
    check_timm_options(c)


def check_timm_options(c: TrainConfig) -> None:
    """Refuses bad values of the averaging, accumulation, mixing and step-checkpoint options."""
    def need(ok: bool, message: str):
        if not ok:
            raise ConfigError(message)

    need(c.model_ema is None or 0 < c.model_ema < 1,
         f"--model-ema must be a decay between 0 and 1, got {c.model_ema}: for instance --model-ema 0.9998")
    need(c.best_of in BEST_OF, f"--best-of must be one of {', '.join(BEST_OF)}, got '{c.best_of}'")
    need(c.best_of != "ema" or c.model_ema is not None, "--best-of ema needs --model-ema DECAY")
    need(c.grad_accum_steps >= 1, f"--grad-accum-steps must be at least 1, got {c.grad_accum_steps}")
    for key in ("mixup", "cutmix"):
        value = getattr(c, key)
        need(value >= 0 and math.isfinite(value), f"--{key} must be 0 (off) or a positive alpha, got {value}: "
                                                  f"for instance --{key} {0.8 if key == 'mixup' else 1.0}")
    for key in ("mix_prob", "mix_switch_prob"):
        value = getattr(c, key)
        need(0 <= value <= 1, f"--{key.replace('_', '-')} must be a probability in [0, 1], got {value}")
    need(c.auto_augment in (None, *AUTO_AUGMENTS),
         f"unknown --auto-augment '{c.auto_augment}': choose one of {', '.join(AUTO_AUGMENTS)}")
    need(c.checkpoint_every_steps >= 0,
         f"--checkpoint-every-steps must be 0 (off) or more, got {c.checkpoint_every_steps}")
    need(c.keep_checkpoints >= 1, f"--keep-checkpoints must be at least 1, got {c.keep_checkpoints}")
    need(c.resume != AUTO_RESUME or bool(c.name),
         "--resume auto continues the run folder of a fixed name: pass --name NAME too")
