"""Ensembles: one recipe trained several times at once, scored on the mean of the members' probabilities.

GoogLeNet's ILSVRC 2014 entry averaged seven networks trained alike, differing in initialization and
in the order they saw the images (Szegedy et al., 2015, section 7); each member here differs by its
seed. The members train side by side, each in a process of its own with its share of the CPU threads:
the small convolutions of the digit recipes scale poorly across threads, so two one-thread processes
train more images per second between them than one two-thread process.
"""

import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from . import runs
from .config import TrainConfig, resolve
from .devices import pick_device
from .errors import ConfigError, DataError
from .images import Preprocessing
from .models import load_model
from .training import EvalResult, TrainResult, evaluate, train
from .training.evaluation import SCORING_FORMAT
from .training.stopping import CtrlC
from .weights import read_metadata, write_atomically

MEMBER_WEIGHTS = "last.safetensors"  # each member as it ended, not chosen on the validation split
SUMMARY_FILE = "ensemble.json"


class MeanProbabilities(nn.Module):
    """The members' softmax, averaged, and returned as its log: argmax and cross-entropy read it as logits."""

    def __init__(self, members):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x):
        return torch.stack([member(x).float().softmax(1) for member in self.members]).mean(0).log()


def evaluate_ensemble(weights: list, **options) -> EvalResult:
    """``evaluate`` of the mean probabilities of several checkpoints; they must share their classes,
    data and preprocessing, which come from the first, as do the defaults of ``options``."""
    if len(weights) < 2:
        raise ConfigError("an ensemble needs at least two checkpoints: pass --weights A B ...")
    nets = [load_model(w) for w in weights]
    first, *others = [{"preprocessing": Preprocessing.of(net), **read_metadata(w)} for w, net in zip(weights, nets)]
    for path, meta in zip(weights[1:], others):
        for key in ("class_names", "data", "preprocessing"):
            if meta.get(key) != first.get(key):
                raise DataError(f"{path} has other {key} than {weights[0]}: an ensemble's members must be "
                                "trained alike (the same recipe and data, other seeds)")
    device = pick_device(options.get("device", "auto"))
    members = MeanProbabilities(nets).to(device, memory_format=SCORING_FORMAT).eval()
    return evaluate(weights[0], runner=members, **options)


@dataclass
class EnsembleResult:
    run_dir: Path  # holds member-1/, member-2/, ... (ordinary run folders) and ensemble.json
    members: list[TrainResult]
    val_acc: float | None  # of the mean probabilities; None when nothing was held out (--val-split 0)
    threads: int  # each member's CPU threads


def _train_member(options: dict, threads: int) -> TrainResult:
    """One member, in a process of its own."""
    torch.set_num_threads(threads)
    return train(options)


def _member_configs(config: TrainConfig, folder: Path) -> list[TrainConfig]:
    """Member k (from 1) is the recipe at seed ``seed + k - 1``, in ``folder/member-k``; only the first
    prints its epochs."""
    return [replace(config, ensemble=1, seed=config.seed + k, out_dir=str(folder), name=f"member-{k + 1}",
                    quiet=config.quiet or k > 0) for k in range(config.ensemble)]


def train_ensemble(config: TrainConfig | dict | None = None, **options) -> EnsembleResult:
    """Trains ``config.ensemble`` members at once and scores their mean probabilities on the validation
    split.

    >>> inceptorch.train_ensemble({"recipe": "mnist-best", "data_root": "../shared/data"})
    """
    config = resolve(config, **options)
    if config.ensemble < 2:
        raise ConfigError(f"an ensemble needs --ensemble 2 or more, got {config.ensemble}: "
                          "inceptorch.train trains one model")
    if config.resume:
        raise ConfigError("an ensemble is not resumed whole: resume each unfinished member with --resume "
                          "RUN/member-K, then score them with inceptorch evaluate --weights "
                          f"RUN/member-*/{MEMBER_WEIGHTS}")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("an ensemble starts its own processes: run it without torchrun")
    folder = runs.new_run_dir(config)
    threads = max(1, torch.get_num_threads() // config.ensemble)
    if not config.quiet:
        print(f"ensemble of {config.ensemble} in {folder}: a process each, of {threads} CPU thread(s), seeds "
              f"{config.seed} to {config.seed + config.ensemble - 1}", flush=True)
    spawn = multiprocessing.get_context("spawn")  # forking a process that has started threads is unsafe
    with CtrlC(), ProcessPoolExecutor(config.ensemble, mp_context=spawn) as pool:  # the members see Ctrl-C
        started = [pool.submit(_train_member, member.to_dict(), threads)
                   for member in _member_configs(config, folder)]
        members = [future.result() for future in started]
    val_acc = None
    if members[0].best_epoch is not None:
        scored = evaluate_ensemble([m.run_dir / MEMBER_WEIGHTS for m in members], device=config.device,
                                   batch_size=config.batch_size, workers=config.workers,
                                   test_flip=config.test_flip)
        val_acc = scored.accuracy
    summary = {"config": config.to_dict(), "val_acc": val_acc, "threads": threads,
               "members": [{"run_dir": str(m.run_dir), "seed": config.seed + k, "val_acc": m.metrics["val_acc"]}
                           for k, m in enumerate(members)]}
    write_atomically(folder / SUMMARY_FILE, json.dumps(summary, indent=1).encode())
    return EnsembleResult(folder, members, val_acc, threads)
