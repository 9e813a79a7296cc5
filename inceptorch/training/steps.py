"""The pieces of one optimizer step: optimizer, learning-rate schedule, forward, loss, precision, step.

Each is small and tested on its own; ``loop.fit`` puts them together.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import TrainConfig
from ..cpu import fast_bf16
from ..devices import Processes
from ..errors import ConfigError, TrainingError
from ..optimizers import RMSpropTF


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


# Not torch.optim.lr_scheduler's LinearLR/CosineAnnealingLR/StepLR under SequentialLR: they update the rate
# recursively from the last one (drifting from the closed form) and save a state unlike LambdaLR's, which every
# saved run holds, and OneCycleLR ends its phases a step apart from ours; a closed form of the step through
# LambdaLR keeps resume bit for bit and the checkpoints of earlier runs loadable.
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


def optimizer_step(optimizer, scaler, schedule, model: nn.Module, grad_clip: float) -> None:
    """One step from the accumulated gradients: unscaled and clipped where asked, then cleared."""
    if grad_clip:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    schedule.step()


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


def diverged(loss: float, step: int, epoch: int, batch: int, lr: float, config, run, history) -> TrainingError:
    """The error of a non-finite loss: where it happened, what was kept, and the fix."""
    where = f", {run.dir / 'last.safetensors'}," if run else ""
    kept = (f"the last good checkpoint{where} (epoch {len(history)}) is kept" if history
            else "no epoch had finished, so no checkpoint was written")
    return TrainingError(f"the loss became {loss} at step {step + 1} (epoch {epoch + 1}, batch {batch + 1}, "
                         f"learning rate {lr:.3g}): training stopped and {kept}; lower the learning rate, for "
                         f"instance --lr {config.lr / 10:g}")
