"""The pieces of the training loop: processes and devices, Ctrl-C, optimizer and schedule, loss, scoring.

Each is small and tested on its own; ``engine.fit`` puts them together in one readable loop.
"""

import math
import os
import signal
import sys
import threading
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .config import TrainConfig
from .cpu import fast_bf16
from .errors import ConfigError, TrainingError
from .optimizers import RMSpropTF


@dataclass
class Processes:
    """Where this process stands in a distributed run (rank 0 of 1 when alone)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            tensor = tensor.clone()
            dist.all_reduce(tensor)
        return tensor


class TrainingInterrupted(TrainingError):
    """Ctrl-C: the state was saved at a step boundary; ``--resume`` continues from that very step."""

    exit_status = 130  # the shell's status for a process stopped by SIGINT


class CtrlC:
    """Turns the first Ctrl-C (SIGINT) into a request to stop after the current step, so that the saved
    state is a whole step's; a second Ctrl-C stops at once. Only the main thread can catch signals."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, self._previous)

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def agreed(self, processes: Processes, device) -> bool:
        """Whether any process was asked to stop (all stop at the same step)."""
        if processes.world == 1:
            return self.requested
        return processes.sum(torch.tensor(float(self.requested), device=device)).item() > 0


def pick_device(option: str, local_rank: int = 0) -> torch.device:
    if option == "auto":
        option = "cuda" if torch.cuda.is_available() else "cpu"
    if option.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {option} asks for a GPU, but no CUDA GPU is visible: use "
                              "--device cpu")
        device = torch.device(option if ":" in option else f"cuda:{local_rank}")
        torch.cuda.set_device(device)
        return device
    return torch.device(option)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Weight decay on weights only: biases and batch-norm parameters are left free.

    With ``--unfreeze-after``, the parameters frozen now join at ``--lr-unfrozen``: they get no gradient,
    so no step touches them, until the second phase frees them.
    """
    def groups_of(params, lr):
        return [{"params": [p for p in params if p.dim() > 1], "weight_decay": config.weight_decay, "lr": lr},
                {"params": [p for p in params if p.dim() <= 1], "weight_decay": 0.0, "lr": lr}]

    groups = groups_of([p for p in model.parameters() if p.requires_grad], config.lr)
    if config.unfreeze_after is not None:
        groups += groups_of([p for p in model.parameters() if not p.requires_grad],
                            config.lr_unfrozen or config.lr / 10)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum,
                               nesterov=config.nesterov and config.momentum > 0)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    if config.optimizer == "rmsproptf":  # the Inception v3 paper's: epsilon inside the square root
        return RMSpropTF(groups, lr=config.lr, alpha=0.9, eps=1.0, momentum=config.momentum)
    # Inception v3's RMSProp: decay 0.9, epsilon 1.0
    return torch.optim.RMSprop(groups, lr=config.lr, alpha=0.9, eps=1.0, momentum=config.momentum)


def lr_factor(step: int, total: int, config: TrainConfig, steps_per_epoch: int) -> float:
    """The learning rate at ``step`` as a fraction of ``--lr``: a function of the step alone, so resuming
    only needs the step count."""
    warmup = min(round(config.warmup_epochs * steps_per_epoch), total // 2)
    if config.schedule == "onecycle":
        rise = warmup or max(1, round(0.25 * total))
        if step < rise:  # cosine from lr / 25 up to lr
            return 0.04 + 0.96 * (1 - math.cos(math.pi * step / rise)) / 2
        return 1e-4 + (1 - 1e-4) * (1 + math.cos(math.pi * (step - rise) / max(1, total - rise))) / 2
    if step < warmup:
        return 0.1 + 0.9 * step / warmup
    if config.schedule == "cosine":
        return (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))) / 2
    if config.schedule == "step":
        return config.step_gamma ** (step // steps_per_epoch // config.step_epochs)
    return 1.0


def training_loss(logits, aux_logits, target, aux_weight: float, label_smoothing: float = 0.0
                  ) -> torch.Tensor:
    """Cross-entropy of the main head plus ``aux_weight`` times that of each auxiliary head (GoogLeNet's
    0.3, Inception v3's 0.4), computed in float32 even under autocast. ``target``: class indices, or
    class probabilities (MixUp, CutMix), smoothed either way."""
    loss = F.cross_entropy(logits.float(), target, label_smoothing=label_smoothing)
    for aux in aux_logits:
        loss = loss + aux_weight * F.cross_entropy(aux.float(), target, label_smoothing=label_smoothing)
    return loss


def sync_batch_norm(model: nn.Module, config: TrainConfig, processes: Processes, device: torch.device
                    ) -> nn.Module:
    """``--sync-bn``: batch-norm statistics over the global batch, for runs whose per-process batches are
    small. PyTorch's SyncBatchNorm runs on CUDA only, so elsewhere the option is refused."""
    if not config.sync_bn:
        return model
    if processes.world == 1 or device.type != "cuda":
        where = "a single process" if processes.world == 1 else f"{device.type.upper()} processes"
        raise ConfigError(f"--sync-bn synchronizes batch norm across the GPU processes of a torchrun run, but "
                          f"this run has {where}: leave --sync-bn out, or run under torchrun with --device cuda")
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def optimizer_step(optimizer, scaler, schedule, model: nn.Module, grad_clip: float) -> None:
    """One step from the accumulated gradients: unscaled and clipped where asked, then cleared."""
    if grad_clip:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    schedule.step()


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


class WithAux(nn.Module):
    """Training forward through ``forward_with_aux``, as a module so that DDP and compile wrap it whole."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.forward_with_aux(x)


def training_forward(model: nn.Module, config: TrainConfig, processes: Processes, device: torch.device):
    """The training forward, compiled and distributed as asked. DDP learns which parameters need gradients
    when it is built, so a phase that frees more of them builds it again."""
    forward = WithAux(model)
    if config.compile:
        forward = torch.compile(forward)
    if processes.world > 1:
        forward = nn.parallel.DistributedDataParallel(forward, device_ids=[device] if device.type == "cuda" else None)
    return forward


def best_key(config: TrainConfig) -> str:
    """The metric best.safetensors is chosen on: the averaged weights' with --model-ema, unless told raw."""
    return "ema_val_acc" if config.model_ema and config.best_of != "raw" else "val_acc"


def autocast_dtype(config: TrainConfig, device: torch.device, cpu_flags=None):
    """The dtype of autocast, or None for float32. ``amp: auto`` is mixed precision where the hardware
    has it natively, a GPU or a CPU with AVX512-BF16 or AMX (``cpu_flags``: this CPU's by default);
    emulated bfloat16 is slower than float32. Weights and optimizer state stay float32 either way."""
    amp = config.amp
    if amp == "auto":
        amp = device.type == "cuda" or fast_bf16(cpu_flags)
    if not amp:
        return None
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def progress(total: int, description: str, enabled: bool):
    return tqdm(total=total, desc=description, leave=False, dynamic_ncols=True, disable=not enabled,
                file=sys.stderr)


def start_processes(config: TrainConfig) -> tuple[Processes, torch.device, bool]:
    """Joins the process group when started by torchrun (WORLD_SIZE > 1); returns whether it started one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device(config.device, int(os.environ.get("LOCAL_RANK", "0")))
    started = False
    if world > 1 and not dist.is_initialized():
        timeout = timedelta(seconds=config.dist_timeout)
        store, rank, world = next(dist.rendezvous("env://", timeout=timeout))
        # torchrun's agent keeps one store across restarts of its workers (--max-restarts), holding the
        # addresses the killed processes published: gloo would connect to those and fail, so each attempt
        # of the group keeps its keys under a prefix of its own
        attempt = dist.PrefixStore(f"inceptorch-attempt-{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=attempt, rank=rank,
                                world_size=world, timeout=timeout)
        started = True
    if world > 1:
        return Processes(dist.get_rank(), dist.get_world_size()), device, started
    return Processes(), device, started


def diverged(loss: float, step: int, epoch: int, batch: int, lr: float, config, run, history) -> TrainingError:
    """The error of a non-finite loss: where it happened, what was kept, and the fix."""
    where = f", {run.dir / 'last.safetensors'}," if run else ""
    kept = (f"the last good checkpoint{where} (epoch {len(history)}) is kept" if history
            else "no epoch had finished, so no checkpoint was written")
    return TrainingError(f"the loss became {loss} at step {step + 1} (epoch {epoch + 1}, batch {batch + 1}, "
                         f"learning rate {lr:.3g}): training stopped and {kept}; lower the learning rate, for "
                         f"instance --lr {config.lr / 10:g}")


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
