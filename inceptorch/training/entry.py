"""Starting a training run from its options: ``train`` and ``finetune`` read the data, build the model and
the run folder, and hand them to the loop."""

from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.distributed as dist

from .. import data as datasets
from .. import runs, sources, transfer
from ..config import AUTO_RESUME, TrainConfig, explicit_options, load_recipe, resolve
from ..devices import start_processes
from ..errors import ConfigError
from ..models import create_model, default_cfg
from ..models.cfgs import trained_cfg
from ..weights import read_metadata
from .loop import best_key, best_scored, fit, say
from .steps import autocast_dtype, sync_batch_norm
from .stopping import CtrlC


@dataclass
class TrainResult:
    run_dir: Path | None  # None in the processes of a distributed run that do not write
    metrics: dict  # the last epoch's row of metrics.csv
    best_val_acc: float | None  # None, as best_epoch, when nothing was validated (--val-split 0)
    best_epoch: int | None
    history: list[dict] = field(repr=False)

    @property
    def best_weights(self) -> Path | None:
        """best.safetensors, or last.safetensors when no epoch was scored."""
        if self.run_dir is None:
            return None
        return self.run_dir / ("best.safetensors" if self.best_epoch else "last.safetensors")


def _aux_weight(config: TrainConfig) -> float:
    """``--aux-weight``, or the model's own default (its pretrained config's ``aux_weight``)."""
    if config.aux_weight is not None:
        return config.aux_weight
    return float(default_cfg(config.model).get("aux_weight", 0.0))


def build_model(config: TrainConfig, classes: list[str], in_chans: int):
    """The model ``config`` names, for these classes and input channels, with aux heads when weighted."""
    try:
        model = create_model(config.model, num_classes=len(classes), in_chans=in_chans,
                             aux_logits=bool(config.aux_weight), weights=config.weights,
                             pretrained=config.pretrained, **config.model_args)
    except TypeError as e:
        raise ConfigError(f"{config.model} does not take the options {config.model_args} ({e}): check "
                          "--model-args") from None
    model.class_names = list(classes)
    return model


def _data_spec(config: TrainConfig) -> dict:
    """Where the data came from, so that evaluate can find the same validation images again."""
    data = config.data
    if data not in sources.KNOWN_SETS and Path(data).exists():
        data = str(Path(data).resolve())
    return {"data": data, "data_root": config.data_root and str(Path(config.data_root).resolve()),
            "val_split": config.val_split}


def train(config: TrainConfig | dict | None = None, **options) -> TrainResult:
    """Trains a model as ``config`` (or keyword options) says and returns the final metrics and run folder.

    >>> inceptorch.train({"model": "mnist_inception", "data": "mnist", "data_root": "../shared/data"})
    """
    config = resolve(config, **options)
    if config.resume == AUTO_RESUME and runs.has_checkpoint(Path(config.out_dir) / config.name):
        config = resolve(replace(config, resume=str(Path(config.out_dir) / config.name)))
    if config.ensemble > 1:
        raise ConfigError(f"ensemble: {config.ensemble} trains with inceptorch.train_ensemble, as the train "
                          "command does; train() trains one model")
    config = replace(config, aux_weight=_aux_weight(config))
    processes, device, started = start_processes(config.device, config.dist_timeout)
    try:
        torch.manual_seed(config.seed)
        source = sources.open_source(config)
        model = build_model(config, source.classes, config.in_chans or source.channels)
        model = sync_batch_norm(model, config, processes, device)
        config = transfer.start_from_checkpoint(config, model)
        prep = datasets.preprocessing(source, model, config)
        loaders = datasets.loaders(source, prep, config, rank=processes.rank, world=processes.world,
                                   device=device)
        state = runs.load_state(config.resume) if config.resume not in (None, AUTO_RESUME) else None
        run = runs.Run(config) if processes.main else None
        try:
            params = sum(p.numel() for p in model.parameters())
            where = f"{device}, {processes.world} processes" if processes.world > 1 else str(device)
            amp_dtype = autocast_dtype(config, device)
            where += f", {str(amp_dtype).removeprefix('torch.')} autocast" if amp_dtype else ", float32"
            held_out = (f"{len(source.splits['val'])} validation" if "val" in source.splits
                        else "no validation (--val-split 0)")
            say(f"{config.model} ({params / 1e6:.2f} M parameters) on {source.name}: "
                 f"{len(source.splits['train'])} training and {held_out} images at "
                 f"{prep.crop}x{prep.crop}x{len(prep.mean)}, {where}", run, quiet=config.quiet)
            model.pretrained_cfg = trained_cfg(model.pretrained_cfg, prep.data_config(), model.class_names)
            metadata = {"data": _data_spec(config)}
            with CtrlC() as stop, torch.autograd.set_detect_anomaly(config.detect_anomaly):
                history = fit(model, loaders, config, run, metadata=metadata, state=state,
                              processes=processes, device=device, stop=stop)
        finally:
            if run is not None:
                run.close()
    finally:
        if started:
            dist.destroy_process_group()
    key = best_key(config)  # the accuracy of the weights best.safetensors holds
    best = best_scored(history, key) or {key: None, "epoch": None}
    return TrainResult(run.dir if run else None, history[-1], best[key], best["epoch"], history)


def finetune(config=None, **options):
    """``inceptorch.train`` from a checkpoint, training only the heads unless told otherwise.

    The same options as ``train``; ``weights`` or ``pretrained`` is required and ``freeze`` defaults
    to ``"backbone"``; the model and its options default to those an inceptorch checkpoint names, the
    input size to its own. The backbone comes from the checkpoint (torchvision's, timm's or
    inceptorch's, or a pretrained tag's), heads for the
    data's classes start fresh, the loss adds ``aux_weight`` x each aux head's loss, and with
    ``unfreeze_after`` a second phase trains everything, the freed layers at ``lr_unfrozen``.
    The checkpoints written carry the class names and the preprocessing, for ``predict``.
    """
    options = explicit_options(config, **options)
    defaults = {}  # under a recipe's options, as the defaults of TrainConfig are
    if not options.get("resume"):
        if not options.get("weights") and not options.get("pretrained"):
            raise ConfigError("fine-tuning starts from a checkpoint: pass --pretrained [TAG] (see inceptorch "
                              "weights) or --weights CKPT (an inceptorch, torchvision or timm file)")
        defaults["freeze"] = "backbone"
        saved = read_metadata(options["weights"]) if options.get("weights") else {}
        recipe = load_recipe(options["recipe"]) if options.get("recipe") else {}
        if saved.get("model") and "model" not in options and "model" not in recipe:
            defaults["model"] = saved["model"]  # the network the checkpoint holds, with its options (width)
            built = {k: v for k, v in saved.get("build_config", {}).items()
                     if k not in ("num_classes", "in_chans", "aux_logits")}
            defaults["model_args"] = built
            chosen = {**recipe.get("model_args", {}), **options.get("model_args", {})}
            if chosen:
                options["model_args"] = {**built, **chosen}
    return train(resolve(options, defaults=defaults))
