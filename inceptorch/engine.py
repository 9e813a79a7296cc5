"""Training, fine-tuning and evaluation: ``fit`` (the loop), ``train``, ``finetune``, ``evaluate``.

``train(config)`` resolves the options, reads the data, builds the model and hands them to ``fit``,
the training loop, written out in one function so that it reads from top to bottom. The same code
runs alone or as one of N processes under ``torchrun`` (DistributedDataParallel; each process takes
its share of every global batch; metrics are summed over processes; only process 0 writes).
"""

import logging
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from . import data as datasets
from . import runs, sources, transfer
from .checkpoints import every_process, restore_parts, restore_rng, rng_state, saved_parts
from .config import AUTO_RESUME, TrainConfig, explicit_options, load_recipe, resolve
from .ema import ModelEma
from .errors import ConfigError, DataError
from .images import Preprocessing
from .mixing import Mixing
from .models import create_model, default_cfg, load_model
from .models.cfgs import trained_cfg
from .training import (
    SCORING_FORMAT,
    CtrlC,
    Processes,
    TrainingInterrupted,
    autocast_dtype,
    best_key,
    classification_report,
    diverged,
    evaluate_batches,
    lr_factor,
    make_optimizer,
    optimizer_step,
    pick_device,
    progress,
    start_processes,
    sync_batch_norm,
    training_forward,
    training_loss,
    validation_scores,
)
from .weights import read_metadata

log = logging.getLogger("inceptorch")


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


@dataclass
class EvalResult:
    accuracy: float
    loss: float
    num_images: int
    classes: list[str]
    per_class: dict[str, dict]  # class -> precision, recall, f1, support
    confusion: list[list[int]]  # rows: true class, columns: predicted class


def _say(line: str, run, quiet: bool) -> None:
    """A line for train.log and, unless quiet, the console (only the process with the run folder speaks)."""
    if run is not None:
        run.note(line)
        if not quiet:
            print(line, flush=True)


def best_scored(history: list[dict], key: str = "val_acc") -> dict | None:
    """The validated epoch of ``history`` with the highest accuracy (the first of equals), whose weights
    best.safetensors holds; None before any epoch was validated. ``key``: ema_val_acc where the best is
    chosen on the averaged weights."""
    return max((row for row in history if row[key] is not None), key=lambda row: row[key], default=None)



def _keeping_hyperparameters(optimizer, schedule, restore):
    """Runs ``restore``, which loads a resumed run's optimizer and schedule state (momentum buffers,
    step count), keeping the learning rates, momentum and weight decay that ``config`` now asks for:
    the saved ones are those of the run's first part, and a resumed run may be given others
    (``--resume RUN --lr 0.05``). Returns what ``restore`` returns."""
    chosen = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
    restored = restore()
    schedule.base_lrs = [group["initial_lr"] for group in chosen]
    for group, settings, factor in zip(optimizer.param_groups, chosen, schedule.lr_lambdas):
        group.update(settings, lr=settings["initial_lr"] * factor(schedule.last_epoch))
    return restored


