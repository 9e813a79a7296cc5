"""The training loop, ``fit``: epochs of optimizer steps, validation, checkpoints, and resuming mid-epoch.

``fit`` is written out in one function so that it reads from top to bottom. The same code runs alone or
as one of N processes under ``torchrun`` (DistributedDataParallel; each process takes its share of every
global batch; metrics are summed over processes; only process 0 writes).
"""

import logging
import math
import sys
import time
from contextlib import nullcontext

import torch
from tqdm import tqdm

from .. import data as datasets
from .. import runs, transfer
from ..checkpoints import every_process, restore_parts, restore_rng, rng_state, saved_parts
from ..config import TrainConfig
from ..devices import Processes
from ..ema import ModelEma
from ..mixing import Mixing
from .evaluation import classification_report, validation_scores
from .steps import (
    autocast_dtype,
    diverged,
    lr_factor,
    make_optimizer,
    optimizer_step,
    training_forward,
    training_loss,
)
from .stopping import CtrlC, TrainingInterrupted

log = logging.getLogger("inceptorch")


def say(line: str, run, quiet: bool) -> None:
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


def best_key(config: TrainConfig) -> str:
    """The metric best.safetensors is chosen on: the averaged weights' with --model-ema, unless told raw."""
    return "ema_val_acc" if config.model_ema and config.best_of != "raw" else "val_acc"


def progress(total: int, description: str, enabled: bool):
    return tqdm(total=total, desc=description, leave=False, dynamic_ncols=True, disable=not enabled,
                file=sys.stderr)


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
            say(f"resuming with {processes.world} processes instead of {state['world']}: the data order and "
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
            say(f"epoch {epoch + 1}: training the whole model from now on", run, quiet=config.quiet)
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
                say(f"resumed at step {step} (epoch {epoch + 1}, batch {batch + 1})", run, quiet=config.quiet)
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
        say(line, run, quiet=config.quiet)

    if run is not None and start_epoch < config.epochs:
        run.finish(history, classification_report(confusion, classes) if val_batches else None)
    return history