def fit(model, loaders: dict, config: TrainConfig, run: "runs.Run | None" = None, *,
        metadata: dict | None = None, state: dict | None = None, processes: Processes | None = None,
        device=None, stop: CtrlC | None = None) -> list[dict]:
    """Trains ``model`` on ``loaders['train']`` for ``config.epochs`` epochs, scoring ``loaders['val']``
    (where there is one) after the epochs ``config.validates_after``; with ``run``, writes
    metrics and checkpoints; with ``state`` (from ``runs.load_state``), continues where that run stopped
    (at an epoch's end, or at the step where Ctrl-C stopped it); with ``stop``, saves the state and
    raises ``TrainingInterrupted`` once it is requested. Returns the metrics of every epoch."""
    processes = processes or Processes()
    device = device or torch.device("cpu")
    train_batches, val_batches = loaders["train"], loaders.get("val")  # none with --val-split 0
    classes = getattr(model, "class_names", None) or [str(i) for i in range(model.num_classes)]
    aux_weight = config.aux_weight or 0.0
    memory_format = torch.channels_last if config.channels_last else torch.preserve_format
    model.to(device, memory_format=memory_format)

    frozen = config.freeze
    if frozen != "none":
        transfer.freeze(model, frozen)  # the first phase: the optimizer sees what it trains, and what comes later
    optimizer = make_optimizer(model, config)
    accumulate = config.grad_accum_steps
    steps_per_epoch = math.ceil(len(train_batches) / accumulate)  # optimizer steps; batches are micro-batches
    total_steps = config.epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, config, steps_per_epoch))
    amp_dtype = autocast_dtype(config, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    mixing = Mixing(config.mixup, config.cutmix, config.mix_prob, config.mix_switch_prob) \
        if config.mixup or config.cutmix else None
    history, start_epoch, partial = [], 0, None
    ema = ModelEma(model, config.model_ema) if config.model_ema else None
    parts = {"model": model, "optimizer": optimizer, "schedule": schedule, "scaler": scaler, "ema": ema}
    if state is not None:
        history, start_epoch, partial = _keeping_hyperparameters(  # partial: inside an epoch
            optimizer, schedule, lambda: restore_parts(state, parts))
        log.info("resuming %s after epoch %d of %d%s", run.dir if run else "", start_epoch, config.epochs,
                 f" and {partial['batches']} batches of epoch {start_epoch + 1}" if partial else "")
        if state.get("world", processes.world) != processes.world:
            _say(f"resuming with {processes.world} processes instead of {state['world']}: the data order and "
                 "random draws from here on differ from an unbroken run's", run, quiet=False)
    best_on = best_key(config)

    def resume_state(finished_epochs: int, partial: dict | None = None) -> dict:
        """What ``--resume`` needs, after a finished epoch or (``partial``) inside the next one."""
        return {"epoch": finished_epochs, "step": step, "world": processes.world, "history": history,
                "partial": partial, **saved_parts(parts)}

    def position(batch: int) -> dict:
        """Where inside the epoch a saved state stands: the next batch, the running sums, and every process's
        own count of right answers and random state (a collective: every process calls it)."""
        own = {"correct": correct.item(), "rng": rng_state()}
        return {"batches": batch, "loss_sum": loss_sum, "seen": seen,
                "processes": every_process(processes.world, own)}

    forward = training_forward(model, config, processes, device)
    step = state.get("step", start_epoch * steps_per_epoch) if state is not None else 0

    for epoch in range(start_epoch, config.epochs):
        if transfer.frozen_part(config, epoch) != frozen:
            frozen = transfer.frozen_part(config, epoch)
            _say(f"epoch {epoch + 1}: training the whole model from now on", run, quiet=config.quiet)
            transfer.freeze(model, frozen)
            forward = training_forward(model, config, processes, device)  # DDP: for the parameters now freed
        torch.manual_seed(datasets.epoch_seed(config.seed, epoch, processes.rank + 1))  # dropout and the like
        train_batches.set_epoch(epoch)
        smaller = config.progressive_size if epoch < config.progressive_epochs else None  # None: full size
        model.train()
        started = time.perf_counter()
        loss_sum, correct, seen = 0.0, torch.zeros((), dtype=torch.long, device=device), 0
        done = partial["batches"] if partial else 0
        batches = len(train_batches)
        bar = progress(batches, f"epoch {epoch + 1}/{config.epochs}",
                       processes.main and not config.quiet and sys.stderr.isatty())
        optimizer.zero_grad(set_to_none=True)
        for batch, (x, y) in enumerate(train_batches):
            if batch < done:
                continue  # replayed, not trained: the epoch's augmentation draws stay those of an unbroken run
            if partial is not None:  # the step where Ctrl-C or a step checkpoint saved the run
                loss_sum, seen = partial["loss_sum"], partial["seen"]
                if state.get("world", processes.world) == processes.world:  # else the sums restart
                    correct.fill_(partial["processes"][processes.rank]["correct"])
                    restore_rng(partial["processes"][processes.rank]["rng"])
                partial = None
                _say(f"resumed at step {step} (epoch {epoch + 1}, batch {batch + 1})", run, quiet=config.quiet)
            if batch % accumulate == 0 and stop is not None and stop.agreed(processes, device):
                saved_position = position(batch)
                if run is not None:
                    run.save_state(resume_state(epoch, saved_position))
                saved = f"the state was saved in {run.dir}; continue with: inceptorch train --resume {run.dir}" \
                    if run else "process 0 saved the state"
                raise TrainingInterrupted(f"interrupted (Ctrl-C) at step {step + 1} (epoch {epoch + 1}, batch "
                                          f"{batch + 1}): {saved}")
            x = x.to(device, non_blocking=True, memory_format=memory_format)
            y = y.to(device, non_blocking=True)
            if smaller:
                x = datasets.resized(x, smaller)
            target = y
            if mixing is not None:  # the draws depend on (seed, epoch, batch) alone
                x, target = mixing(x, y, model.num_classes, (config.seed, epoch, batch), processes.rank, processes.world)
            last_micro = (batch + 1) % accumulate == 0 or batch + 1 == batches
            in_step = min(accumulate, batches - batch // accumulate * accumulate)  # micro-batches of this step
            # DDP all-reduces the gradients in the backward of the step's last micro-batch only
            no_sync = forward.no_sync() if processes.world > 1 and not last_micro else nullcontext()
            with no_sync:
                with torch.autocast(device.type, dtype=amp_dtype or torch.bfloat16,
                                    enabled=amp_dtype is not None):
                    logits, aux_logits = forward(x)
                    loss = training_loss(logits, aux_logits, target, aux_weight, config.label_smoothing)
                step_loss = (processes.sum(loss.detach()) / processes.world).item()
                if not math.isfinite(step_loss):
                    raise diverged(step_loss, step, epoch, batch, schedule.get_last_lr()[0], config, run, history)
                scaler.scale(loss / in_step).backward()
            if last_micro:
                optimizer_step(optimizer, scaler, schedule, model, config.grad_clip)
                step += 1
                if ema is not None:
                    ema.update(model, step)

            loss_sum += step_loss * len(y)
            correct += (logits.argmax(1) == (target.argmax(1) if target.dim() > 1 else y)).sum()  # mixed: dominant
            seen += len(y)
            every = config.checkpoint_every_steps
            if last_micro and every and step % every == 0 and batch + 1 < batches:
                saved_position = position(batch + 1)
                if run is not None:
                    run.save_step(resume_state(epoch, saved_position), config.keep_checkpoints)
            bar.update()
            if bar.n % 10 == 0 or bar.n == bar.total:
                elapsed = time.perf_counter() - started
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct.item() / seen:.3f}",
                                img_s=f"{seen * processes.world / elapsed:.0f}", refresh=False)
        bar.close()
        train_seconds = time.perf_counter() - started
        totals = processes.sum(torch.tensor([correct.item(), seen], dtype=torch.float64, device=device))
        totals = totals.tolist()
        scored = val_batches is not None and config.validates_after(epoch + 1)
        val = validation_scores(model, ema, val_batches, scored, device, processes, amp_dtype, config.test_flip)
        confusion = val.pop("confusion")
        row = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1),
               "train_acc": totals[0] / max(totals[1], 1), **val, "lr": optimizer.param_groups[0]["lr"],
               "images_per_s": totals[1] / train_seconds, "seconds": time.perf_counter() - started}
        best = best_scored(history, best_on)
        improved = scored and (best is None or row[best_on] > best[best_on])
        history.append(row)
        if run is not None:
            scores = {"val_acc": val["val_acc"]} if scored else {}
            saved_with = {**(metadata or {}), "epoch": epoch + 1, **scores}
            run.save_checkpoint(model, resume_state(epoch + 1), saved_with, improved, ema and ema.module,
                                best_is_ema=best_on == "ema_val_acc")
            run.log_epoch(history)
        val_text = f"  val acc {row['val_acc']:.3f}" if scored else "  not validated" if val_batches else ""
        if ema is not None and scored:
            val_text += f"  ema val acc {row['ema_val_acc']:.3f}"
        at_size = f"  at {smaller}x{smaller}" if smaller else ""
        line = (f"epoch {epoch + 1}/{config.epochs}{at_size}  loss {row['train_loss']:.3f}  "
                f"train acc {row['train_acc']:.3f}{val_text}  "
                f"{row['images_per_s']:.0f} img/s  {row['seconds']:.1f} s")
        _say(line, run, quiet=config.quiet)

    if run is not None and start_epoch < config.epochs:
        run.finish(history, classification_report(confusion, classes) if val_batches else None)
    return history


# ---------------------------------------------------------------------------------------------------
# The public entry points


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
    processes, device, started = start_processes(config)
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
            _say(f"{config.model} ({params / 1e6:.2f} M parameters) on {source.name}: "
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
    if model is None or (pretrained and not isinstance(model, str)):
        raise ConfigError("evaluate needs a model: --weights CKPT, or --model NAME --pretrained [TAG] (in Python, "
                          "also an nn.Module)")
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
